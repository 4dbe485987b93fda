//! `memcpy`, `memmove`, `memset`, `memcmp` and `bcmp`, which the compiler emits calls to
//! and which nothing else provides in a freestanding binary on a `-gnu` target.
//!
//! Each is one string instruction in inline assembly, so the optimiser cannot recognise
//! the body as the very idiom it implements and turn it back into a call to itself. The
//! direction flag is clear on entry (System V ABI) and left clear.

use core::arch::asm;

/// Copies `n` bytes from `src` to `dest`; the regions must not overlap.
///
/// # Safety
/// `src` must be readable and `dest` writable for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges; `rep movsb` touches exactly them.
    unsafe {
        asm!(
            "rep movsb",
            inout("rcx") n => _,
            inout("rdi") dest => _,
            inout("rsi") src => _,
            options(nostack, preserves_flags)
        );
    }
    dest
}

/// Copies `n` bytes from `src` to `dest`; the regions may overlap.
///
/// # Safety
/// `src` must be readable and `dest` writable for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if n == 0 {
        return dest;
    }
    if (dest as usize).wrapping_sub(src as usize) >= n {
        // `dest` is below `src` or past its end: a forward copy never reads a byte it
        // already overwrote.
        // SAFETY: as for memcpy.
        unsafe { memcpy(dest, src, n) };
    } else {
        // `dest` overlaps the tail of `src`: copy backwards from the last byte.
        // SAFETY: the caller guarantees both ranges; starting at their last bytes with
        // the direction flag set, `rep movsb` touches exactly them, then clears it again.
        unsafe {
            asm!(
                "std",
                "rep movsb",
                "cld",
                inout("rcx") n => _,
                inout("rdi") dest.add(n - 1) => _,
                inout("rsi") src.add(n - 1) => _,
                options(nostack)
            );
        }
    }
    dest
}

/// Sets `n` bytes at `dest` to `c as u8`.
///
/// # Safety
/// `dest` must be writable for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees the range; `rep stosb` writes exactly it.
    unsafe {
        asm!(
            "rep stosb",
            inout("rcx") n => _,
            inout("rdi") dest => _,
            in("al") c.to_le_bytes()[0],
            options(nostack, preserves_flags)
        );
    }
    dest
}

/// Compares `n` bytes: negative, 0 or positive as `a` sorts before, equal to or after `b`.
///
/// # Safety
/// `a` and `b` must be readable for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let (a_end, b_end): (*const u8, *const u8);
    let differ: u64;
    // SAFETY: the caller guarantees both ranges; `repe cmpsb` reads at most `n` bytes of
    // each. The `xor` sets ZF so that `n == 0` reads as equal.
    unsafe {
        asm!(
            "xor {differ:e}, {differ:e}",
            "repe cmpsb",
            "setne {differ:l}",
            differ = out(reg) differ,
            inout("rcx") n => _,
            inout("rsi") a => a_end,
            inout("rdi") b => b_end,
            options(nostack, readonly)
        );
    }
    if differ == 0 {
        return 0;
    }
    // SAFETY: `cmpsb` stopped just past the first differing pair, inside both ranges.
    let (x, y) = unsafe { (*a_end.sub(1), *b_end.sub(1)) };
    i32::from(x) - i32::from(y)
}

/// [`memcmp`] where only zero versus nonzero matters.
///
/// # Safety
/// As [`memcmp`].
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract.
    unsafe { memcmp(a, b, n) }
}
