//! The guest command line: which workload to run and its parameters.
//!
//! Grammar (words separated by ASCII white space, numbers in decimal):
//! `hello` | `counter ITERS` | `matmul N` | `sort N` | `litmus (mp|sb|lb|iriw) ITERS` |
//! `probe (local|read_miss|write_miss|upgrade) PAGES` | `probe invalidate PAGES SHARERS` |
//! `linux [strace] [trap-syscalls] [load-placement]` (run the Linux program the VMM
//! loaded, its argv comes with it; `strace` prints every system call on stderr,
//! `trap-syscalls` keeps every `syscall` trapping instead of rewriting it,
//! `load-placement` places threads by run-queue load alone, without their remote faults).
//! An unknown first word is [`CmdlineError::UnknownWorkload`] (exit status
//! 2); every other mistake exits with status 1 (see [`CmdlineError::exit_status`]).

use core::fmt;

use crate::litmus::LitmusTest;
use crate::probe::ProbeKind;

/// Largest `N` of `matmul N` (three N x N u64 matrices must fit in logical memory).
pub const MATMUL_MAX_N: u64 = 16_384;
/// Largest `N` of `sort N`.
pub const SORT_MAX_N: u64 = 1 << 30;
/// Largest `PAGES` of `probe` (4 GiB of probed pages; memory per node limits it further
/// at run time).
pub const PROBE_MAX_PAGES: u64 = 1 << 20;
/// Largest `SHARERS` of `probe invalidate` (every node but the writer's).
pub const PROBE_MAX_SHARERS: u64 = vima::layout::MAX_NODES as u64 - 1;

/// A workload and its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Every VP says hello.
    Hello,
    /// Every VP increments one shared counter `iterations` times under one spinlock.
    Counter {
        /// Increments per VP.
        iterations: u64,
    },
    /// `C = A * B` for N x N matrices, rows split across the VPs.
    Matmul {
        /// Matrix dimension.
        n: usize,
    },
    /// Parallel sort of `n` pseudo-random values.
    Sort {
        /// Number of values.
        n: usize,
    },
    /// A memory-model litmus test run `iterations` times.
    Litmus {
        /// Which test.
        test: LitmusTest,
        /// Runs.
        iterations: u64,
    },
    /// The fault-latency probe: VP 0 times one access to each of `pages` pages put in the
    /// state `kind` needs (see [`crate::probe`]).
    Probe {
        /// What is timed.
        kind: ProbeKind,
        /// Pages, one timed access each.
        pages: u64,
        /// Nodes holding a copy before the timed write (`invalidate` only, else 0).
        sharers: u32,
    },
    /// The Linux program the VMM loaded (`cvmm run -- PATH`), described by `ProgramRead`.
    Linux(LinuxOptions),
}

/// How the Linux personality runs the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinuxOptions {
    /// Print each system call on stderr (`cvmm run --strace`).
    pub strace: bool,
    /// Never rewrite `syscall` sites (`cvmm run --trap-syscalls`).
    pub trap_syscalls: bool,
    /// Place threads by run-queue load alone (`cvmm run --placement load`), not weighted
    /// by the remote faults they take.
    pub load_placement: bool,
}

impl Workload {
    /// The workload's name, its first command line word.
    pub const fn name(&self) -> &'static str {
        match self {
            Workload::Hello => "hello",
            Workload::Counter { .. } => "counter",
            Workload::Matmul { .. } => "matmul",
            Workload::Sort { .. } => "sort",
            Workload::Litmus { .. } => "litmus",
            Workload::Probe { .. } => "probe",
            Workload::Linux(_) => "linux",
        }
    }
}

/// Command line bytes shown as text (invalid UTF-8 as `\xNN`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Word<'a>(pub &'a [u8]);

impl fmt::Display for Word<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            f.write_str(chunk.valid())?;
            for byte in chunk.invalid() {
                write!(f, "\\x{byte:02x}")?;
            }
        }
        Ok(())
    }
}

/// Why the command line was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CmdlineError<'a> {
    /// Nothing but white space.
    #[error("empty command line (expected hello, counter, matmul, sort, litmus or probe)")]
    Empty,
    /// The first word names no workload.
    #[error("unknown workload \"{0}\"")]
    UnknownWorkload(Word<'a>),
    /// Too few or too many words after the workload name.
    #[error("{workload} takes {expected}, got {got} argument(s)")]
    ArgumentCount {
        /// The workload.
        workload: &'static str,
        /// Its arguments, as the user should write them.
        expected: &'static str,
        /// How many arguments were given.
        got: usize,
    },
    /// A number is not decimal or does not fit.
    #[error("{what} \"{text}\" is not a decimal number")]
    BadNumber {
        /// Which argument.
        what: &'static str,
        /// What was written.
        text: Word<'a>,
    },
    /// A number is outside its range.
    #[error("{what} must be between {min} and {max}, got {value}")]
    OutOfRange {
        /// Which argument.
        what: &'static str,
        /// The value given.
        value: u64,
        /// Smallest accepted.
        min: u64,
        /// Largest accepted.
        max: u64,
    },
    /// `litmus` names no known test.
    #[error("unknown litmus test \"{0}\" (expected mp, sb, lb or iriw)")]
    UnknownLitmus(Word<'a>),
    /// `probe` names no known kind.
    #[error(
        "unknown probe kind \"{0}\" (expected local, read_miss, write_miss, upgrade or invalidate)"
    )]
    UnknownProbeKind(Word<'a>),
}

