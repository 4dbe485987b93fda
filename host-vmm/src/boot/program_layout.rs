//! Where a Linux program goes in logical memory, and the descriptor the guest kernel reads
//! about it (`vima::program`).
//!
//! Logical memory is mapped at logical = virtual for the guest kernel and the program
//! alike (docs/linux-abi.md), so a fixed-address executable is loaded at its link
//! addresses (0x400000 for a default `ld` link) and a static-pie at [`PIE_BASE`] or just
//! above the guest kernel. Everything must lie in node 0's home range: node 0 loads the
//! segments before the guest boots, as it loads the guest image, and the other nodes fetch
//! the pages they touch. Above the loaded segments a part of the remaining memory is kept
//! for the program break; the rest is the guest's page allocator's, for `mmap`, stacks
//! and threads.

use thiserror::Error;
use vima::layout::PAGE_SIZE;
use vima::program::{encode, ProgramHeader, MAX_PROGRAM_DESC_BYTES};

use super::program::{ProgramInfo, ProgramKind};

/// Base of a static-pie program: where `ld` links a fixed-address one.
pub const PIE_BASE: u64 = 0x40_0000;
/// Memory left above the program for its stack, `mmap` and the kernel's own needs, at
/// least.
pub const MIN_FREE_BYTES: u64 = 4 << 20;
/// Most bytes kept for the program break (glibc and musl fall back to `mmap` beyond it).
pub const MAX_BRK_BYTES: u64 = 256 << 20;

/// One segment to copy into logical memory; the rest up to `memsz` is zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramSegment {
    /// Logical address (relocated).
    pub vaddr: u64,
    /// The file bytes.
    pub data: Vec<u8>,
}

/// A program placed in logical memory, ready for node 0 to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramImage {
    /// Segments to copy.
    pub segments: Vec<ProgramSegment>,
    /// What `ProgramRead` returns.
    pub descriptor: Vec<u8>,
    /// The descriptor's fixed part.
    pub header: ProgramHeader,
}

/// Why a program does not fit; each message is one sentence for the user.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum LayoutError {
    /// Linked over the guest kernel (or the null page).
    #[error(
        "the program is linked at {start:#x}, below the end of the guest kernel at {kernel_end:#x}; \
         link it at 0x400000 or higher (the default)"
    )]
    Overlap {
        /// Lowest page the program uses.
        start: u64,
        /// First byte after the guest kernel.
        kernel_end: u64,
    },
    /// Does not fit in node 0's memory with room to run.
    #[error(
        "the program needs {need_mib} MiB of logical memory on node 0, which has {have_mib} MiB; \
         give a larger --mem-mib"
    )]
    TooLarge {
        /// MiB needed.
        need_mib: u64,
        /// MiB node 0 is home for.
        have_mib: u64,
    },
    /// AT_PHDR would point at nothing.
    #[error("the program headers are not in a loaded segment")]
    HeadersNotLoaded,
    /// argv and envp do not fit the descriptor.
    #[error("the arguments and environment are longer than {MAX_PROGRAM_DESC_BYTES} bytes")]
    ArgumentsTooLong,
}

/// What the program is called and given.
#[derive(Debug, Clone, Copy)]
pub struct Invocation<'a> {
    /// The path as given (AT_EXECFN).
    pub execfn: &'a [u8],
    /// Its absolute, canonical form (`/proc/self/exe`).
    pub exe: &'a [u8],
    /// argv.
    pub args: &'a [&'a [u8]],
    /// envp.
    pub envs: &'a [&'a [u8]],
    /// AT_RANDOM's bytes.
    pub random: [u8; 16],
    /// The host's CLOCK_REALTIME in ns and the TSC read with it.
    pub realtime: (u64, u64),
}

fn page_down(addr: u64) -> u64 {
    addr & !(PAGE_SIZE - 1)
}

fn page_up(addr: u64) -> Option<u64> {
    addr.checked_next_multiple_of(PAGE_SIZE)
}

