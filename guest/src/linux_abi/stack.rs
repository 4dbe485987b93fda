//! The initial process stack, laid out as Linux's `create_elf_tables` does (System V
//! x86-64 ABI, 3.4.1): from `rsp` upwards `argc`, the argv pointers and a NULL, the envp
//! pointers and a NULL, the auxiliary vector ending in `AT_NULL`; above them, the 16
//! AT_RANDOM bytes, the AT_PLATFORM string, then the argument and environment strings and
//! the file name (AT_EXECFN) at the very top, under 8 zero bytes. `rsp` is 16-byte aligned.
//!
//! The builder writes into a byte slice that stands for `[top - len, top)` of the
//! program's address space, so it is tested here against values computed by hand.

// Offsets into the stack are differences of addresses inside it, so below its length.
#![allow(clippy::cast_possible_truncation)]

/// End of the auxiliary vector.
pub const AT_NULL: u64 = 0;
/// Address of the program headers.
pub const AT_PHDR: u64 = 3;
/// Size of one program header.
pub const AT_PHENT: u64 = 4;
/// Number of program headers.
pub const AT_PHNUM: u64 = 5;
/// Page size.
pub const AT_PAGESZ: u64 = 6;
/// Interpreter base (0: none).
pub const AT_BASE: u64 = 7;
/// Flags (0).
pub const AT_FLAGS: u64 = 8;
/// Program entry point.
pub const AT_ENTRY: u64 = 9;
/// Real user id.
pub const AT_UID: u64 = 11;
/// Effective user id.
pub const AT_EUID: u64 = 12;
/// Real group id.
pub const AT_GID: u64 = 13;
/// Effective group id.
pub const AT_EGID: u64 = 14;
/// Address of the platform string.
pub const AT_PLATFORM: u64 = 15;
/// CPUID.1:EDX.
pub const AT_HWCAP: u64 = 16;
/// Clock ticks per second (`times`).
pub const AT_CLKTCK: u64 = 17;
/// Secure mode (0).
pub const AT_SECURE: u64 = 23;
/// Address of 16 random bytes.
pub const AT_RANDOM: u64 = 25;
/// More hardware capabilities.
pub const AT_HWCAP2: u64 = 26;
/// Address of the file name.
pub const AT_EXECFN: u64 = 31;

/// What goes on the stack besides the auxiliary vector's plain values.
#[derive(Clone, Copy, Debug)]
pub struct StackInput<'a, A, E> {
    /// The file name (AT_EXECFN).
    pub execfn: &'a [u8],
    /// argv strings.
    pub args: A,
    /// envp strings.
    pub envs: E,
    /// AT_RANDOM's bytes.
    pub random: [u8; 16],
    /// AT_PLATFORM's string.
    pub platform: &'a [u8],
    /// Auxiliary vector entries with plain values (everything but AT_RANDOM,
    /// AT_PLATFORM, AT_EXECFN and AT_NULL, which the builder adds).
    pub aux: &'a [(u64, u64)],
}

/// The stack did not fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the arguments and environment do not fit in the initial stack")]
pub struct StackTooSmall;