impl CmdlineError<'_> {
    /// The `VsExit` status for this error: 2 for an unknown workload, 1 otherwise.
    pub const fn exit_status(&self) -> u64 {
        match self {
            CmdlineError::UnknownWorkload(_) => 2,
            _ => 1,
        }
    }
}

fn number<'a>(
    what: &'static str,
    text: &'a [u8],
    min: u64,
    max: u64,
) -> Result<u64, CmdlineError<'a>> {
    let bad = CmdlineError::BadNumber {
        what,
        text: Word(text),
    };
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return Err(bad);
    }
    let value = core::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or(bad)?;
    if value < min || value > max {
        return Err(CmdlineError::OutOfRange {
            what,
            value,
            min,
            max,
        });
    }
    Ok(value)
}

fn size<'a>(what: &'static str, text: &'a [u8], max: u64) -> Result<usize, CmdlineError<'a>> {
    let value = number(what, text, 1, max)?;
    usize::try_from(value).map_err(|_| CmdlineError::OutOfRange {
        what,
        value,
        min: 1,
        max,
    })
}

/// Parses a command line.
pub fn parse(cmdline: &[u8]) -> Result<Workload, CmdlineError<'_>> {
    let mut words = cmdline
        .split(u8::is_ascii_whitespace)
        .filter(|word| !word.is_empty());
    let name = words.next().ok_or(CmdlineError::Empty)?;
    let mut args: [&[u8]; 3] = [&[]; 3];
    let mut got = 0;
    for word in words {
        if let Some(slot) = args.get_mut(got) {
            *slot = word;
        }
        got += 1;
    }
    let arity = |workload: &'static str, expected: &'static str, count: usize| {
        if got == count {
            Ok(())
        } else {
            Err(CmdlineError::ArgumentCount {
                workload,
                expected,
                got,
            })
        }
    };
    match name {
        b"hello" => {
            arity("hello", "no arguments", 0)?;
            Ok(Workload::Hello)
        }
        b"linux" => {
            const EXPECTED: &str = "[strace] [trap-syscalls] [load-placement]";
            let mut options = LinuxOptions::default();
            for &word in args.iter().take(got) {
                let flag = match word {
                    b"strace" => &mut options.strace,
                    b"trap-syscalls" => &mut options.trap_syscalls,
                    b"load-placement" => &mut options.load_placement,
                    _ => {
                        return Err(CmdlineError::ArgumentCount {
                            workload: "linux",
                            expected: EXPECTED,
                            got,
                        })
                    }
                };
                *flag = true;
            }
            if got > 3 {
                return Err(CmdlineError::ArgumentCount {
                    workload: "linux",
                    expected: EXPECTED,
                    got,
                });
            }
            Ok(Workload::Linux(options))
        }
        b"counter" => {
            arity("counter", "ITERS", 1)?;
            let iterations = number("ITERS", args[0], 0, u64::MAX)?;
            Ok(Workload::Counter { iterations })
        }
        b"matmul" => {
            arity("matmul", "N", 1)?;
            let n = size("N", args[0], MATMUL_MAX_N)?;
            Ok(Workload::Matmul { n })
        }
        b"sort" => {
            arity("sort", "N", 1)?;
            let n = size("N", args[0], SORT_MAX_N)?;
            Ok(Workload::Sort { n })
        }
        b"litmus" => {
            arity("litmus", "NAME ITERS", 2)?;
            let test =
                LitmusTest::from_name(args[0]).ok_or(CmdlineError::UnknownLitmus(Word(args[0])))?;
            let iterations = number("ITERS", args[1], 0, u64::MAX)?;
            Ok(Workload::Litmus { test, iterations })
        }
        b"probe" => {
            let kind = ProbeKind::from_name(args[0])
                .ok_or(CmdlineError::UnknownProbeKind(Word(args[0])))?;
            let sharers = if kind == ProbeKind::Invalidate {
                arity("probe invalidate", "PAGES SHARERS", 3)?;
                number("SHARERS", args[2], 1, PROBE_MAX_SHARERS)?
            } else {
                arity("probe", "KIND PAGES", 2)?;
                0
            };
            let pages = number("PAGES", args[1], 1, PROBE_MAX_PAGES)?;
            let sharers = u32::try_from(sharers).unwrap_or(u32::MAX);
            Ok(Workload::Probe {
                kind,
                pages,
                sharers,
            })
        }
        other => Err(CmdlineError::UnknownWorkload(Word(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_workload() {
        assert_eq!(parse(b"hello"), Ok(Workload::Hello));
        let linux = |strace, trap_syscalls, load_placement| {
            Ok(Workload::Linux(LinuxOptions {
                strace,
                trap_syscalls,
                load_placement,
            }))
        };
        assert_eq!(parse(b"linux"), linux(false, false, false));
        assert_eq!(parse(b"linux strace"), linux(true, false, false));
        assert_eq!(
            parse(b"linux trap-syscalls strace"),
            linux(true, true, false)
        );
        assert_eq!(parse(b"linux load-placement"), linux(false, false, true));
        assert!(parse(b"linux x").is_err());
        assert_eq!(parse(b"  hello \n"), Ok(Workload::Hello));
        assert_eq!(
            parse(b"counter 1000"),
            Ok(Workload::Counter { iterations: 1000 })
        );
        assert_eq!(parse(b"counter 0"), Ok(Workload::Counter { iterations: 0 }));
        assert_eq!(parse(b"matmul\t64"), Ok(Workload::Matmul { n: 64 }));
        assert_eq!(parse(b"sort 1000"), Ok(Workload::Sort { n: 1000 }));
        assert_eq!(
            parse(b"litmus iriw 500"),
            Ok(Workload::Litmus {
                test: LitmusTest::Iriw,
                iterations: 500
            })
        );
        assert_eq!(
            parse(b"probe read_miss 16"),
            Ok(Workload::Probe {
                kind: ProbeKind::ReadMiss,
                pages: 16,
                sharers: 0
            })
        );
        assert_eq!(
            parse(b"probe invalidate 200 3"),
            Ok(Workload::Probe {
                kind: ProbeKind::Invalidate,
                pages: 200,
                sharers: 3
            })
        );
        for kind in ProbeKind::ALL {
            let text = match kind {
                ProbeKind::Invalidate => format!("probe {} 7 1", kind.name()),
                _ => format!("probe {} 7", kind.name()),
            };
            let sharers = u32::from(kind == ProbeKind::Invalidate);
            assert_eq!(
                parse(text.as_bytes()),
                Ok(Workload::Probe {
                    kind,
                    pages: 7,
                    sharers
                }),
                "{text}"
            );
        }
        assert_eq!(
            parse(b"counter 18446744073709551615"),
            Ok(Workload::Counter {
                iterations: u64::MAX
            })
        );
    }

    #[test]
    fn unknown_workload_exits_with_2() {
        let err = parse(b"frobnicate 3").unwrap_err();
        assert_eq!(err, CmdlineError::UnknownWorkload(Word(b"frobnicate")));
        assert_eq!(err.exit_status(), 2);
        assert_eq!(err.to_string(), "unknown workload \"frobnicate\"");
    }

    #[test]
    fn bad_arguments_exit_with_1() {
        let cases: [&[u8]; 19] = [
            b"",
            b"   ",
            b"hello 1",
            b"counter",
            b"counter -1",
            b"counter +1",
            b"counter 18446744073709551616",
            b"matmul 0",
            b"sort 1 2",
            b"litmus xyz 10",
            b"litmus mp",
            b"probe",
            b"probe 16",
            b"probe read_miss",
            b"probe read_miss 0",
            b"probe read_miss 5 1",
            b"probe invalidate 5",
            b"probe invalidate 5 0",
            b"probe invalidate 5 16",
        ];
        for case in cases {
            let err = parse(case).unwrap_err();
            assert_eq!(err.exit_status(), 1, "{err}");
        }
    }

    #[test]
    fn messages_name_the_problem() {
        assert_eq!(
            parse(b"matmul x").unwrap_err().to_string(),
            "N \"x\" is not a decimal number"
        );
        assert_eq!(
            parse(b"matmul 0").unwrap_err().to_string(),
            "N must be between 1 and 16384, got 0"
        );
        assert_eq!(
            parse(b"counter 1 2 3").unwrap_err().to_string(),
            "counter takes ITERS, got 3 argument(s)"
        );
        assert_eq!(
            parse(b"litmus \xff 3").unwrap_err().to_string(),
            "unknown litmus test \"\\xff\" (expected mp, sb, lb or iriw)"
        );
        assert_eq!(
            parse(b"probe upgrad 3").unwrap_err().to_string(),
            "unknown probe kind \"upgrad\" (expected local, read_miss, write_miss, upgrade or invalidate)"
        );
        assert_eq!(
            parse(b"probe invalidate 3").unwrap_err().to_string(),
            "probe invalidate takes PAGES SHARERS, got 2 argument(s)"
        );
        assert_eq!(
            parse(b"probe invalidate 3 20").unwrap_err().to_string(),
            "SHARERS must be between 1 and 15, got 20"
        );
    }
}
