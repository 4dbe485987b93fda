//! Our own thin userfaultfd bindings.
//!
//! Why not the `userfaultfd` crate: its -sys crate runs bindgen (libclang is missing on a
//! fresh machine), it turns `UFFD_USER_MODE_ONLY` on by default (KVM then gets EFAULT and
//! no event arrives), and it lacks `UFFDIO_CONTINUE_MODE_WP` and the newer feature bits.
//! What we need is a dozen ioctls, transcribed in [`sys`].
//!
//! The fault path talks to the kernel only through the [`MappingOps`] trait, implemented
//! here by [`Userfaultfd`]; unit tests of the paging logic replace it with a recording fake.

pub(crate) mod sys;

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Features cvmm asks for, and why:
/// - `PAGEFAULT_FLAG_WP`: write-protect faults are reported (SpinWait, Shared pages).
/// - `MISSING_SHMEM`, `MINOR_SHMEM`: logical memory is a memfd (shmem); MINOR faults are
///   how a page dropped with MADV_DONTNEED comes back.
/// - `WP_HUGETLBFS_SHMEM`: write-protect on shmem (measured: without it registering WP on a
///   memfd mapping fails). On 6.18 this also makes the kernel keep write protection of an
///   unpopulated shmem PTE as a marker, so protecting a dropped page works.
/// - `THREAD_ID`: the faulting thread's id, to steer a fetch completion to the VP that asked.
pub const REQUIRED_FEATURES: u64 = sys::UFFD_FEATURE_PAGEFAULT_FLAG_WP
    | sys::UFFD_FEATURE_MISSING_SHMEM
    | sys::UFFD_FEATURE_MINOR_SHMEM
    | sys::UFFD_FEATURE_WP_HUGETLBFS_SHMEM
    | sys::UFFD_FEATURE_THREAD_ID;

/// The range ioctls the guest mapping must offer after registration.
const REQUIRED_RANGE_IOCTLS: u64 = 1 << sys::_UFFDIO_WAKE
    | 1 << sys::_UFFDIO_COPY
    | 1 << sys::_UFFDIO_ZEROPAGE
    | 1 << sys::_UFFDIO_WRITEPROTECT
    | 1 << sys::_UFFDIO_CONTINUE;

