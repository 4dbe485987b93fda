//! The `sort N` workload's arithmetic: the input sequence (xorshift64, Marsaglia's
//! 13/7/17 triple, seed 88172645463325252, each value taken after a step), the merge of
//! the VPs' sorted chunks, and the checksum `S = sum sorted[i] * (i + 1)` (wrapping).
//! The merge computes the checksum on the fly, so the sorted array is never built.

/// The xorshift64 seed.
pub const SEED: u64 = 88_172_645_463_325_252;

/// Most chunks [`merged_checksum`] merges (one per VP).
pub const MAX_CHUNKS: usize = vima::layout::MAX_VPS;

/// The input generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XorShift64 {
    state: u64,
}

impl Default for XorShift64 {
    fn default() -> Self {
        Self::new(SEED)
    }
}

impl XorShift64 {
    /// A generator at `seed`.
    pub const fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// Steps and returns the new state.
    pub fn next_value(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        x
    }

    /// Fills `values` with the next `values.len()` outputs.
    pub fn fill(&mut self, values: &mut [u64]) {
        for value in values {
            *value = self.next_value();
        }
    }
}

/// Why chunks could not be merged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    /// More chunks than [`MAX_CHUNKS`].
    #[error("cannot merge {0} chunks (at most {MAX_CHUNKS})")]
    TooManyChunks(usize),
}

/// The checksum of the merge of sorted `chunks`: each chunk must be sorted ascending.
pub fn merged_checksum(chunks: &[&[u64]]) -> Result<u64, MergeError> {
    let mut heads: [&[u64]; MAX_CHUNKS] = [&[]; MAX_CHUNKS];
    heads
        .get_mut(..chunks.len())
        .ok_or(MergeError::TooManyChunks(chunks.len()))?
        .copy_from_slice(chunks);
    let heads = &mut heads[..chunks.len()];
    let mut sum = 0u64;
    let mut position = 1u64;
    loop {
        let mut best: Option<(usize, u64)> = None;
        for (index, head) in heads.iter().enumerate() {
            if let Some(&value) = head.first() {
                if best.is_none_or(|(_, min)| value < min) {
                    best = Some((index, value));
                }
            }
        }
        let Some((index, value)) = best else {
            return Ok(sum);
        };
        heads[index] = &heads[index][1..];
        sum = sum.wrapping_add(value.wrapping_mul(position));
        position += 1;
    }
}

/// The checksum of an already sorted slice.
pub fn sorted_checksum(sorted: &[u64]) -> u64 {
    sorted.iter().zip(1u64..).fold(0, |sum, (&value, weight)| {
        sum.wrapping_add(value.wrapping_mul(weight))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split::share;

    fn values(n: usize) -> Vec<u64> {
        let mut v = vec![0; n];
        XorShift64::default().fill(&mut v);
        v
    }

    #[test]
    fn known_values_and_checksums() {
        // Computed independently (Python, arbitrary-precision integers mod 2^64).
        assert_eq!(
            XorShift64::default().next_value(),
            8_748_534_153_485_358_512
        );
        let mut v = values(1000);
        v.sort_unstable();
        assert_eq!(v[0], 3_834_512_299_511_879);
        assert_eq!(sorted_checksum(&v), 8_247_610_901_320_931_311);
        let mut v = values(7);
        v.sort_unstable();
        assert_eq!(sorted_checksum(&v), 17_240_322_036_855_358_415);
    }

    #[test]
    fn merging_sorted_chunks_matches_a_full_sort() {
        for (n, parts) in [(1000, 1), (1000, 2), (1000, 3), (7, 8), (1, 2), (333, 64)] {
            let v = values(n);
            let mut chunks: Vec<Vec<u64>> = (0..parts)
                .map(|p| {
                    let mut c = v[share(n, parts, p)].to_vec();
                    c.sort_unstable();
                    c
                })
                .collect();
            chunks.rotate_left(1);
            let refs: Vec<&[u64]> = chunks.iter().map(Vec::as_slice).collect();
            let mut all = v.clone();
            all.sort_unstable();
            assert_eq!(
                merged_checksum(&refs),
                Ok(sorted_checksum(&all)),
                "{n} {parts}"
            );
        }
    }

    #[test]
    fn merge_keeps_duplicates_and_rejects_too_many_chunks() {
        let a: &[u64] = &[1, 3, 3];
        let b: &[u64] = &[2, 3];
        assert_eq!(
            merged_checksum(&[a, b]),
            Ok(1 + 2 * 2 + 3 * 3 + 3 * 4 + 3 * 5)
        );
        let many = [a; MAX_CHUNKS + 1];
        assert_eq!(
            merged_checksum(&many),
            Err(MergeError::TooManyChunks(MAX_CHUNKS + 1))
        );
    }
}
