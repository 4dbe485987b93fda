//! A small, strict ELF64 loader for the guest image.
//!
//! The guest is ours, but the image is still input: every header field is checked before
//! a byte is copied, and the loader only writes through a closure given checked logical
//! ranges, so a bad image cannot write outside logical memory.

use thiserror::Error;
use vima::layout::GUEST_IMAGE_BASE;

/// Why a guest image cannot be loaded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ElfError {
    /// The file is not a little-endian x86-64 ELF64 executable.
    #[error("Guest image is not an x86-64 ELF64 executable")]
    NotElf64,
    /// A header or segment points outside the file.
    #[error("Guest image is truncated or a header points outside it")]
    Truncated,
    /// A loadable segment lies outside `[GUEST_IMAGE_BASE, logical memory end)`.
    #[error("Guest segment at {vaddr:#x} ({memsz:#x} bytes) lies outside logical memory")]
    SegmentOutside {
        /// Segment start.
        vaddr: u64,
        /// Segment size in memory.
        memsz: u64,
    },
    /// The entry point is not inside a loaded segment.
    #[error("Guest entry point {0:#x} is not inside a loaded segment")]
    BadEntry(u64),
    /// Writing a segment into logical memory failed.
    #[error("Failed to write guest segment at {vaddr:#x}: {reason}")]
    Write {
        /// Segment start.
        vaddr: u64,
        /// What the writer said.
        reason: String,
    },
}

/// One segment to copy: `data` goes to `vaddr`; memory up to `vaddr + memsz` stays zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    /// Logical address.
    pub vaddr: u64,
    /// File bytes.
    pub data: &'a [u8],
    /// Bytes in memory (>= data.len()).
    pub memsz: u64,
}

/// A checked image: its loadable segments and entry point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestImage<'a> {
    /// Loadable segments.
    pub segments: Vec<Segment<'a>>,
    /// Entry point.
    pub entry: u64,
    /// First byte after the highest segment.
    pub end: u64,
}

impl<'a> GuestImage<'a> {
    /// A flat image: `code` loaded at `GUEST_IMAGE_BASE` and entered at its first byte.
    /// Tests and benchmarks use it to run hand-written machine code.
    pub fn raw(code: &'a [u8]) -> Self {
        let memsz = code.len() as u64;
        GuestImage {
            segments: vec![Segment {
                vaddr: GUEST_IMAGE_BASE,
                data: code,
                memsz,
            }],
            entry: GUEST_IMAGE_BASE,
            end: GUEST_IMAGE_BASE + memsz,
        }
    }
}

fn u16_at(b: &[u8], off: usize) -> Result<u16, ElfError> {
    b.get(off..off + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or(ElfError::Truncated)
}
fn u32_at(b: &[u8], off: usize) -> Result<u32, ElfError> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(ElfError::Truncated)
}
fn u64_at(b: &[u8], off: usize) -> Result<u64, ElfError> {
    let s = b.get(off..off + 8).ok_or(ElfError::Truncated)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Ok(u64::from_le_bytes(a))
}
fn to_usize(v: u64) -> Result<usize, ElfError> {
    usize::try_from(v).map_err(|_| ElfError::Truncated)
}

const PT_LOAD: u32 = 1;
const ET_EXEC: u16 = 2;
const EM_X86_64: u16 = 62;

