//! Memory that two parties share: BAR0 mapped by the host and by the NIC, or guest memory
//! mapped by the NIC for DMA.
//!
//! Why atomics everywhere: the other side runs concurrently (another process, a NIC), so a
//! plain `memcpy` or field access would be a data race. Registers are aligned `u32`/`u64`
//! atomics; buffers and descriptors are copied one aligned `u64` word at a time, and
//! publication is ordered by a Release store of a ring index that the reader loads with
//! Acquire, the way a driver and a NIC use `wmb`/doorbells.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Errors of mapping shared memory.
#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    /// `mmap` failed.
    #[error("Failed to map {len:#x} bytes at file offset {offset:#x}")]
    Map {
        /// Bytes asked for.
        len: u64,
        /// Offset in the file.
        offset: u64,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The length or offset is not usable (zero, unaligned, too large).
    #[error("Cannot map {len:#x} bytes at file offset {offset:#x}")]
    BadGeometry {
        /// Bytes asked for.
        len: u64,
        /// Offset in the file.
        offset: u64,
    },
}

/// A region of shared memory accessed by aligned atomic words.
///
/// Offsets that are out of range or unaligned return `None` from the checked accessors;
/// nothing here panics on a bad offset, because offsets may come from the other side.
pub trait SharedMemory: Send + Sync {
    /// Length in bytes.
    fn len(&self) -> u64;

    /// Base address (page aligned, valid for `len` bytes while `self` lives).
    fn base(&self) -> NonNull<u8>;

    /// True when the region is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The aligned `u64` at `offset`.
    fn u64_at(&self, offset: u64) -> Option<&AtomicU64> {
        let end = offset.checked_add(8)?;
        if !offset.is_multiple_of(8) || end > self.len() {
            return None;
        }
        let offset = usize::try_from(offset).ok()?;
        // SAFETY: `offset + 8 <= len` and the base is page aligned, so the pointer is an
        // 8-aligned word inside the live region; the region is only accessed atomically by
        // this process (and by the other side, outside Rust's model, as any shared memory).
        Some(unsafe { AtomicU64::from_ptr(self.base().as_ptr().add(offset).cast::<u64>()) })
    }

    /// The aligned `u32` at `offset`.
    fn u32_at(&self, offset: u64) -> Option<&AtomicU32> {
        let end = offset.checked_add(4)?;
        if !offset.is_multiple_of(4) || end > self.len() {
            return None;
        }
        let offset = usize::try_from(offset).ok()?;
        // SAFETY: as in `u64_at`, for a 4-aligned word.
        Some(unsafe { AtomicU32::from_ptr(self.base().as_ptr().add(offset).cast::<u32>()) })
    }

    /// Loads a `u32` register (Acquire); 0 when the offset is bad.
    fn load_u32(&self, offset: u64) -> u32 {
        self.u32_at(offset).map_or(0, |w| w.load(Ordering::Acquire))
    }

    /// Stores a `u32` register (Release); ignored when the offset is bad.
    fn store_u32(&self, offset: u64, value: u32) {
        if let Some(w) = self.u32_at(offset) {
            w.store(value, Ordering::Release);
        }
    }

    /// Loads a `u64` register (Acquire); 0 when the offset is bad.
    fn load_u64(&self, offset: u64) -> u64 {
        self.u64_at(offset).map_or(0, |w| w.load(Ordering::Acquire))
    }

    /// Stores a `u64` register (Release); ignored when the offset is bad.
    fn store_u64(&self, offset: u64, value: u64) {
        if let Some(w) = self.u64_at(offset) {
            w.store(value, Ordering::Release);
        }
    }

    /// Copies `out.len()` bytes from `offset` (8-aligned) out, word by word. False when the
    /// range is outside the region.
    fn read_bytes(&self, offset: u64, out: &mut [u8]) -> bool {
        let Some(end) = u64::try_from(out.len())
            .ok()
            .and_then(|len| offset.checked_add(len.next_multiple_of(8)))
        else {
            return false;
        };
        if !offset.is_multiple_of(8) || end > self.len() {
            return false;
        }
        for (i, chunk) in out.chunks_mut(8).enumerate() {
            let at = offset + 8 * i as u64;
            let word = self.u64_at(at).map_or(0, |w| w.load(Ordering::Relaxed));
            chunk.copy_from_slice(&word.to_le_bytes()[..chunk.len()]);
        }
        true
    }

    /// Copies `data` to `offset` (8-aligned), word by word; a partial last word is padded
    /// with zeros. False when the range is outside the region.
    fn write_bytes(&self, offset: u64, data: &[u8]) -> bool {
        let Some(end) = u64::try_from(data.len())
            .ok()
            .and_then(|len| offset.checked_add(len.next_multiple_of(8)))
        else {
            return false;
        };
        if !offset.is_multiple_of(8) || end > self.len() {
            return false;
        }
        for (i, chunk) in data.chunks(8).enumerate() {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            if let Some(w) = self.u64_at(offset + 8 * i as u64) {
                w.store(u64::from_le_bytes(word), Ordering::Relaxed);
            }
        }
        true
    }
}

