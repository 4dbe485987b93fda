//! Kernel ABI of userfaultfd: ioctl numbers, flags and `repr(C)` structs, transcribed from
//! `include/uapi/linux/userfaultfd.h` (Linux 6.18). Hand-written instead of bindgen so a fresh
//! machine without libclang builds the VMM. This module is the only place in `memory` that
//! relaxes lints (names follow the kernel header so they can be grepped for).
#![allow(non_camel_case_types, dead_code, missing_docs)]

/// `_IOC` direction bits (asm-generic/ioctl.h).
const IOC_NONE: u32 = 0;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

const fn ioc(dir: u32, ty: u32, nr: u32, size: usize) -> u32 {
    // Sizes of the structs below are at most 40 bytes, far inside the 14-bit size field.
    #[allow(clippy::cast_possible_truncation)]
    let size = size as u32;
    (dir << 30) | (size << 16) | (ty << 8) | nr
}

/// Type byte of every userfaultfd ioctl.
pub const UFFDIO: u32 = 0xAA;

/// ioctl on `/dev/userfaultfd`: returns a new userfaultfd; the argument is the flags.
pub const USERFAULTFD_IOC_NEW: u32 = ioc(IOC_NONE, UFFDIO, 0x00, 0);

pub const UFFD_API: u64 = 0xAA;

/// Flag of `userfaultfd(2)` / `USERFAULTFD_IOC_NEW`: only faults from user mode are reported.
/// cvmm must never set it: KVM touches guest memory from kernel mode.
pub const UFFD_USER_MODE_ONLY: i32 = 1;

pub const UFFD_FEATURE_PAGEFAULT_FLAG_WP: u64 = 1 << 0;
pub const UFFD_FEATURE_EVENT_FORK: u64 = 1 << 1;
pub const UFFD_FEATURE_EVENT_REMAP: u64 = 1 << 2;
pub const UFFD_FEATURE_EVENT_REMOVE: u64 = 1 << 3;
pub const UFFD_FEATURE_MISSING_HUGETLBFS: u64 = 1 << 4;
pub const UFFD_FEATURE_MISSING_SHMEM: u64 = 1 << 5;
pub const UFFD_FEATURE_EVENT_UNMAP: u64 = 1 << 6;
pub const UFFD_FEATURE_SIGBUS: u64 = 1 << 7;
pub const UFFD_FEATURE_THREAD_ID: u64 = 1 << 8;
pub const UFFD_FEATURE_MINOR_HUGETLBFS: u64 = 1 << 9;
pub const UFFD_FEATURE_MINOR_SHMEM: u64 = 1 << 10;
pub const UFFD_FEATURE_EXACT_ADDRESS: u64 = 1 << 11;
pub const UFFD_FEATURE_WP_HUGETLBFS_SHMEM: u64 = 1 << 12;
pub const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
pub const UFFD_FEATURE_POISON: u64 = 1 << 14;
pub const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
pub const UFFD_FEATURE_MOVE: u64 = 1 << 16;

