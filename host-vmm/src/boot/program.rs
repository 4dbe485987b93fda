//! What kind of host executable a `cvmm run -- PATH ...` names, for the Linux personality
//! (docs/linux-abi.md).
//!
//! The virtual server runs statically linked x86-64 Linux programs only: it has no
//! dynamic loader and no shared libraries. This module reads the ELF header, the program
//! headers and (for position-independent files) the dynamic section, and says whether the
//! file is a static executable (`ET_EXEC`, loaded at its link address), a static-pie
//! (`ET_DYN` without an interpreter or needed libraries, loaded at a base the guest picks
//! and relocating itself), or something the virtual server refuses, with one sentence
//! that says why. Every offset is checked against the file before it is read: the file is
//! user input.

use thiserror::Error;

const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const PT_PHDR: u32 = 6;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const EHDR_BYTES: usize = 64;
const PHDR_BYTES: usize = 56;
const DYN_BYTES: usize = 16;

/// How a static program is placed in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgramKind {
    /// `ET_EXEC`: loaded at the addresses it was linked for.
    StaticExec,
    /// `ET_DYN` with no interpreter and no needed libraries: loaded at any page-aligned
    /// base, relocates itself at start.
    StaticPie,
}

/// One `PT_LOAD` segment, as the file describes it (link-time addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadSegment {
    /// `p_vaddr`.
    pub vaddr: u64,
    /// `p_offset`: where its bytes start in the file.
    pub offset: u64,
    /// `p_filesz` (checked to lie in the file).
    pub filesz: u64,
    /// `p_memsz` (at least `filesz`).
    pub memsz: u64,
}

/// What the program headers say about a static executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramInfo {
    /// Static or static-pie.
    pub kind: ProgramKind,
    /// `e_entry` (relative to the load base for a static-pie).
    pub entry: u64,
    /// `e_phoff`, `e_phnum`, `e_phentsize`: what AT_PHDR, AT_PHNUM and AT_PHENT describe.
    pub phoff: u64,
    /// Number of program headers.
    pub phnum: u16,
    /// Size of one program header.
    pub phentsize: u16,
    /// Loadable segments, in file order.
    pub load_segments: Vec<LoadSegment>,
    /// Link-time address of the program headers in memory (`PT_PHDR`, or the loaded byte
    /// at `phoff`), if they are loaded at all.
    pub phdr_vaddr: Option<u64>,
}

/// Why a file cannot run in the virtual server. The messages are the one sentence `cvmm`
/// prints.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProgramError {
    /// Not an ELF file at all, or an ELF for another machine or class.
    #[error("not an x86-64 ELF executable")]
    NotX86_64Elf,
    /// An ELF object that is not an executable (a relocatable object, a core file).
    #[error("not an executable (ELF type {0})")]
    NotExecutable(u16),
    /// Needs a dynamic loader or shared libraries.
    #[error("dynamically linked executables are not supported; link it statically")]
    Dynamic,
    /// A header points outside the file.
    #[error("truncated or corrupt ELF file ({0})")]
    Corrupt(&'static str),
    /// No loadable segment.
    #[error("ELF executable has no loadable segment")]
    NoLoadSegment,
}

fn u16_at(bytes: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        bytes.get(off..off + 2)?.try_into().ok()?,
    ))
}

fn u32_at(bytes: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        bytes.get(off..off + 4)?.try_into().ok()?,
    ))
}

fn u64_at(bytes: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        bytes.get(off..off + 8)?.try_into().ok()?,
    ))
}

fn offset(value: u64) -> Result<usize, ProgramError> {
    usize::try_from(value).map_err(|_| ProgramError::Corrupt("offset beyond the address space"))
}

