//! The fixed shape of logical memory, as the guest sees it at boot.
//!
//! Logical addresses equal guest virtual addresses at boot (the paper, 4.4: VPs start with
//! paging on and a direct logical = virtual map). The VMM builds and owns the page tables;
//! the guest cannot see or change them.
//!
//! ```text
//! 0x0000_0000  null page: not mapped, a guest null dereference faults; when a Linux program
//!              runs, the read/execute-only system call trampoline
//!              ([`syscall_trampoline_page`]), so null reads then read it
//! 0x0000_1000  per-node region (PER_NODE_BYTES): a different physical copy on every node,
//!              never coherent. Starts with one VpShared block per VP, then guest data
//!              (the per-node tick, as the paper's jiffies page), then the VMM's
//!              remote-fault counts (REMOTE_FAULTS_BASE)
//! 0x0010_0000  boot stack of VP 0, growing down from BOOT_STACK_TOP
//! 0x0020_0000  guest image (the ELF is linked here), then free memory up to the end of
//!              logical memory, split into one home range per node (the configuration
//!              lists them)
//! ```

/// Size of a logical page; coherence works page by page.
pub const PAGE_SIZE: u64 = 4096;
/// Start of the per-node region.
pub const PER_NODE_BASE: u64 = 0x1000;
/// Size of the per-node region.
pub const PER_NODE_BYTES: u64 = 4 * PAGE_SIZE;
/// Size of one [`crate::interrupt::VpShared`] block in the per-node region.
pub const VP_SHARED_BYTES: u64 = 64;
/// First byte of the per-node region that the guest may use freely (after the VpShared
/// blocks of [`MAX_VPS`] VPs).
pub const PER_NODE_GUEST_BASE: u64 = PER_NODE_BASE + MAX_VPS as u64 * VP_SHARED_BYTES;
/// Start of the remote-fault counts in the per-node region, its last page: one `u32` per
/// (VP, home node), [`remote_faults_addr`]. The VMM of each node adds one for every page it
/// fetches for a VP from memory homed on another node or held there (wrapping); the guest
/// scheduler reads the differences (paper 4.9.5: memory in the load vector). The guest's
/// own data in the per-node region ends before it.
pub const REMOTE_FAULTS_BASE: u64 = PER_NODE_BASE + PER_NODE_BYTES - PAGE_SIZE;
/// Lowest address of VP 0's boot stack.
pub const BOOT_STACK_BASE: u64 = 0x10_0000;
/// Initial `rsp` of VP 0.
pub const BOOT_STACK_TOP: u64 = 0x20_0000;
/// Where the guest image is linked and loaded.
pub const GUEST_IMAGE_BASE: u64 = 0x20_0000;
/// Smallest logical memory the VMM accepts: image, stacks and some heap.
pub const MIN_LOGICAL_BYTES: u64 = 8 << 20;
/// Largest logical memory the VMM accepts (the page tables cover this much).
pub const MAX_LOGICAL_BYTES: u64 = 64 << 30;
/// Most VPs in one virtual server (one VpShared block each in the per-node region).
pub const MAX_VPS: usize = 64;
/// Most nodes in one virtual computer.
pub const MAX_NODES: usize = 16;

// The regions must not overlap; checked at compile time.
const _: () = assert!(PER_NODE_GUEST_BASE < REMOTE_FAULTS_BASE);
const _: () = assert!((MAX_VPS * MAX_NODES * 4) as u64 <= PAGE_SIZE);
const _: () = assert!(PER_NODE_BASE + PER_NODE_BYTES <= BOOT_STACK_BASE);
const _: () = assert!(BOOT_STACK_TOP <= GUEST_IMAGE_BASE);
const _: () = assert!(GUEST_IMAGE_BASE < MIN_LOGICAL_BYTES);

/// Byte offset in a VP's [`crate::interrupt::VpShared`] block (`guest[2]`) of the address
/// the system call trampoline page jumps to.
pub const VP_SHARED_SYSCALL_TARGET_OFFSET: u64 = 40;

/// The first byte of the trampoline page's second jump; system call numbers below it
/// reach a jump (the first one at 0x200 covers numbers below 0x200 with a short sled).
pub const SYSCALL_TRAMPOLINE_LIMIT: u64 = 0xff0;