/// Errors of userfaultfd operations.
#[derive(Debug, thiserror::Error)]
pub enum UffdError {
    /// Neither `/dev/userfaultfd` nor the syscall is permitted.
    #[error("userfaultfd is not available: need /dev/userfaultfd or CAP_SYS_PTRACE")]
    Unavailable,
    /// Creating the file descriptor failed for another reason.
    #[error("Failed to create a userfaultfd")]
    Open {
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `UFFDIO_API` failed.
    #[error("Failed to negotiate the userfaultfd API")]
    Api {
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The kernel lacks features cvmm needs.
    #[error("The kernel lacks userfaultfd features {missing:#x} (has {available:#x})")]
    MissingFeatures {
        /// Required bits the kernel did not offer.
        missing: u64,
        /// What the kernel offers.
        available: u64,
    },
    /// `UFFDIO_REGISTER` failed.
    #[error("Failed to register {len:#x} bytes at {start:#x} with userfaultfd")]
    Register {
        /// Host virtual address.
        start: u64,
        /// Length in bytes.
        len: u64,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The registered range lacks ioctls cvmm needs.
    #[error("The registered range lacks userfaultfd ioctls {missing:#x}")]
    MissingIoctls {
        /// Bits (`1 << _UFFDIO_*`) that are missing.
        missing: u64,
    },
    /// Reading events failed.
    #[error("Failed to read userfaultfd events")]
    Read {
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A range ioctl (`op`) failed.
    #[error("userfaultfd {op} at {addr:#x} failed")]
    Range {
        /// Which ioctl.
        op: &'static str,
        /// Host virtual address.
        addr: u64,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// Registration modes of a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegisterMode(u64);

impl RegisterMode {
    /// Faults on holes (no page in the page cache).
    pub const MISSING: Self = Self(sys::UFFDIO_REGISTER_MODE_MISSING);
    /// Writes to write-protected PTEs.
    pub const WP: Self = Self(sys::UFFDIO_REGISTER_MODE_WP);
    /// Faults on pages in the page cache that have no PTE.
    pub const MINOR: Self = Self(sys::UFFDIO_REGISTER_MODE_MINOR);

    /// Both modes.
    #[must_use]
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

/// Why a thread faulted, from the event flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum FaultKind {
    /// No page in the page cache.
    Missing,
    /// Page in the page cache, no PTE in the faulting mapping.
    Minor,
    /// Write to a write-protected PTE.
    WriteProtect,
}

/// One page-fault event as the kernel reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultEvent {
    /// Faulting host virtual address (page aligned without EXACT_ADDRESS).
    pub address: u64,
    /// Why.
    pub kind: FaultKind,
    /// The access was a write.
    pub write: bool,
    /// Kernel thread id of the faulting thread.
    pub thread_id: u32,
}

impl FaultEvent {
    /// Decodes a message; `None` for events other than page faults (cvmm enables none,
    /// so they would be a kernel surprise to log, not a fault to answer).
    pub fn from_msg(msg: &sys::uffd_msg) -> Option<Self> {
        if msg.event != sys::UFFD_EVENT_PAGEFAULT {
            return None;
        }
        let flags = msg.arg[0];
        let kind = if flags & sys::UFFD_PAGEFAULT_FLAG_WP != 0 {
            FaultKind::WriteProtect
        } else if flags & sys::UFFD_PAGEFAULT_FLAG_MINOR != 0 {
            FaultKind::Minor
        } else {
            FaultKind::Missing
        };
        Some(Self {
            address: msg.arg[1],
            kind,
            write: flags & sys::UFFD_PAGEFAULT_FLAG_WRITE != 0,
            // ptid is the first 32 bits of the third word (little endian).
            thread_id: (msg.arg[2] & 0xffff_ffff) as u32,
        })
    }
}

/// What a mapping ioctl did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapOutcome {
    /// The page was mapped and the waiters woken.
    Mapped,
    /// Someone mapped it first (EEXIST): nothing was woken, the caller must `wake`.
    AlreadyMapped,
}

/// The kernel operations the paging logic performs on the guest mapping, all by host
/// virtual address and length (page multiples). Implemented by [`Userfaultfd`]; tests
/// substitute a fake.
pub trait MappingOps {
    /// Resolves a MISSING fault with a zero page; with `write_protect` the page is mapped
    /// write-protected (UFFDIO_COPY of zeros with MODE_WP, as ZEROPAGE has no WP mode).
    fn zero_fill(&self, addr: u64, len: u64, write_protect: bool) -> Result<MapOutcome, UffdError>;
    /// Resolves a MINOR fault: maps the page-cache page (UFFDIO_CONTINUE).
    fn continue_map(
        &self,
        addr: u64,
        len: u64,
        write_protect: bool,
    ) -> Result<MapOutcome, UffdError>;
    /// Sets or clears write protection; clearing wakes threads blocked on the range.
    fn write_protect(&self, addr: u64, len: u64, on: bool) -> Result<(), UffdError>;
    /// Wakes threads blocked on the range; they retry their access.
    fn wake(&self, addr: u64, len: u64) -> Result<(), UffdError>;
    /// Unmaps the range in the guest mapping (MADV_DONTNEED); the page cache keeps the
    /// contents, so the next access is a MINOR fault.
    fn discard(&self, addr: u64, len: u64) -> io::Result<()>;
}

/// A userfaultfd, non-blocking and close-on-exec, with user-mode-only off.
#[derive(Debug)]
pub struct Userfaultfd {
    fd: OwnedFd,
    features: u64,
}

/// 4 KiB of zeros, the source of UFFDIO_COPY when a zero page must be mapped write-protected.
static ZERO_PAGE: [u8; 4096] = [0; 4096];

fn errno() -> io::Error {
    io::Error::last_os_error()
}

fn is_permission(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EPERM | libc::EACCES | libc::ENOENT | libc::ENOSYS)
    )
}

impl Userfaultfd {
    /// Opens a userfaultfd through `/dev/userfaultfd` (works without CAP_SYS_PTRACE when
    /// the device is accessible) or else the `userfaultfd(2)` syscall, and negotiates
    /// [`REQUIRED_FEATURES`].
    pub fn open() -> Result<Self, UffdError> {
        let fd = Self::create_fd()?;
        let mut api = sys::uffdio_api {
            api: sys::UFFD_API,
            features: REQUIRED_FEATURES,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_API reads and writes one `uffdio_api`, which `api` is, and `fd` is
        // a userfaultfd we own.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), sys::UFFDIO_API as _, &mut api) };
        if rc < 0 {
            let err = errno();
            if err.raw_os_error() == Some(libc::EINVAL) {
                // The kernel refuses unknown feature bits; learn which ones it has.
                let available = Self::probe_features().unwrap_or(0);
                return Err(UffdError::MissingFeatures {
                    missing: REQUIRED_FEATURES & !available,
                    available,
                });
            }
            return Err(UffdError::Api { source: err });
        }
        let missing = REQUIRED_FEATURES & !api.features;
        if missing != 0 {
            return Err(UffdError::MissingFeatures {
                missing,
                available: api.features,
            });
        }
        Ok(Self {
            fd,
            features: api.features,
        })
    }

    fn create_fd() -> Result<OwnedFd, UffdError> {
        // Never UFFD_USER_MODE_ONLY: faults taken by KVM on behalf of a vCPU are kernel-mode.
        let flags = libc::O_CLOEXEC | libc::O_NONBLOCK;
        debug_assert_eq!(flags & sys::UFFD_USER_MODE_ONLY, 0);
        let dev_err = match Self::open_dev(flags) {
            Ok(fd) => return Ok(fd),
            Err(err) => err,
        };
        // SAFETY: the userfaultfd syscall takes one int of flags and returns a new fd or -1.
        let rc = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
        if rc >= 0 {
            let raw = RawFd::try_from(rc).map_err(|_| UffdError::Open {
                source: io::Error::from_raw_os_error(libc::EBADF),
            })?;
            // SAFETY: the syscall returned a new fd that nothing else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(raw) });
        }
        let sys_err = errno();
        if is_permission(&sys_err) && is_permission(&dev_err) {
            Err(UffdError::Unavailable)
        } else if is_permission(&sys_err) {
            Err(UffdError::Open { source: dev_err })
        } else {
            Err(UffdError::Open { source: sys_err })
        }
    }

    fn open_dev(flags: i32) -> io::Result<OwnedFd> {
        let dev = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/userfaultfd")?;
        // SAFETY: USERFAULTFD_IOC_NEW takes the flags as its integer argument and returns
        // a new fd or -1; `dev` is an open /dev/userfaultfd.
        let rc = unsafe { libc::ioctl(dev.as_raw_fd(), sys::USERFAULTFD_IOC_NEW as _, flags) };
        if rc < 0 {
            return Err(errno());
        }
        // SAFETY: the ioctl returned a new fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(rc) })
    }

    /// The features this kernel offers (a throwaway fd, as UFFDIO_API works once per fd).
    pub fn probe_features() -> Result<u64, UffdError> {
        let fd = Self::create_fd()?;
        let mut api = sys::uffdio_api {
            api: sys::UFFD_API,
            features: 0,
            ioctls: 0,
        };
        // SAFETY: as in `open`.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), sys::UFFDIO_API as _, &mut api) };
        if rc < 0 {
            return Err(UffdError::Api { source: errno() });
        }
        Ok(api.features)
    }

    /// The features the kernel reported as available (a superset of the required ones).
    pub fn features(&self) -> u64 {
        self.features
    }

    /// Registers `[start, start + len)` of this process's address space. Checks that the
    /// range ioctls cvmm uses are offered.
    pub fn register(&self, start: u64, len: u64, mode: RegisterMode) -> Result<(), UffdError> {
        let mut reg = sys::uffdio_register {
            range: sys::uffdio_range { start, len },
            mode: mode.0,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_REGISTER reads and writes one `uffdio_register`. Registering a
        // range has no effect on memory safety; the kernel checks the range is mapped.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), sys::UFFDIO_REGISTER as _, &mut reg) };
        if rc < 0 {
            return Err(UffdError::Register {
                start,
                len,
                source: errno(),
            });
        }
        let missing = REQUIRED_RANGE_IOCTLS & !reg.ioctls;
        if missing != 0 {
            return Err(UffdError::MissingIoctls { missing });
        }
        Ok(())
    }

    /// Reads the pending messages into `buf` without blocking; returns how many (0 when
    /// none is pending, for example because a duplicate wake-up raced).
    pub fn read_messages(&self, buf: &mut [sys::uffd_msg]) -> Result<usize, UffdError> {
        let bytes = std::mem::size_of_val(buf);
        // SAFETY: `buf` is valid for `bytes` bytes of writes and `uffd_msg` is plain data
        // (any bit pattern is valid); the kernel writes whole messages.
        let rc = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), bytes) };
        if rc < 0 {
            let err = errno();
            return match err.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(UffdError::Read { source: err }),
            };
        }
        let read = usize::try_from(rc).unwrap_or(0);
        Ok(read / std::mem::size_of::<sys::uffd_msg>())
    }