/// Parses and checks `file` for a logical memory of `logical_bytes`.
pub fn parse(file: &[u8], logical_bytes: u64) -> Result<GuestImage<'_>, ElfError> {
    let ident_ok = file.get(..7) == Some(&[0x7f, b'E', b'L', b'F', 2, 1, 1][..]);
    if !ident_ok || u16_at(file, 16)? != ET_EXEC || u16_at(file, 18)? != EM_X86_64 {
        return Err(ElfError::NotElf64);
    }
    let entry = u64_at(file, 24)?;
    let phoff = to_usize(u64_at(file, 32)?)?;
    let phentsize = usize::from(u16_at(file, 54)?);
    let phnum = usize::from(u16_at(file, 56)?);
    if phentsize < 56 {
        return Err(ElfError::Truncated);
    }
    let mut segments = Vec::new();
    for index in 0..phnum {
        let ph = index
            .checked_mul(phentsize)
            .and_then(|o| o.checked_add(phoff))
            .ok_or(ElfError::Truncated)?;
        if u32_at(file, ph)? != PT_LOAD {
            continue;
        }
        let offset = to_usize(u64_at(file, ph + 8)?)?;
        let vaddr = u64_at(file, ph + 16)?;
        let filesz = to_usize(u64_at(file, ph + 32)?)?;
        let memsz = u64_at(file, ph + 40)?;
        let data = offset
            .checked_add(filesz)
            .and_then(|end| file.get(offset..end))
            .ok_or(ElfError::Truncated)?;
        let end = vaddr.checked_add(memsz);
        if vaddr < GUEST_IMAGE_BASE
            || end.is_none_or(|e| e > logical_bytes)
            || (filesz as u64) > memsz
        {
            return Err(ElfError::SegmentOutside { vaddr, memsz });
        }
        if memsz > 0 {
            segments.push(Segment { vaddr, data, memsz });
        }
    }
    let inside = |s: &Segment<'_>| entry >= s.vaddr && entry < s.vaddr + s.memsz;
    if !segments.iter().any(inside) {
        return Err(ElfError::BadEntry(entry));
    }
    let end = segments
        .iter()
        .map(|s| s.vaddr + s.memsz)
        .max()
        .unwrap_or(GUEST_IMAGE_BASE);
    Ok(GuestImage {
        segments,
        entry,
        end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a minimal ELF64 executable with one PT_LOAD segment.
    fn tiny_elf(vaddr: u64, entry: u64, code: &[u8], memsz: u64) -> Vec<u8> {
        let mut f = vec![0u8; 64 + 56];
        f[..7].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1]);
        f[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
        f[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        f[24..32].copy_from_slice(&entry.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&1u16.to_le_bytes());
        let ph = 64;
        f[ph..ph + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
        f[ph + 8..ph + 16].copy_from_slice(&120u64.to_le_bytes());
        f[ph + 16..ph + 24].copy_from_slice(&vaddr.to_le_bytes());
        f[ph + 32..ph + 40].copy_from_slice(&(code.len() as u64).to_le_bytes());
        f[ph + 40..ph + 48].copy_from_slice(&memsz.to_le_bytes());
        f.extend_from_slice(code);
        f
    }

    #[test]
    fn parses_a_valid_image() {
        let file = tiny_elf(0x20_0000, 0x20_0004, &[0x90; 16], 0x2000);
        let image = parse(&file, 16 << 20).unwrap();
        assert_eq!(image.entry, 0x20_0004);
        assert_eq!(image.segments.len(), 1);
        assert_eq!(image.segments[0].data, &[0x90; 16]);
        assert_eq!(image.end, 0x20_2000);
    }

    #[test]
    fn rejects_bad_images() {
        let good = tiny_elf(0x20_0000, 0x20_0000, &[0x90; 16], 16);
        assert_eq!(
            parse(b"#!/bin/sh\nexit 0\n", 16 << 20),
            Err(ElfError::NotElf64)
        );
        assert_eq!(parse(&good[..10], 16 << 20), Err(ElfError::Truncated));
        assert_eq!(parse(&good[..130], 16 << 20), Err(ElfError::Truncated));
        let low = tiny_elf(0x1000, 0x1000, &[0x90; 16], 16);
        assert!(matches!(
            parse(&low, 16 << 20),
            Err(ElfError::SegmentOutside { .. })
        ));
        let high = tiny_elf(0x20_0000, 0x20_0000, &[0x90; 16], 64 << 20);
        assert!(matches!(
            parse(&high, 16 << 20),
            Err(ElfError::SegmentOutside { .. })
        ));
        let entry = tiny_elf(0x20_0000, 0x30_0000, &[0x90; 16], 16);
        assert_eq!(parse(&entry, 16 << 20), Err(ElfError::BadEntry(0x30_0000)));
    }

    #[test]
    fn never_panics_on_garbage() {
        let good = tiny_elf(0x20_0000, 0x20_0000, &[0x90; 16], 16);
        for i in 0..good.len() {
            for v in [0u8, 0xff, 0x7f] {
                let mut bad = good.clone();
                bad[i] = v;
                let _ = parse(&bad, 16 << 20);
            }
        }
    }
}