pub const _UFFDIO_REGISTER: u32 = 0x00;
pub const _UFFDIO_UNREGISTER: u32 = 0x01;
pub const _UFFDIO_WAKE: u32 = 0x02;
pub const _UFFDIO_COPY: u32 = 0x03;
pub const _UFFDIO_ZEROPAGE: u32 = 0x04;
pub const _UFFDIO_MOVE: u32 = 0x05;
pub const _UFFDIO_WRITEPROTECT: u32 = 0x06;
pub const _UFFDIO_CONTINUE: u32 = 0x07;
pub const _UFFDIO_POISON: u32 = 0x08;
pub const _UFFDIO_API: u32 = 0x3F;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct uffdio_api {
    pub api: u64,
    pub features: u64,
    pub ioctls: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct uffdio_range {
    pub start: u64,
    pub len: u64,
}

pub const UFFDIO_REGISTER_MODE_MISSING: u64 = 1 << 0;
pub const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
pub const UFFDIO_REGISTER_MODE_MINOR: u64 = 1 << 2;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct uffdio_register {
    pub range: uffdio_range,
    pub mode: u64,
    pub ioctls: u64,
}

pub const UFFDIO_COPY_MODE_DONTWAKE: u64 = 1 << 0;
pub const UFFDIO_COPY_MODE_WP: u64 = 1 << 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct uffdio_copy {
    pub dst: u64,
    pub src: u64,
    pub len: u64,
    pub mode: u64,
    pub copy: i64,
}

pub const UFFDIO_ZEROPAGE_MODE_DONTWAKE: u64 = 1 << 0;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct uffdio_zeropage {
    pub range: uffdio_range,
    pub mode: u64,
    pub zeropage: i64,
}

pub const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1 << 0;
pub const UFFDIO_WRITEPROTECT_MODE_DONTWAKE: u64 = 1 << 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct uffdio_writeprotect {
    pub range: uffdio_range,
    pub mode: u64,
}

pub const UFFDIO_CONTINUE_MODE_DONTWAKE: u64 = 1 << 0;
/// Since Linux 6.4: map the page write-protected.
pub const UFFDIO_CONTINUE_MODE_WP: u64 = 1 << 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct uffdio_continue {
    pub range: uffdio_range,
    pub mode: u64,
    pub mapped: i64,
}

pub const UFFDIO_API: u32 = ioc(
    IOC_READ | IOC_WRITE,
    UFFDIO,
    _UFFDIO_API,
    size_of::<uffdio_api>(),
);
pub const UFFDIO_REGISTER: u32 = ioc(
    IOC_READ | IOC_WRITE,
    UFFDIO,
    _UFFDIO_REGISTER,
    size_of::<uffdio_register>(),
);
pub const UFFDIO_UNREGISTER: u32 = ioc(
    IOC_READ,
    UFFDIO,
    _UFFDIO_UNREGISTER,
    size_of::<uffdio_range>(),
);
pub const UFFDIO_WAKE: u32 = ioc(IOC_READ, UFFDIO, _UFFDIO_WAKE, size_of::<uffdio_range>());
pub const UFFDIO_COPY: u32 = ioc(
    IOC_READ | IOC_WRITE,
    UFFDIO,
    _UFFDIO_COPY,
    size_of::<uffdio_copy>(),
);
pub const UFFDIO_ZEROPAGE: u32 = ioc(
    IOC_READ | IOC_WRITE,
    UFFDIO,
    _UFFDIO_ZEROPAGE,
    size_of::<uffdio_zeropage>(),
);
pub const UFFDIO_WRITEPROTECT: u32 = ioc(
    IOC_READ | IOC_WRITE,
    UFFDIO,
    _UFFDIO_WRITEPROTECT,
    size_of::<uffdio_writeprotect>(),
);
pub const UFFDIO_CONTINUE: u32 = ioc(
    IOC_READ | IOC_WRITE,
    UFFDIO,
    _UFFDIO_CONTINUE,
    size_of::<uffdio_continue>(),
);

pub const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
pub const UFFD_EVENT_FORK: u8 = 0x13;
pub const UFFD_EVENT_REMAP: u8 = 0x14;
pub const UFFD_EVENT_REMOVE: u8 = 0x15;
pub const UFFD_EVENT_UNMAP: u8 = 0x16;

pub const UFFD_PAGEFAULT_FLAG_WRITE: u64 = 1 << 0;
pub const UFFD_PAGEFAULT_FLAG_WP: u64 = 1 << 1;
pub const UFFD_PAGEFAULT_FLAG_MINOR: u64 = 1 << 2;

/// `struct uffd_msg` (packed in the header; every field is naturally aligned, so `repr(C)`
/// has the same layout). The argument union is kept as raw words: only the page-fault
/// member is read, as `flags = arg[0]`, `address = arg[1]`, `ptid = low half of arg[2]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct uffd_msg {
    pub event: u8,
    pub reserved1: u8,
    pub reserved2: u16,
    pub reserved3: u32,
    pub arg: [u64; 3],
}

const _: () = assert!(size_of::<uffd_msg>() == 32);
const _: () = assert!(size_of::<uffdio_copy>() == 40);

#[cfg(test)]
mod tests {
    use super::*;

    /// The numbers `gcc -E` gives for the kernel header's `_IOWR`/`_IOR` macros.
    #[test]
    fn ioctl_numbers_match_the_kernel_header() {
        assert_eq!(USERFAULTFD_IOC_NEW, 0xaa00);
        assert_eq!(UFFDIO_API, 0xc018_aa3f);
        assert_eq!(UFFDIO_REGISTER, 0xc020_aa00);
        assert_eq!(UFFDIO_UNREGISTER, 0x8010_aa01);
        assert_eq!(UFFDIO_WAKE, 0x8010_aa02);
        assert_eq!(UFFDIO_COPY, 0xc028_aa03);
        assert_eq!(UFFDIO_ZEROPAGE, 0xc020_aa04);
        assert_eq!(UFFDIO_WRITEPROTECT, 0xc018_aa06);
        assert_eq!(UFFDIO_CONTINUE, 0xc020_aa07);
    }
}