    /// Runs a range ioctl whose struct reports EEXIST as "already mapped".
    fn map_ioctl<T>(
        &self,
        op: &'static str,
        request: u32,
        arg: &mut T,
        addr: u64,
    ) -> Result<MapOutcome, UffdError> {
        // SAFETY: callers pass the struct type that matches `request` (see the call
        // sites); the kernel only touches the guest mapping's page tables and page cache,
        // never memory this process treats as Rust objects (except reading ZERO_PAGE).
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), request as _, std::ptr::from_mut(arg)) };
        if rc == 0 {
            return Ok(MapOutcome::Mapped);
        }
        let err = errno();
        if err.raw_os_error() == Some(libc::EEXIST) {
            Ok(MapOutcome::AlreadyMapped)
        } else {
            Err(UffdError::Range {
                op,
                addr,
                source: err,
            })
        }
    }
}

impl MappingOps for Userfaultfd {
    fn zero_fill(&self, addr: u64, len: u64, write_protect: bool) -> Result<MapOutcome, UffdError> {
        if !write_protect {
            let mut zero = sys::uffdio_zeropage {
                range: sys::uffdio_range { start: addr, len },
                mode: 0,
                zeropage: 0,
            };
            return self.map_ioctl("ZEROPAGE", sys::UFFDIO_ZEROPAGE, &mut zero, addr);
        }
        let mut outcome = MapOutcome::Mapped;
        let mut offset = 0;
        while offset < len {
            let chunk = (len - offset).min(ZERO_PAGE.len() as u64);
            let mut copy = sys::uffdio_copy {
                dst: addr + offset,
                src: ZERO_PAGE.as_ptr() as u64,
                len: chunk,
                mode: sys::UFFDIO_COPY_MODE_WP,
                copy: 0,
            };
            if self.map_ioctl("COPY", sys::UFFDIO_COPY, &mut copy, addr + offset)?
                == MapOutcome::AlreadyMapped
            {
                outcome = MapOutcome::AlreadyMapped;
            }
            offset += chunk;
        }
        Ok(outcome)
    }