/// Classifies the bytes of an executable file.
pub fn classify(bytes: &[u8]) -> Result<ProgramInfo, ProgramError> {
    if bytes.len() < EHDR_BYTES || bytes[..4] != ELF_MAGIC {
        return Err(ProgramError::NotX86_64Elf);
    }
    let machine = u16_at(bytes, 18).ok_or(ProgramError::NotX86_64Elf)?;
    if bytes[4] != ELFCLASS64 || bytes[5] != ELFDATA2LSB || machine != EM_X86_64 {
        return Err(ProgramError::NotX86_64Elf);
    }
    let e_type = u16_at(bytes, 16).ok_or(ProgramError::Corrupt("ELF header"))?;
    if e_type != ET_EXEC && e_type != ET_DYN {
        return Err(ProgramError::NotExecutable(e_type));
    }
    let entry = u64_at(bytes, 24).ok_or(ProgramError::Corrupt("ELF header"))?;
    let phoff = u64_at(bytes, 32).ok_or(ProgramError::Corrupt("ELF header"))?;
    let phentsize = u16_at(bytes, 54).ok_or(ProgramError::Corrupt("ELF header"))?;
    let phnum = u16_at(bytes, 56).ok_or(ProgramError::Corrupt("ELF header"))?;
    if usize::from(phentsize) != PHDR_BYTES {
        return Err(ProgramError::Corrupt("program header size"));
    }
    let table = offset(phoff)?;
    let table_end = table
        .checked_add(usize::from(phnum) * PHDR_BYTES)
        .filter(|&end| end <= bytes.len())
        .ok_or(ProgramError::Corrupt("program headers outside the file"))?;
    let mut load_segments = Vec::new();
    let mut phdr_vaddr = None;
    let mut dynamic = None;
    for header in bytes[table..table_end].chunks_exact(PHDR_BYTES) {
        let p_type = u32_at(header, 0).ok_or(ProgramError::Corrupt("program header"))?;
        let p_offset = u64_at(header, 8).ok_or(ProgramError::Corrupt("program header"))?;
        let p_vaddr = u64_at(header, 16).ok_or(ProgramError::Corrupt("program header"))?;
        let p_filesz = u64_at(header, 32).ok_or(ProgramError::Corrupt("program header"))?;
        let p_memsz = u64_at(header, 40).ok_or(ProgramError::Corrupt("program header"))?;
        match p_type {
            PT_INTERP => return Err(ProgramError::Dynamic),
            PT_PHDR => phdr_vaddr = Some(p_vaddr),
            PT_LOAD => {
                p_offset
                    .checked_add(p_filesz)
                    .filter(|&end| end <= bytes.len() as u64)
                    .ok_or(ProgramError::Corrupt("segment outside the file"))?;
                if p_memsz < p_filesz || p_vaddr.checked_add(p_memsz).is_none() {
                    return Err(ProgramError::Corrupt("segment size"));
                }
                load_segments.push(LoadSegment {
                    vaddr: p_vaddr,
                    offset: p_offset,
                    filesz: p_filesz,
                    memsz: p_memsz,
                });
            }
            PT_DYNAMIC => dynamic = Some((p_offset, p_filesz)),
            _ => {}
        }
    }
    if load_segments.is_empty() {
        return Err(ProgramError::NoLoadSegment);
    }
    let phdr_vaddr = phdr_vaddr.or_else(|| {
        load_segments
            .iter()
            .find(|s| phoff >= s.offset && phoff - s.offset < s.filesz)
            .map(|s| s.vaddr + (phoff - s.offset))
    });
    if let Some((start, size)) = dynamic {
        if needs_libraries(bytes, start, size)? {
            return Err(ProgramError::Dynamic);
        }
    }
    let kind = if e_type == ET_EXEC {
        ProgramKind::StaticExec
    } else {
        ProgramKind::StaticPie
    };
    Ok(ProgramInfo {
        kind,
        entry,
        phoff,
        phnum,
        phentsize,
        load_segments,
        phdr_vaddr,
    })
}

