//! Splitting `total` items into `parts` contiguous shares whose sizes differ by at most one,
//! so every VP gets its rows or values without any coordination.

use core::ops::Range;

/// The share of part `index` (0-based) of `total` items split into `parts` parts. The
/// first `total % parts` parts get one item more. Empty when `parts == 0` or
/// `index >= parts`.
pub fn share(total: usize, parts: usize, index: usize) -> Range<usize> {
    if parts == 0 || index >= parts {
        return 0..0;
    }
    let base = total / parts;
    let extra = total % parts;
    let start = index * base + index.min(extra);
    let len = base + usize::from(index < extra);
    start..start + len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_everything_once() {
        for total in 0..40 {
            for parts in 1..9 {
                let mut next = 0;
                for index in 0..parts {
                    let range = share(total, parts, index);
                    assert_eq!(range.start, next);
                    assert!(range.len() == total / parts || range.len() == total / parts + 1);
                    next = range.end;
                }
                assert_eq!(next, total);
            }
        }
    }

    #[test]
    fn examples() {
        assert_eq!(share(10, 3, 0), 0..4);
        assert_eq!(share(10, 3, 1), 4..7);
        assert_eq!(share(10, 3, 2), 7..10);
        assert_eq!(share(2, 4, 3), 2..2);
        assert_eq!(share(5, 0, 0), 0..0);
        assert_eq!(share(5, 2, 2), 0..0);
    }
}
