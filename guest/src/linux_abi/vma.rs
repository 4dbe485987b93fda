//! The program's anonymous mappings: which page ranges `mmap` handed out, so that
//! `munmap`, `mremap` and `MAP_FIXED` only ever give back or reuse memory the program owns
//! (never the kernel's own pages, which share the address space). A fixed-size sorted
//! table: no heap in the kernel, and programs keep few large mappings (malloc maps
//! big blocks one by one and arenas in 64 MiB pieces).

use vima::layout::PAGE_SIZE;

/// Most mappings at once.
pub const MAX_VMAS: usize = 512;

/// One mapping, `[start, end)`, page aligned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Vma {
    /// First byte.
    pub start: u64,
    /// First byte after.
    pub end: u64,
    /// False while the mapping was never writable, so its pages are still zero (glibc
    /// reserves 64 MiB arenas PROT_NONE and gives most of them back at once: that memory
    /// need not be cleared again).
    pub written: bool,
}

/// Why a table operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VmaError {
    /// The table has no room (ENOMEM to the program).
    #[error("too many mappings")]
    Full,
    /// A range that is empty, unaligned or wraps.
    #[error("bad range")]
    BadRange,
    /// Inserting over an existing mapping.
    #[error("overlaps a mapping")]
    Overlap,
}

/// The mappings, sorted by address, never overlapping.
#[derive(Clone, Debug)]
pub struct VmaTable {
    vmas: [Vma; MAX_VMAS],
    count: usize,
}

impl Default for VmaTable {
    fn default() -> Self {
        Self::new()
    }
}

fn check(start: u64, end: u64) -> Result<(), VmaError> {
    if start >= end || start % PAGE_SIZE != 0 || end % PAGE_SIZE != 0 {
        return Err(VmaError::BadRange);
    }
    Ok(())
}

impl VmaTable {
    /// No mappings.
    pub const fn new() -> Self {
        Self {
            vmas: [Vma {
                start: 0,
                end: 0,
                written: false,
            }; MAX_VMAS],
            count: 0,
        }
    }

    /// The mappings in address order.
    pub fn iter(&self) -> impl Iterator<Item = &Vma> {
        self.vmas[..self.count].iter()
    }