/// Offset in the trampoline page of the hardware exception stubs: vector `v`'s stub is
/// at `EXCEPTION_STUBS_OFFSET + v * EXCEPTION_STUB_BYTES`, `out EXCEPTION_PORT, al`
/// followed by `ud2`. The VMM points the CPU's IDT gates 0..31 at them, so an exception
/// of a Linux program exits to the VMM, which delivers it through the virtual IDT.
pub const EXCEPTION_STUBS_OFFSET: u64 = 0x208;
/// Bytes of one exception stub.
pub const EXCEPTION_STUB_BYTES: u64 = 8;
/// Exception vectors with stubs.
pub const EXCEPTION_VECTORS: u64 = 32;
/// The first byte of the long `nop` sled, after the exception stubs.
const LONG_SLED_START: u64 = EXCEPTION_STUBS_OFFSET + EXCEPTION_VECTORS * EXCEPTION_STUB_BYTES;
const _: () = assert!(LONG_SLED_START < SYSCALL_TRAMPOLINE_LIMIT);

/// The system call trampoline page of a Linux program (docs/linux-abi.md): mapped read
/// and execute only at virtual page 0 (so a null write still faults), from memory private
/// to each node. The guest kernel rewrites a program's `syscall` (0f 05) into
/// `call *%rax` (ff d0): the call lands at the address equal to the system call number,
/// slides down `nop`s to a `jmp qword ptr gs:[40]`, the kernel's entry. Numbers below
/// 0x200 take the short sled to the jump at 0x200; 0x308..0xff0 the long one to the jump
/// at 0xff0; 0x208..0x308 holds the exception stubs, so a call there, past 0xff0 or into
/// the middle of a jump faults (no Linux system call has such a number).
#[allow(clippy::cast_possible_truncation)] // constants: 4096, 40, 0xff0, 0xCB fit
pub const fn syscall_trampoline_page() -> [u8; PAGE_SIZE as usize] {
    const NOP: u8 = 0x90;
    const INT3: u8 = 0xcc;
    const STUB: [u8; EXCEPTION_STUB_BYTES as usize] = [
        0xe6,
        crate::call::EXCEPTION_PORT as u8,
        0x0f,
        0x0b,
        INT3,
        INT3,
        INT3,
        INT3,
    ];
    // jmp qword ptr gs:[VP_SHARED_SYSCALL_TARGET_OFFSET]
    const JUMP: [u8; 8] = [
        0x65,
        0xff,
        0x24,
        0x25,
        VP_SHARED_SYSCALL_TARGET_OFFSET as u8,
        0,
        0,
        0,
    ];
    let mut page = [NOP; PAGE_SIZE as usize];
    let mut i = 0;
    while i < 8 {
        page[0x200 + i] = JUMP[i];
        page[SYSCALL_TRAMPOLINE_LIMIT as usize + i] = JUMP[i];
        page[SYSCALL_TRAMPOLINE_LIMIT as usize + 8 + i] = INT3;
        i += 1;
    }
    let mut at = EXCEPTION_STUBS_OFFSET as usize;
    while at < LONG_SLED_START as usize {
        page[at] = STUB[(at - EXCEPTION_STUBS_OFFSET as usize) % STUB.len()];
        at += 1;
    }
    page
}

/// Address of VP `vp`'s [`crate::interrupt::VpShared`] block.
pub const fn vp_shared_addr(vp: u32) -> u64 {
    PER_NODE_BASE + vp as u64 * VP_SHARED_BYTES
}

/// Address of the remote-fault count of VP `vp` for memory homed on node `home` (both
/// below [`MAX_VPS`] and [`MAX_NODES`]).
pub const fn remote_faults_addr(vp: u32, home: u32) -> u64 {
    REMOTE_FAULTS_BASE + (vp as u64 * MAX_NODES as u64 + home as u64) * 4
}

/// True when `addr` lies in the per-node region.
pub const fn is_per_node(addr: u64) -> bool {
    addr >= PER_NODE_BASE && addr < PER_NODE_BASE + PER_NODE_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trampoline_jumps_sit_where_the_sleds_end() {
        let page = syscall_trampoline_page();
        assert!(page[..0x200].iter().all(|&b| b == 0x90));
        assert_eq!(page[0x200..0x208], [0x65, 0xff, 0x24, 0x25, 40, 0, 0, 0]);
        for stub in page[0x208..0x308].chunks(8) {
            // out 0xCB, al; ud2; int3 x 4
            assert_eq!(stub, [0xe6, 0xcb, 0x0f, 0x0b, 0xcc, 0xcc, 0xcc, 0xcc]);
        }
        assert!(page[0x308..0xff0].iter().all(|&b| b == 0x90));
        assert_eq!(page[0xff0..0xff8], page[0x200..0x208]);
        assert!(page[0xff8..].iter().all(|&b| b == 0xcc));
    }

    #[test]
    fn regions_do_not_overlap() {
        assert_eq!(vp_shared_addr(63) + VP_SHARED_BYTES, PER_NODE_GUEST_BASE);
        assert!(is_per_node(0x1000) && is_per_node(0x4fff) && !is_per_node(0x5000));
        assert!(!is_per_node(0xfff));
    }
}
