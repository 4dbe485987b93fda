//! Rewriting a trapped `syscall` into `call *%rax`, so that the next call from the same
//! site takes the trampoline instead of a ~25 us trap (lazypoline's idea; see
//! [`super::entry`] and docs/linux-abi.md for the measurements).
//!
//! Only sites that certainly are `syscall` instructions are changed: the trap itself
//! says where the instruction was (`rcx - 2`), the two bytes there are checked, and the
//! site must lie in the program's loaded image. The change is one compare-and-swap on the
//! aligned 16 bytes around the site (`lock cmpxchg16b`), so a VP running the same code
//! sees either the old instruction (and traps, harmlessly) or the new one, never half of
//! each; a site whose two bytes straddle a 16-byte boundary (1 in 16) stays trapping.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::program;

const SYSCALL: [u8; 2] = [0x0f, 0x05];
const CALL_RAX: [u8; 2] = [0xff, 0xd0];

static ENABLED: AtomicBool = AtomicBool::new(true);
static REWRITTEN: AtomicU64 = AtomicU64::new(0);

/// Turns rewriting off (`cvmm run --trap-syscalls`, to measure the trap path).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Sites rewritten so far.
#[allow(dead_code)] // for the exit report (docs/linux-abi.md: next step)
pub fn rewritten() -> u64 {
    REWRITTEN.load(Ordering::Relaxed)
}

/// A `syscall` at `site` just trapped: rewrites it if it is safe to.
pub fn trapped_at(site: u64) {
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    let h = program().header();
    let offset = site % 16;
    if site < h.image_start || site.saturating_add(2) > h.image_end || offset > 14 {
        return;
    }
    let block = site - offset;
    // SAFETY: the 16 bytes lie in the program's loaded image (checked above), logical
    // memory mapped read/write for the life of the server, 16-byte aligned as
    // cmpxchg16b requires.
    let old = unsafe { read_16(block) };
    let mut bytes = old.to_le_bytes();
    let at = offset as usize;
    if bytes[at..at + 2] != SYSCALL {
        return;
    }
    bytes[at..at + 2].copy_from_slice(&CALL_RAX);
    // SAFETY: as above.
    if unsafe { compare_exchange_16(block, old, u128::from_le_bytes(bytes)) } {
        REWRITTEN.fetch_add(1, Ordering::Relaxed);
    }
}

/// Reads 16 aligned bytes (two loads: `compare_exchange_16` rechecks them whole).
///
/// # Safety
/// `addr` is 16-byte aligned and the 16 bytes are mapped.
unsafe fn read_16(addr: u64) -> u128 {
    // SAFETY: the caller's guarantee; volatile because the program may write them.
    let (lo, hi) = unsafe {
        (
            core::ptr::read_volatile(addr as *const u64),
            core::ptr::read_volatile((addr + 8) as *const u64),
        )
    };
    u128::from(lo) | (u128::from(hi) << 64)
}

/// `lock cmpxchg16b`: replaces the 16 bytes at `addr` with `new` if they are `old`.
///
/// # Safety
/// `addr` is 16-byte aligned and the 16 bytes are mapped writable.
unsafe fn compare_exchange_16(addr: u64, old: u128, new: u128) -> bool {
    let (old_lo, old_hi) = halves(old);
    let (new_lo, new_hi) = halves(new);
    let ok: u8;
    // SAFETY: the caller's guarantee. rbx is reserved by the compiler, so the new low
    // half goes through another register and rbx is restored.
    unsafe {
        core::arch::asm!(
            "xchg rbx, {new_lo}",
            "lock cmpxchg16b [{addr}]",
            "sete {ok}",
            "xchg rbx, {new_lo}",
            addr = in(reg) addr,
            new_lo = inout(reg) new_lo => _,
            ok = out(reg_byte) ok,
            inout("rax") old_lo => _,
            inout("rdx") old_hi => _,
            in("rcx") new_hi,
        );
    }
    ok != 0
}

/// The low and high 64 bits.
fn halves(x: u128) -> (u64, u64) {
    let b = x.to_le_bytes();
    let lo = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
    let hi = u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
    (lo, hi)
}