    /// True when some mapping shares a byte with `[start, end)`.
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        self.iter().any(|v| v.start < end && start < v.end)
    }

    /// True when every byte of `[start, end)` lies in a mapping.
    pub fn covers(&self, start: u64, end: u64) -> bool {
        let mut at = start;
        for v in self.iter() {
            if v.end <= at {
                continue;
            }
            if v.start > at {
                return false;
            }
            at = v.end;
            if at >= end {
                return true;
            }
        }
        at >= end
    }

    /// Records a new mapping (`written`: it may hold data); it must not overlap one.
    pub fn insert(&mut self, start: u64, end: u64, written: bool) -> Result<(), VmaError> {
        check(start, end)?;
        if self.overlaps(start, end) {
            return Err(VmaError::Overlap);
        }
        if self.count == MAX_VMAS {
            return Err(VmaError::Full);
        }
        let at = self
            .iter()
            .position(|v| v.start > start)
            .unwrap_or(self.count);
        self.vmas.copy_within(at..self.count, at + 1);
        self.vmas[at] = Vma {
            start,
            end,
            written,
        };
        self.count += 1;
        Ok(())
    }

    /// Marks every mapping that shares a byte with `[start, end)` as written (all of it:
    /// a mapping is not split for this).
    pub fn mark_written(&mut self, start: u64, end: u64) {
        for v in self.vmas[..self.count].iter_mut() {
            if v.start < end && start < v.end {
                v.written = true;
            }
        }
    }

    /// Removes `[start, end)` from every mapping it touches (splitting one that it cuts in
    /// the middle) and calls `freed(start, end, written)` for each piece removed. Nothing
    /// changes if the table would overflow.
    pub fn remove(
        &mut self,
        start: u64,
        end: u64,
        mut freed: impl FnMut(u64, u64, bool),
    ) -> Result<(), VmaError> {
        check(start, end)?;
        let splits = self
            .iter()
            .filter(|v| v.start < start && end < v.end)
            .count();
        if self.count + splits > MAX_VMAS {
            return Err(VmaError::Full);
        }
        let mut index = 0;
        while index < self.count {
            let v = self.vmas[index];
            if v.end <= start || end <= v.start {
                index += 1;
                continue;
            }
            freed(v.start.max(start), v.end.min(end), v.written);
            let left = (v.start < start).then_some(Vma {
                start: v.start,
                end: start,
                written: v.written,
            });
            let right = (end < v.end).then_some(Vma {
                start: end,
                end: v.end,
                written: v.written,
            });
            match (left, right) {
                (Some(l), Some(r)) => {
                    self.vmas.copy_within(index + 1..self.count, index + 2);
                    self.vmas[index] = l;
                    self.vmas[index + 1] = r;
                    self.count += 1;
                    index += 2;
                }
                (Some(piece), None) | (None, Some(piece)) => {
                    self.vmas[index] = piece;
                    index += 1;
                }
                (None, None) => {
                    self.vmas.copy_within(index + 1..self.count, index);
                    self.count -= 1;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = PAGE_SIZE;

    fn ranges(t: &VmaTable) -> Vec<(u64, u64)> {
        t.iter().map(|v| (v.start / P, v.end / P)).collect()
    }

    #[test]
    fn insert_keeps_order_and_refuses_overlap() {
        let mut t = VmaTable::new();
        t.insert(10 * P, 20 * P, true).unwrap();
        t.insert(0, 5 * P, true).unwrap();
        t.insert(30 * P, 31 * P, true).unwrap();
        assert_eq!(ranges(&t), [(0, 5), (10, 20), (30, 31)]);
        assert_eq!(t.insert(19 * P, 21 * P, true), Err(VmaError::Overlap));
        assert_eq!(t.insert(P, P, true), Err(VmaError::BadRange));
        assert_eq!(t.insert(1, P, true), Err(VmaError::BadRange));
        assert!(t.covers(10 * P, 20 * P) && t.covers(11 * P, 12 * P));
        assert!(!t.covers(4 * P, 11 * P));
        t.insert(5 * P, 10 * P, true).unwrap();
        assert!(t.covers(0, 20 * P), "adjacent mappings cover together");
    }

    #[test]
    fn remove_splits_and_reports_exactly_what_it_freed() {
        let mut t = VmaTable::new();
        t.insert(0, 10 * P, true).unwrap();
        t.insert(20 * P, 30 * P, true).unwrap();
        let mut freed = Vec::new();
        t.remove(2 * P, 4 * P, |s, e, _| freed.push((s / P, e / P)))
            .unwrap();
        assert_eq!(ranges(&t), [(0, 2), (4, 10), (20, 30)]);
        t.remove(8 * P, 25 * P, |s, e, _| freed.push((s / P, e / P)))
            .unwrap();
        assert_eq!(ranges(&t), [(0, 2), (4, 8), (25, 30)]);
        assert_eq!(freed, [(2, 4), (8, 10), (20, 25)]);
        // Unmapping what is not mapped frees nothing, as on Linux.
        freed.clear();
        t.remove(100 * P, 200 * P, |s, e, _| freed.push((s, e)))
            .unwrap();
        assert!(freed.is_empty());
    }

    #[test]
    fn a_full_table_refuses_a_split_without_changing() {
        let mut t = VmaTable::new();
        for i in 0..MAX_VMAS as u64 {
            t.insert(i * 4 * P, (i * 4 + 3) * P, true).unwrap();
        }
        assert_eq!(t.insert(1 << 40, (1 << 40) + P, true), Err(VmaError::Full));
        let before = ranges(&t);
        assert_eq!(t.remove(P, 2 * P, |_, _, _| panic!()), Err(VmaError::Full));
        assert_eq!(ranges(&t), before);
        t.remove(0, 3 * P, |_, _, _| {}).unwrap();
        assert_eq!(t.iter().count(), MAX_VMAS - 1);
    }

    #[test]
    fn pieces_keep_whether_they_were_written() {
        let mut t = VmaTable::new();
        t.insert(0, 32 * P, false).unwrap();
        t.insert(40 * P, 41 * P, true).unwrap();
        let mut freed = Vec::new();
        t.remove(0, 8 * P, |s, e, w| freed.push((s / P, e / P, w)))
            .unwrap();
        t.mark_written(16 * P, 17 * P);
        t.remove(24 * P, 41 * P, |s, e, w| freed.push((s / P, e / P, w)))
            .unwrap();
        // The reservation's head was never writable; its tail was, once part of it was.
        assert_eq!(freed, [(0, 8, false), (24, 32, true), (40, 41, true)]);
    }
}
