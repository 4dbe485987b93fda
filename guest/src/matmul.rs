//! The `matmul N` workload's arithmetic: the input matrices, one VP's block of rows of
//! `C = A * B`, and the checksum `S = sum C[i][j] * (i + 2j + 1)` (all u64, wrapping).
//! Rows are independent, so each VP computes and checksums its own rows and VP 0 adds the
//! partial sums: `S` is the same for any split.

/// `A[i][j] = (i*31 + j*17) mod 101`.
pub const fn a_element(i: u64, j: u64) -> u64 {
    (i.wrapping_mul(31).wrapping_add(j.wrapping_mul(17))) % 101
}

/// `B[i][j] = (i*7 + j*13) mod 97`.
pub const fn b_element(i: u64, j: u64) -> u64 {
    (i.wrapping_mul(7).wrapping_add(j.wrapping_mul(13))) % 97
}

/// Fills `rows` (row-major, `n` columns) with rows `first_row..` of A.
pub fn fill_a_rows(rows: &mut [u64], first_row: usize, n: usize) {
    fill(rows, first_row, n, a_element);
}

/// Fills `b` (row-major, `n` x `n`) with B.
pub fn fill_b(b: &mut [u64], n: usize) {
    fill(b, 0, n, b_element);
}

fn fill(rows: &mut [u64], first_row: usize, n: usize, element: fn(u64, u64) -> u64) {
    if n == 0 {
        return;
    }
    for (r, row) in rows.chunks_exact_mut(n).enumerate() {
        let i = (first_row + r) as u64;
        for (j, value) in row.iter_mut().enumerate() {
            *value = element(i, j as u64);
        }
    }
}

/// Computes `c_rows = a_rows * b`: `a_rows` and `c_rows` hold the same rows (row-major,
/// `n` columns), `b` is `n` x `n`. The `i-k-j` loop order streams rows of B.
pub fn multiply_rows(a_rows: &[u64], b: &[u64], c_rows: &mut [u64], n: usize) {
    if n == 0 {
        return;
    }
    for (a_row, c_row) in a_rows.chunks_exact(n).zip(c_rows.chunks_exact_mut(n)) {
        c_row.fill(0);
        for (&a_ik, b_row) in a_row.iter().zip(b.chunks_exact(n)) {
            for (c, &b_kj) in c_row.iter_mut().zip(b_row) {
                *c = c.wrapping_add(a_ik.wrapping_mul(b_kj));
            }
        }
    }
}

/// The checksum terms of rows `first_row..` held in `c_rows`.
pub fn rows_checksum(c_rows: &[u64], first_row: usize, n: usize) -> u64 {
    if n == 0 {
        return 0;
    }
    let mut sum = 0u64;
    for (r, row) in c_rows.chunks_exact(n).enumerate() {
        let i = (first_row + r) as u64;
        for (j, &c) in row.iter().enumerate() {
            let weight = i.wrapping_add(2u64.wrapping_mul(j as u64)).wrapping_add(1);
            sum = sum.wrapping_add(c.wrapping_mul(weight));
        }
    }
    sum
}

/// The checksum of the whole product, computed element by element without matrices
/// (O(n^3), for tests and small checks).
pub fn reference_checksum(n: usize) -> u64 {
    let n = n as u64;
    let mut sum = 0u64;
    for i in 0..n {
        for j in 0..n {
            let c = (0..n).fold(0u64, |acc, k| {
                acc.wrapping_add(a_element(i, k).wrapping_mul(b_element(k, j)))
            });
            sum = sum.wrapping_add(c.wrapping_mul(i + 2 * j + 1));
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split::share;

    fn blocked_checksum(n: usize, parts: usize) -> u64 {
        let mut b = vec![0; n * n];
        fill_b(&mut b, n);
        let mut total = 0u64;
        for part in 0..parts {
            let rows = share(n, parts, part);
            let mut a = vec![0; rows.len() * n];
            let mut c = vec![u64::MAX; rows.len() * n];
            fill_a_rows(&mut a, rows.start, n);
            multiply_rows(&a, &b, &mut c, n);
            total = total.wrapping_add(rows_checksum(&c, rows.start, n));
        }
        total
    }

    #[test]
    fn known_checksums() {
        // Computed independently (Python, arbitrary-precision integers mod 2^64).
        assert_eq!(reference_checksum(64), 60_153_385_783);
        assert_eq!(reference_checksum(5), 2_244_395);
        assert_eq!(reference_checksum(17), 291_201_880);
        assert_eq!(reference_checksum(1), 0);
    }

    #[test]
    fn any_split_gives_the_reference() {
        for (n, parts) in [(64, 1), (64, 2), (64, 3), (17, 4), (5, 8), (1, 2)] {
            assert_eq!(
                blocked_checksum(n, parts),
                reference_checksum(n),
                "{n} {parts}"
            );
        }
    }

    #[test]
    fn elements() {
        assert_eq!(a_element(0, 0), 0);
        assert_eq!(a_element(3, 5), (93 + 85) % 101);
        assert_eq!(b_element(10, 10), 200 % 97);
    }
}
