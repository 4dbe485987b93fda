//! Shrinking a failing trace to a shortest one that still fails.
//!
//! A trace is a list of random choices that a driver interprets against the state it is
//! in (as the engine's own simulation test does), so any sub-list is a valid trace too.
//! [`shrink`] removes chunks, halving their size, as long as the trace still fails
//! (delta debugging without the complement step): the result fails and removing any one
//! choice from it makes it pass, or the attempt budget ran out.

/// Returns a sub-list of `items` for which `fails` is still true, as short as the search
/// finds within `max_attempts` calls of `fails`. `fails(items)` should be true on entry;
/// if it is not, `items` comes back unchanged.
pub fn shrink<T: Clone>(
    items: &[T],
    max_attempts: usize,
    mut fails: impl FnMut(&[T]) -> bool,
) -> Vec<T> {
    let mut best = items.to_vec();
    let mut attempts = 0;
    let mut chunk = best.len().div_ceil(2).max(1);
    loop {
        let mut removed_any = false;
        let mut start = 0;
        while start < best.len() && attempts < max_attempts {
            let end = (start + chunk).min(best.len());
            let mut candidate = best[..start].to_vec();
            candidate.extend_from_slice(&best[end..]);
            attempts += 1;
            if fails(&candidate) {
                best = candidate;
                removed_any = true;
            } else {
                start += chunk;
            }
        }
        if attempts >= max_attempts || (chunk == 1 && !removed_any) {
            return best;
        }
        if !removed_any {
            chunk = chunk.div_ceil(2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_two_items_that_matter() {
        let items: Vec<u32> = (0..100).collect();
        // Fails when 17 comes before 83: the shortest failing list is exactly [17, 83].
        let fails = |t: &[u32]| {
            let a = t.iter().position(|x| *x == 17);
            let b = t.iter().position(|x| *x == 83);
            matches!((a, b), (Some(a), Some(b)) if a < b)
        };
        assert_eq!(shrink(&items, 10_000, fails), vec![17, 83]);
    }

    #[test]
    fn a_passing_list_is_kept() {
        assert_eq!(shrink(&[1, 2, 3], 100, |_| false), vec![1, 2, 3]);
    }

    #[test]
    fn the_budget_bounds_the_work() {
        let mut calls = 0;
        let _ = shrink(&[0u8; 64], 5, |_| {
            calls += 1;
            true
        });
        assert!(calls <= 5);
    }
}