    fn continue_map(
        &self,
        addr: u64,
        len: u64,
        write_protect: bool,
    ) -> Result<MapOutcome, UffdError> {
        let mut cont = sys::uffdio_continue {
            range: sys::uffdio_range { start: addr, len },
            mode: if write_protect {
                sys::UFFDIO_CONTINUE_MODE_WP
            } else {
                0
            },
            mapped: 0,
        };
        self.map_ioctl("CONTINUE", sys::UFFDIO_CONTINUE, &mut cont, addr)
    }

    fn write_protect(&self, addr: u64, len: u64, on: bool) -> Result<(), UffdError> {
        let mut wp = sys::uffdio_writeprotect {
            range: sys::uffdio_range { start: addr, len },
            mode: if on {
                sys::UFFDIO_WRITEPROTECT_MODE_WP
            } else {
                0
            },
        };
        let op = if on {
            "WRITEPROTECT"
        } else {
            "WRITEPROTECT(off)"
        };
        match self.map_ioctl(op, sys::UFFDIO_WRITEPROTECT, &mut wp, addr)? {
            MapOutcome::Mapped | MapOutcome::AlreadyMapped => Ok(()),
        }
    }

    fn wake(&self, addr: u64, len: u64) -> Result<(), UffdError> {
        let mut range = sys::uffdio_range { start: addr, len };
        self.map_ioctl("WAKE", sys::UFFDIO_WAKE, &mut range, addr)
            .map(|_| ())
    }

    fn discard(&self, addr: u64, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: MADV_DONTNEED on the guest mapping (the only range registered with this
        // userfaultfd) drops PTEs only; the memfd keeps the contents and no Rust object
        // lives in that mapping, so nothing observes the change except through faults.
        let rc = unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_DONTNEED) };
        if rc < 0 {
            return Err(errno());
        }
        Ok(())
    }
}

impl AsFd for Userfaultfd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(event: u8, flags: u64, address: u64, ptid: u32) -> sys::uffd_msg {
        sys::uffd_msg {
            event,
            arg: [flags, address, u64::from(ptid) | 0xdead_0000_0000_0000],
            ..Default::default()
        }
    }

    #[test]
    fn event_flags_decode_to_kinds() {
        let m = msg(sys::UFFD_EVENT_PAGEFAULT, 0, 0x7000, 42);
        assert_eq!(
            FaultEvent::from_msg(&m),
            Some(FaultEvent {
                address: 0x7000,
                kind: FaultKind::Missing,
                write: false,
                thread_id: 42
            })
        );
        let m = msg(sys::UFFD_EVENT_PAGEFAULT, 0b100, 0x8000, 1);
        let e = FaultEvent::from_msg(&m).expect("page fault");
        assert_eq!((e.kind, e.write), (FaultKind::Minor, false));
        let m = msg(sys::UFFD_EVENT_PAGEFAULT, 0b011, 0x8000, 1);
        let e = FaultEvent::from_msg(&m).expect("page fault");
        assert_eq!((e.kind, e.write), (FaultKind::WriteProtect, true));
        let m = msg(sys::UFFD_EVENT_PAGEFAULT, 0b101, 0x8000, 1);
        let e = FaultEvent::from_msg(&m).expect("page fault");
        assert_eq!((e.kind, e.write), (FaultKind::Minor, true));
        assert_eq!(
            FaultEvent::from_msg(&msg(sys::UFFD_EVENT_REMOVE, 0, 0, 0)),
            None
        );
    }

    #[test]
    fn kernel_offers_the_required_features() {
        let uffd = Userfaultfd::open().expect("userfaultfd (tests need root or /dev/userfaultfd)");
        assert_eq!(uffd.features() & REQUIRED_FEATURES, REQUIRED_FEATURES);
    }
}
