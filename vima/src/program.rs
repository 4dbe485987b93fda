//! The program descriptor: what the VMM tells the guest kernel about the Linux program it
//! loaded into logical memory, read with the `ProgramRead` call.
//!
//! The VMM of node 0 (the home of the low logical memory where programs are placed)
//! loads the program's `PT_LOAD` segments before the guest boots, as it loads the guest
//! image. The guest kernel then only has to build the initial stack (argv, envp, auxv) and
//! enter the program. Layout: a [`ProgramHeader`], then `execfn` (the path as given),
//! `exe` (its absolute, canonical form: `/proc/self/exe`), the `argc` arguments and the
//! `envc` environment strings, each ending in a NUL byte.
//!
//! ```
//! use vima::program::{encode, ProgramDesc, ProgramHeader};
//! let header = ProgramHeader { entry: 0x401000, ..ProgramHeader::default() };
//! let mut buf = [0u8; 256];
//! let len = encode(&header, b"/bin/x", b"/bin/x", &[b"x", b"-v"], &[b"A=1"], &mut buf).unwrap();
//! let desc = ProgramDesc::parse(&buf[..len]).unwrap();
//! assert_eq!(desc.header().entry, 0x401000);
//! assert_eq!(desc.execfn(), b"/bin/x");
//! assert_eq!(desc.args().collect::<Vec<_>>(), [&b"x"[..], b"-v"]);
//! assert_eq!(desc.envs().next(), Some(&b"A=1"[..]));
//! ```

use bytemuck::{Pod, Zeroable};

/// `ProgramHeader::magic`: "CVLX".
pub const PROGRAM_MAGIC: u32 = u32::from_le_bytes(*b"CVLX");
/// The layout version this crate reads and writes.
pub const PROGRAM_VERSION: u32 = 1;
/// Largest descriptor (Linux's own limit on argv plus envp is of this order for one page
/// of pointers; 256 KiB is plenty and bounds the guest's buffer).
pub const MAX_PROGRAM_DESC_BYTES: usize = 256 * 1024;

/// The fixed part of the descriptor. Addresses are logical (= virtual) and already
/// relocated by `load_bias` for a static-pie program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ProgramHeader {
    /// [`PROGRAM_MAGIC`].
    pub magic: u32,
    /// [`PROGRAM_VERSION`].
    pub version: u32,
    /// Entry point (AT_ENTRY).
    pub entry: u64,
    /// Address of the program headers in memory (AT_PHDR).
    pub phdr: u64,
    /// Number of program headers (AT_PHNUM).
    pub phnum: u64,
    /// Size of one program header (AT_PHENT).
    pub phent: u64,
    /// What was added to every address of a static-pie program (0 for a fixed one).
    pub load_bias: u64,
    /// First byte (page aligned) the loaded segments occupy.
    pub image_start: u64,
    /// First byte (page aligned) after the loaded segments: the initial program break.
    pub image_end: u64,
    /// The break may grow up to here; the guest keeps `[image_start, brk_limit)` out of
    /// its page allocator.
    pub brk_limit: u64,
    /// CLOCK_REALTIME of node 0's host, in ns since the epoch, at `realtime_tsc`.
    pub realtime_ns: u64,
    /// The time stamp counter when `realtime_ns` was read (guest TSC = host TSC).
    pub realtime_tsc: u64,
    /// 16 random bytes for AT_RANDOM.
    pub random: [u8; 16],
    /// Number of argument strings.
    pub argc: u32,
    /// Number of environment strings.
    pub envc: u32,
    /// Bytes of strings after the header.
    pub strings_len: u32,
    /// Reserved, 0.
    pub reserved: u32,
}

const HEADER_BYTES: usize = core::mem::size_of::<ProgramHeader>();

/// Why a descriptor does not encode or parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgramError {
    /// Shorter than its header or its strings.
    Truncated,
    /// Wrong magic or version.
    BadMagic,
    /// A string contains a NUL byte (encode) or the strings do not match the counts.
    BadStrings,
    /// Larger than the buffer or [`MAX_PROGRAM_DESC_BYTES`].
    TooLarge,
}

/// Writes a descriptor for `header` (its magic, version, counts and length are filled in
/// here) into `buf`; returns the bytes used.
pub fn encode(
    header: &ProgramHeader,
    execfn: &[u8],
    exe: &[u8],
    args: &[&[u8]],
    envs: &[&[u8]],
    buf: &mut [u8],
) -> Result<usize, ProgramError> {
    let strings = [execfn, exe]
        .into_iter()
        .chain(args.iter().copied())
        .chain(envs.iter().copied());
    let mut at = HEADER_BYTES;
    for s in strings {
        if s.contains(&0) {
            return Err(ProgramError::BadStrings);
        }
        let end = at + s.len() + 1;
        if end > buf.len() || end > MAX_PROGRAM_DESC_BYTES {
            return Err(ProgramError::TooLarge);
        }
        buf[at..end - 1].copy_from_slice(s);
        buf[end - 1] = 0;
        at = end;
    }
    let count = |n: usize| u32::try_from(n).map_err(|_| ProgramError::TooLarge);
    let full = ProgramHeader {
        magic: PROGRAM_MAGIC,
        version: PROGRAM_VERSION,
        argc: count(args.len())?,
        envc: count(envs.len())?,
        strings_len: count(at - HEADER_BYTES)?,
        reserved: 0,
        ..*header
    };
    buf[..HEADER_BYTES].copy_from_slice(bytemuck::bytes_of(&full));
    Ok(at)
}

