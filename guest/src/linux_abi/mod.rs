//! The Linux x86-64 ABI as the guest kernel's Linux personality needs it, as pure logic:
//! system call numbers and names, error numbers, the initial process stack, and the table
//! of a program's memory mappings. The kernel side (`src/kernel/linux/`) adds the parts
//! that touch the machine; docs/linux-abi.md says what each call does.

pub mod errno;
pub mod layout;
pub mod path;
pub mod signal;
pub mod stack;
pub mod sysno;
pub mod vma;