/// A shared mapping of (part of) a file: BAR0's memfd or the guest memfd.
#[derive(Debug)]
pub struct MappedRegion {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory, accessed only through atomics.
unsafe impl Send for MappedRegion {}
// SAFETY: as above.
unsafe impl Sync for MappedRegion {}

impl MappedRegion {
    /// Maps `len` bytes of `fd` from `offset`, shared and read-write.
    pub fn map(fd: BorrowedFd<'_>, offset: u64, len: u64) -> Result<Self, RegionError> {
        let bad = || RegionError::BadGeometry { len, offset };
        if len == 0 || !offset.is_multiple_of(4096) {
            return Err(bad());
        }
        let size = usize::try_from(len).map_err(|_| bad())?;
        let file_offset = libc::off_t::try_from(offset).map_err(|_| bad())?;
        // SAFETY: a new shared mapping of a file we hold open; the kernel picks the
        // address, so no existing memory is affected. The result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                file_offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(RegionError::Map {
                len,
                offset,
                source: std::io::Error::last_os_error(),
            });
        }
        let base = NonNull::new(ptr.cast::<u8>()).ok_or_else(bad)?;
        Ok(Self { base, len: size })
    }
}

impl SharedMemory for MappedRegion {
    fn len(&self) -> u64 {
        self.len as u64
    }

    fn base(&self) -> NonNull<u8> {
        self.base
    }
}

impl Drop for MappedRegion {
    fn drop(&mut self) {
        // SAFETY: the mapping was created by `map` with this length; references into it
        // borrow `self`, so none outlives it.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

/// Creates a sealed-size memfd of `len` bytes (zeroed): the backing of BAR0 in the NIC
/// model, which hands it to the client for a direct mapping.
pub fn create_memfd(name: &std::ffi::CStr, len: u64) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: memfd_create takes a nul-terminated name and flags; the result is checked.
    let raw = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a new fd that nothing else owns.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
    let size = libc::off_t::try_from(len)
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: ftruncate on our own memfd.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), size) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// Heap memory standing in for a shared mapping (tests of the ring logic, and other
/// crates' tests with the `test-utils` feature).
#[cfg(any(test, feature = "test-utils"))]
#[derive(Debug)]
pub struct HeapRegion {
    words: Box<[AtomicU64]>,
}

#[cfg(any(test, feature = "test-utils"))]
impl HeapRegion {
    /// `len` zeroed bytes (rounded up to whole words).
    pub fn new(len: u64) -> Self {
        let words = usize::try_from(len.div_ceil(8)).expect("test regions fit memory");
        Self {
            words: (0..words).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

#[cfg(any(test, feature = "test-utils"))]
impl SharedMemory for HeapRegion {
    fn len(&self) -> u64 {
        self.words.len() as u64 * 8
    }

    fn base(&self) -> NonNull<u8> {
        NonNull::new(self.words.as_ptr().cast_mut().cast::<u8>())
            .expect("boxed slices are non-null")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_offsets_are_refused_not_panics() {
        let r = HeapRegion::new(64);
        assert!(r.u64_at(3).is_none());
        assert!(r.u64_at(64).is_none());
        assert!(r.u64_at(u64::MAX - 3).is_none());
        assert!(r.u32_at(62).is_none());
        assert_eq!(r.load_u32(1), 0);
        assert!(!r.write_bytes(60, &[1; 8]));
        assert!(!r.read_bytes(u64::MAX - 7, &mut [0; 8]));
        assert!(!r.write_bytes(8, &[1; 57]));
    }

    #[test]
    fn bytes_round_trip_with_partial_words() {
        let r = HeapRegion::new(64);
        let data: Vec<u8> = (1..=13).collect();
        assert!(r.write_bytes(16, &data));
        let mut out = [0u8; 13];
        assert!(r.read_bytes(16, &mut out));
        assert_eq!(&out[..], &data[..]);
        // The padding of the last word is zero.
        assert_eq!(
            r.load_u64(24),
            u64::from_le_bytes([9, 10, 11, 12, 13, 0, 0, 0])
        );
        r.store_u32(4, 0xdead_beef);
        assert_eq!(r.load_u64(0), 0xdead_beef_0000_0000);
    }

    #[test]
    fn a_memfd_mapped_twice_shares_its_words() {
        let fd = create_memfd(c"vfio-region-test", 8192).unwrap();
        let a = MappedRegion::map(std::os::fd::AsFd::as_fd(&fd), 0, 8192).unwrap();
        let b = MappedRegion::map(std::os::fd::AsFd::as_fd(&fd), 4096, 4096).unwrap();
        a.store_u64(4096 + 8, 42);
        assert_eq!(b.load_u64(8), 42);
        assert!(MappedRegion::map(std::os::fd::AsFd::as_fd(&fd), 5, 4096).is_err());
    }
}