/// Writes the initial stack into `stack`, which is the memory `[top - stack.len(), top)`;
/// returns the initial `rsp` (the address of `argc`).
pub fn build<'a, A, E>(
    stack: &mut [u8],
    top: u64,
    input: &StackInput<'a, A, E>,
) -> Result<u64, StackTooSmall>
where
    A: Iterator<Item = &'a [u8]> + Clone,
    E: Iterator<Item = &'a [u8]> + Clone,
{
    let base = top - stack.len() as u64;
    let mut cursor = top;
    let mut put = |bytes: &[u8], nul: bool, cursor: &mut u64| -> Result<u64, StackTooSmall> {
        let len = bytes.len() as u64 + u64::from(nul);
        let at = cursor
            .checked_sub(len)
            .filter(|&at| at >= base)
            .ok_or(StackTooSmall)?;
        let off = (at - base) as usize;
        stack[off..off + bytes.len()].copy_from_slice(bytes);
        if nul {
            stack[off + bytes.len()] = 0;
        }
        *cursor = at;
        Ok(at)
    };
    put(&[0; 8], false, &mut cursor)?;
    let execfn = put(input.execfn, true, &mut cursor)?;
    // Argument then environment strings, ascending in order (argv[0] lowest), as Linux
    // lays them out.
    let strings: u64 = input
        .args
        .clone()
        .chain(input.envs.clone())
        .map(|s| s.len() as u64 + 1)
        .sum();
    let strings_start = cursor
        .checked_sub(strings)
        .filter(|&at| at >= base)
        .ok_or(StackTooSmall)?;
    let mut at = strings_start;
    for s in input.args.clone().chain(input.envs.clone()) {
        let mut end = at + s.len() as u64 + 1;
        put(s, true, &mut end)?;
        at += s.len() as u64 + 1;
    }
    cursor = strings_start;
    let platform = put(input.platform, true, &mut cursor)?;
    cursor &= !15;
    let random = put(&input.random, false, &mut cursor)?;

    let argc = input.args.clone().count() as u64;
    let envc = input.envs.clone().count() as u64;
    let aux_words = 2 * (input.aux.len() as u64 + 4);
    let words = 1 + argc + 1 + envc + 1 + aux_words;
    let rsp = cursor
        .checked_sub(words * 8)
        .map(|at| at & !15)
        .filter(|&at| at >= base)
        .ok_or(StackTooSmall)?;
    let mut slot = rsp;
    let mut word = |value: u64| {
        let off = (slot - base) as usize;
        stack[off..off + 8].copy_from_slice(&value.to_le_bytes());
        slot += 8;
    };
    word(argc);
    let mut at = strings_start;
    for s in input.args.clone() {
        word(at);
        at += s.len() as u64 + 1;
    }
    word(0);
    for s in input.envs.clone() {
        word(at);
        at += s.len() as u64 + 1;
    }
    word(0);
    for &(key, value) in input.aux {
        word(key);
        word(value);
    }
    for (key, value) in [
        (AT_RANDOM, random),
        (AT_PLATFORM, platform),
        (AT_EXECFN, execfn),
        (AT_NULL, 0),
    ] {
        word(key);
        word(value);
    }
    Ok(rsp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_u64(stack: &[u8], base: u64, addr: u64) -> u64 {
        let off = (addr - base) as usize;
        u64::from_le_bytes(stack[off..off + 8].try_into().unwrap())
    }

    fn read_str(stack: &[u8], base: u64, addr: u64) -> Vec<u8> {
        let off = (addr - base) as usize;
        stack[off..]
            .iter()
            .take_while(|&&b| b != 0)
            .copied()
            .collect()
    }

    #[test]
    fn layout_is_what_a_libc_start_routine_reads() {
        let mut stack = vec![0xAAu8; 4096];
        let top = 0x7000_0000u64;
        let base = top - 4096;
        let args: [&[u8]; 3] = [b"prog", b"-x", b""];
        let envs: [&[u8]; 1] = [b"K=V"];
        let input = StackInput {
            execfn: b"/bin/prog",
            args: args.iter().copied(),
            envs: envs.iter().copied(),
            random: [9; 16],
            platform: b"x86_64",
            aux: &[(AT_PAGESZ, 4096), (AT_ENTRY, 0x401000)],
        };
        let rsp = build(&mut stack, top, &input).unwrap();
        assert_eq!(rsp % 16, 0);
        assert_eq!(read_u64(&stack, base, rsp), 3);
        for (i, want) in args.iter().enumerate() {
            let ptr = read_u64(&stack, base, rsp + 8 + 8 * i as u64);
            assert_eq!(read_str(&stack, base, ptr), *want);
        }
        // Strings ascend in argv order, as Linux lays them out.
        let p0 = read_u64(&stack, base, rsp + 8);
        let p1 = read_u64(&stack, base, rsp + 16);
        assert_eq!(p1, p0 + 5);
        assert_eq!(read_u64(&stack, base, rsp + 32), 0);
        let env0 = read_u64(&stack, base, rsp + 40);
        assert_eq!(read_str(&stack, base, env0), b"K=V");
        assert_eq!(read_u64(&stack, base, rsp + 48), 0);
        let mut aux = Vec::new();
        let mut at = rsp + 56;
        loop {
            let (k, v) = (read_u64(&stack, base, at), read_u64(&stack, base, at + 8));
            aux.push((k, v));
            at += 16;
            if k == AT_NULL {
                break;
            }
        }
        assert_eq!(aux[0], (AT_PAGESZ, 4096));
        assert_eq!(aux[1], (AT_ENTRY, 0x401000));
        let lookup = |key| aux.iter().find(|(k, _)| *k == key).unwrap().1;
        let random = lookup(AT_RANDOM);
        let off = (random - base) as usize;
        assert_eq!(&stack[off..off + 16], &[9; 16]);
        assert_eq!(read_str(&stack, base, lookup(AT_PLATFORM)), b"x86_64");
        assert_eq!(read_str(&stack, base, lookup(AT_EXECFN)), b"/bin/prog");
        // The file name ends 8 bytes below the top, which stay zero.
        assert_eq!(lookup(AT_EXECFN) + 10, top - 8);
        assert_eq!(read_u64(&stack, base, top - 8), 0);
    }

    #[test]
    fn too_small_a_stack_is_an_error_not_a_panic() {
        let args: [&[u8]; 1] = [&[b'a'; 300]];
        let input = StackInput {
            execfn: b"/p",
            args: args.iter().copied(),
            envs: core::iter::empty(),
            random: [0; 16],
            platform: b"x86_64",
            aux: &[],
        };
        for len in [0usize, 8, 64, 256, 300] {
            let mut stack = vec![0u8; len];
            assert_eq!(build(&mut stack, 0x10000, &input), Err(StackTooSmall));
        }
        let mut stack = vec![0u8; 1024];
        assert!(build(&mut stack, 0x10000, &input).is_ok());
    }
}