/// A parsed descriptor borrowing its bytes.
#[derive(Clone, Copy, Debug)]
pub struct ProgramDesc<'a> {
    header: ProgramHeader,
    strings: &'a [u8],
}

impl<'a> ProgramDesc<'a> {
    /// Checks and parses a descriptor.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ProgramError> {
        if bytes.len() > MAX_PROGRAM_DESC_BYTES {
            return Err(ProgramError::TooLarge);
        }
        let head = bytes.get(..HEADER_BYTES).ok_or(ProgramError::Truncated)?;
        let header: ProgramHeader = bytemuck::pod_read_unaligned(head);
        if header.magic != PROGRAM_MAGIC || header.version != PROGRAM_VERSION {
            return Err(ProgramError::BadMagic);
        }
        let len = usize::try_from(header.strings_len).map_err(|_| ProgramError::Truncated)?;
        let strings = bytes
            .get(HEADER_BYTES..HEADER_BYTES + len)
            .ok_or(ProgramError::Truncated)?;
        let wanted = 2 + u64::from(header.argc) + u64::from(header.envc);
        let nuls = strings.iter().filter(|&&b| b == 0).count() as u64;
        if nuls != wanted || strings.last() != Some(&0) {
            return Err(ProgramError::BadStrings);
        }
        Ok(Self { header, strings })
    }

    /// The fixed part.
    pub fn header(&self) -> &ProgramHeader {
        &self.header
    }

    fn all(&self) -> impl Iterator<Item = &'a [u8]> + Clone {
        let strings = self.strings;
        strings[..strings.len() - 1].split(|&b| b == 0)
    }

    /// The program's path as given to `cvmm` (AT_EXECFN, `/proc/self/exe`).
    pub fn execfn(&self) -> &'a [u8] {
        self.all().next().unwrap_or(&[])
    }

    /// The program's absolute, canonical path (`/proc/self/exe`).
    pub fn exe(&self) -> &'a [u8] {
        self.all().nth(1).unwrap_or(&[])
    }

    /// argv, in order.
    pub fn args(&self) -> impl Iterator<Item = &'a [u8]> + Clone {
        self.all().skip(2).take(self.header.argc as usize)
    }

    /// envp, in order.
    pub fn envs(&self) -> impl Iterator<Item = &'a [u8]> + Clone {
        self.all().skip(2 + self.header.argc as usize)
    }

    /// Bytes of all strings (each with its NUL).
    pub fn strings_len(&self) -> usize {
        self.strings.len()
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    #[test]
    fn empty_strings_and_counts_round_trip() {
        let mut buf = [0u8; 512];
        let len = encode(
            &ProgramHeader::default(),
            b"",
            b"/e",
            &[b"", b"a"],
            &[],
            &mut buf,
        )
        .unwrap();
        let desc = ProgramDesc::parse(&buf[..len]).unwrap();
        assert_eq!(desc.execfn(), b"");
        assert_eq!(desc.exe(), b"/e");
        assert_eq!(desc.args().collect::<Vec<_>>(), [&b""[..], b"a"]);
        assert_eq!(desc.envs().count(), 0);
        assert_eq!(desc.header().argc, 2);
    }

    #[test]
    fn bad_descriptors_are_refused() {
        let mut buf = [0u8; 512];
        assert_eq!(
            encode(&ProgramHeader::default(), b"a\0b", b"", &[], &[], &mut buf),
            Err(ProgramError::BadStrings)
        );
        assert_eq!(
            encode(
                &ProgramHeader::default(),
                &[b'x'; 600],
                b"",
                &[],
                &[],
                &mut buf
            ),
            Err(ProgramError::TooLarge)
        );
        let len = encode(
            &ProgramHeader::default(),
            b"p",
            b"/p",
            &[b"p"],
            &[],
            &mut buf,
        )
        .unwrap();
        assert!(ProgramDesc::parse(&buf[..len]).is_ok());
        assert_eq!(
            ProgramDesc::parse(&buf[..len - 1]).unwrap_err(),
            ProgramError::Truncated
        );
        assert_eq!(
            ProgramDesc::parse(&buf[..10]).unwrap_err(),
            ProgramError::Truncated
        );
        let mut wrong = buf;
        wrong[0] ^= 1;
        assert_eq!(
            ProgramDesc::parse(&wrong[..len]).unwrap_err(),
            ProgramError::BadMagic
        );
        let mut miscount = buf;
        miscount[HEADER_BYTES] = 0; // "p" becomes "", an extra NUL
        assert_eq!(
            ProgramDesc::parse(&miscount[..len]).unwrap_err(),
            ProgramError::BadStrings
        );
    }
}