/// Places `file` (classified as `info`) above `kernel_end`, inside node 0's home range
/// `[0, home_end)`.
pub fn lay_out(
    file: &[u8],
    info: &ProgramInfo,
    kernel_end: u64,
    home_end: u64,
    invocation: &Invocation<'_>,
) -> Result<ProgramImage, LayoutError> {
    let mib = |bytes: u64| bytes.div_ceil(1 << 20);
    let too_large = |need: u64| LayoutError::TooLarge {
        need_mib: mib(need),
        have_mib: mib(home_end),
    };
    let link_start = info
        .load_segments
        .iter()
        .map(|s| page_down(s.vaddr))
        .min()
        .ok_or(LayoutError::HeadersNotLoaded)?;
    let bias = match info.kind {
        ProgramKind::StaticExec => 0,
        ProgramKind::StaticPie => {
            let base = PIE_BASE.max(kernel_end.next_multiple_of(2 << 20));
            base.wrapping_sub(link_start)
        }
    };
    let start = link_start.wrapping_add(bias);
    if start < kernel_end {
        return Err(LayoutError::Overlap { start, kernel_end });
    }
    let mut end = start;
    let mut segments = Vec::new();
    for s in &info.load_segments {
        let vaddr = s.vaddr.wrapping_add(bias);
        let seg_end = vaddr
            .checked_add(s.memsz)
            .and_then(page_up)
            .ok_or(too_large(u64::MAX))?;
        end = end.max(seg_end);
        let from = usize::try_from(s.offset).map_err(|_| too_large(u64::MAX))?;
        let len = usize::try_from(s.filesz).map_err(|_| too_large(u64::MAX))?;
        segments.push(ProgramSegment {
            vaddr,
            data: file[from..from + len].to_vec(),
        });
    }
    let need = end.saturating_add(MIN_FREE_BYTES);
    if need > home_end {
        return Err(too_large(need));
    }
    let brk_bytes = page_down(((home_end - end) / 4).min(MAX_BRK_BYTES));
    let phdr = info
        .phdr_vaddr
        .ok_or(LayoutError::HeadersNotLoaded)?
        .wrapping_add(bias);
    let header = ProgramHeader {
        entry: info.entry.wrapping_add(bias),
        phdr,
        phnum: u64::from(info.phnum),
        phent: u64::from(info.phentsize),
        load_bias: bias,
        image_start: start,
        image_end: end,
        brk_limit: end + brk_bytes,
        random: invocation.random,
        realtime_ns: invocation.realtime.0,
        realtime_tsc: invocation.realtime.1,
        ..ProgramHeader::default()
    };
    let mut buf = vec![0u8; MAX_PROGRAM_DESC_BYTES];
    let len = encode(
        &header,
        invocation.execfn,
        invocation.exe,
        invocation.args,
        invocation.envs,
        &mut buf,
    )
    .map_err(|_| LayoutError::ArgumentsTooLong)?;
    buf.truncate(len);
    Ok(ProgramImage {
        segments,
        descriptor: buf,
        header,
    })
}

#[cfg(test)]
mod tests {
    use super::super::program::LoadSegment;
    use super::*;
    use vima::program::ProgramDesc;

    fn info(kind: ProgramKind, vaddr: u64) -> ProgramInfo {
        ProgramInfo {
            kind,
            entry: vaddr + 0x1010,
            phoff: 64,
            phnum: 2,
            phentsize: 56,
            load_segments: vec![
                LoadSegment {
                    vaddr,
                    offset: 0,
                    filesz: 0x20,
                    memsz: 0x20,
                },
                LoadSegment {
                    vaddr: vaddr + 0x1000,
                    offset: 0x10,
                    filesz: 0x10,
                    memsz: 0x3000,
                },
            ],
            phdr_vaddr: Some(vaddr + 64),
        }
    }

    const INVOCATION: Invocation<'static> = Invocation {
        execfn: b"/p",
        exe: b"/p",
        args: &[b"p", b"x"],
        envs: &[b"K=V"],
        random: [7; 16],
        realtime: (1, 2),
    };

    #[test]
    fn fixed_programs_stay_where_they_were_linked() {
        let file: Vec<u8> = (0..0x20).collect();
        let image = lay_out(
            &file,
            &info(ProgramKind::StaticExec, 0x40_0000),
            0x22_0000,
            64 << 20,
            &INVOCATION,
        )
        .unwrap();
        assert_eq!(image.segments[0].vaddr, 0x40_0000);
        assert_eq!(image.segments[0].data, file);
        assert_eq!(image.segments[1].data, &file[0x10..0x20]);
        let h = image.header;
        assert_eq!((h.entry, h.phdr, h.load_bias), (0x40_1010, 0x40_0040, 0));
        assert_eq!((h.image_start, h.image_end), (0x40_0000, 0x40_4000));
        assert_eq!(h.brk_limit, 0x40_4000 + ((64 << 20) - 0x40_4000) / 4);
        let desc = ProgramDesc::parse(&image.descriptor).unwrap();
        assert_eq!(desc.args().collect::<Vec<_>>(), [&b"p"[..], b"x"]);
        assert_eq!(desc.header().random, [7; 16]);
    }

    #[test]
    fn static_pie_is_moved_above_the_kernel() {
        let file = vec![0u8; 0x20];
        let image = lay_out(
            &file,
            &info(ProgramKind::StaticPie, 0),
            0x22_0000,
            64 << 20,
            &INVOCATION,
        )
        .unwrap();
        assert_eq!(image.header.load_bias, PIE_BASE);
        assert_eq!(image.header.entry, PIE_BASE + 0x1010);
        // A kernel that reaches past PIE_BASE pushes the base to the next 2 MiB.
        let image = lay_out(
            &file,
            &info(ProgramKind::StaticPie, 0),
            0x50_0000,
            64 << 20,
            &INVOCATION,
        )
        .unwrap();
        assert_eq!(image.header.image_start, 0x60_0000);
    }

    #[test]
    fn programs_that_do_not_fit_are_refused_with_a_sentence() {
        let file = vec![0u8; 0x20];
        let low = lay_out(
            &file,
            &info(ProgramKind::StaticExec, 0x10_0000),
            0x22_0000,
            64 << 20,
            &INVOCATION,
        );
        assert!(matches!(low, Err(LayoutError::Overlap { .. })));
        let big = lay_out(
            &file,
            &info(ProgramKind::StaticExec, 0x40_0000),
            0x22_0000,
            6 << 20,
            &INVOCATION,
        )
        .unwrap_err();
        assert_eq!(
            big.to_string(),
            "the program needs 9 MiB of logical memory on node 0, which has 6 MiB; \
             give a larger --mem-mib"
        );
    }
}