/// True when the dynamic section lists a `DT_NEEDED` library (a shared object or a
/// dynamic executable whose interpreter header was stripped).
fn needs_libraries(bytes: &[u8], start: u64, size: u64) -> Result<bool, ProgramError> {
    let start = offset(start)?;
    let end = start
        .checked_add(offset(size)?)
        .filter(|&end| end <= bytes.len())
        .ok_or(ProgramError::Corrupt("dynamic section outside the file"))?;
    for entry in bytes[start..end].chunks_exact(DYN_BYTES) {
        let tag = u64_at(entry, 0).ok_or(ProgramError::Corrupt("dynamic section"))?;
        match tag {
            DT_NULL => break,
            DT_NEEDED => return Ok(true),
            _ => {}
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds an ELF64 file: header, program headers of the given types (each PT_LOAD
    /// covering the headers), and a dynamic section with `dyn_tags` if there is a
    /// PT_DYNAMIC.
    fn elf(e_type: u16, machine: u16, phdrs: &[u32], dyn_tags: &[u64]) -> Vec<u8> {
        let dyn_off = EHDR_BYTES + phdrs.len() * PHDR_BYTES;
        let mut file = vec![0u8; dyn_off + (dyn_tags.len() + 1) * DYN_BYTES];
        file[..4].copy_from_slice(&ELF_MAGIC);
        file[4] = ELFCLASS64;
        file[5] = ELFDATA2LSB;
        file[6] = 1;
        file[16..18].copy_from_slice(&e_type.to_le_bytes());
        file[18..20].copy_from_slice(&machine.to_le_bytes());
        file[24..32].copy_from_slice(&0x401000u64.to_le_bytes());
        file[32..40].copy_from_slice(&(EHDR_BYTES as u64).to_le_bytes());
        file[54..56].copy_from_slice(&u16::try_from(PHDR_BYTES).unwrap().to_le_bytes());
        file[56..58].copy_from_slice(&u16::try_from(phdrs.len()).unwrap().to_le_bytes());
        for (i, &p_type) in phdrs.iter().enumerate() {
            let at = EHDR_BYTES + i * PHDR_BYTES;
            file[at..at + 4].copy_from_slice(&p_type.to_le_bytes());
            let (off, size) = if p_type == PT_DYNAMIC {
                (dyn_off as u64, ((dyn_tags.len() + 1) * DYN_BYTES) as u64)
            } else {
                (0, dyn_off as u64)
            };
            file[at + 8..at + 16].copy_from_slice(&off.to_le_bytes());
            file[at + 32..at + 40].copy_from_slice(&size.to_le_bytes());
            file[at + 40..at + 48].copy_from_slice(&size.to_le_bytes());
        }
        for (i, &tag) in dyn_tags.iter().enumerate() {
            let at = dyn_off + i * DYN_BYTES;
            file[at..at + 8].copy_from_slice(&tag.to_le_bytes());
        }
        file
    }

    #[test]
    fn static_executables_and_static_pie() {
        let exec = classify(&elf(ET_EXEC, EM_X86_64, &[PT_LOAD, PT_LOAD], &[])).unwrap();
        assert_eq!(exec.kind, ProgramKind::StaticExec);
        assert_eq!(
            (exec.entry, exec.phnum, exec.load_segments.len()),
            (0x401000, 2, 2)
        );
        // Both segments cover the headers at offset 0, linked at address 0 here.
        assert_eq!(exec.phdr_vaddr, Some(EHDR_BYTES as u64));
        // A static-pie has a dynamic section (its own relocations) but needs nothing.
        let pie = elf(
            ET_DYN,
            EM_X86_64,
            &[PT_LOAD, PT_DYNAMIC],
            &[7, 8, 0x6fff_fffb],
        );
        assert_eq!(classify(&pie).unwrap().kind, ProgramKind::StaticPie);
    }

    #[test]
    fn dynamic_files_are_refused() {
        let with_interp = elf(ET_DYN, EM_X86_64, &[PT_LOAD, PT_INTERP], &[]);
        assert_eq!(classify(&with_interp), Err(ProgramError::Dynamic));
        let needs_lib = elf(ET_DYN, EM_X86_64, &[PT_LOAD, PT_DYNAMIC], &[DT_NEEDED]);
        assert_eq!(classify(&needs_lib), Err(ProgramError::Dynamic));
        assert_eq!(
            ProgramError::Dynamic.to_string(),
            "dynamically linked executables are not supported; link it statically"
        );
    }

    #[test]
    fn other_files_are_refused() {
        assert_eq!(
            classify(b"#!/bin/sh\necho hi\n"),
            Err(ProgramError::NotX86_64Elf)
        );
        assert_eq!(classify(b""), Err(ProgramError::NotX86_64Elf));
        let arm = elf(ET_EXEC, 183, &[PT_LOAD], &[]);
        assert_eq!(classify(&arm), Err(ProgramError::NotX86_64Elf));
        let object = elf(1, EM_X86_64, &[], &[]);
        assert_eq!(classify(&object), Err(ProgramError::NotExecutable(1)));
        let nothing = elf(ET_EXEC, EM_X86_64, &[PT_DYNAMIC], &[]);
        assert_eq!(classify(&nothing), Err(ProgramError::NoLoadSegment));
    }

    #[test]
    fn headers_pointing_outside_are_corrupt_not_panics() {
        let mut file = elf(ET_EXEC, EM_X86_64, &[PT_LOAD], &[]);
        file[56..58].copy_from_slice(&1000u16.to_le_bytes());
        assert!(matches!(classify(&file), Err(ProgramError::Corrupt(_))));
        let mut file = elf(ET_EXEC, EM_X86_64, &[PT_LOAD], &[]);
        file[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(classify(&file), Err(ProgramError::Corrupt(_))));
        let mut file = elf(ET_EXEC, EM_X86_64, &[PT_LOAD], &[]);
        let seg = EHDR_BYTES + 32;
        file[seg..seg + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(classify(&file), Err(ProgramError::Corrupt(_))));
        // Every truncation of a valid file is refused cleanly.
        let pie = elf(ET_DYN, EM_X86_64, &[PT_LOAD, PT_DYNAMIC], &[7]);
        for len in 0..pie.len() {
            assert!(classify(&pie[..len]).is_err(), "length {len}");
        }
    }

    #[test]
    fn real_host_binaries() {
        // Debian's own programs are dynamic; this process may be either.
        for path in ["/bin/true", "/usr/bin/env"] {
            if let Ok(bytes) = std::fs::read(path) {
                assert_eq!(classify(&bytes), Err(ProgramError::Dynamic), "{path}");
            }
        }
    }
}
