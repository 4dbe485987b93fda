//! ViMA call dispatch: decode the registers, check every argument, do the call, put the
//! status and value back. Guest input never panics the VMM: each bad argument becomes a
//! [`Status`] in `rax` and a count in the statistics.

use std::time::{Duration, Instant};

use kvm_bindings::kvm_regs;
use vima::call::{Call, CallArgs, UncheckedRange, CONSOLE_WRITE_MAX, STREAM_WRITE_MAX};
use vima::interrupt::{is_external_vector, VECTOR_COUNT};
use vima::layout::PAGE_SIZE;
use vima::Status;

use super::interrupts;
use super::{RunState, VpControl, VpLocal};
use crate::memory::SpinWaitOutcome;
use crate::server::VirtualServer;

/// Longest SpinWait the VMM honours in one call; the guest re-checks and calls again.
const SPIN_WAIT_MAX: Duration = Duration::from_millis(100);

/// What the VP thread does after a call.
#[derive(Debug, PartialEq, Eq)]
pub enum CallOutcome {
    /// Write these registers back and run on.
    Resume,
    /// The VP stopped itself.
    Stop,
    /// The virtual server is over.
    ServerDone,
}

pub(super) enum Reply {
    Value(u64),
    /// A status other than Ok, with a value (HostError: the errno).
    Failed(Status, u64),
    Redirected,
    Stop,
    Exit,
}

/// Handles the call in `regs` (read at the `out` exit; `rip` is already past the `out`).
pub fn dispatch(
    server: &VirtualServer,
    vp: &VpControl,
    local: &mut VpLocal,
    regs: &mut kvm_regs,
) -> CallOutcome {
    let args = CallArgs {
        number: regs.rax,
        args: [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8],
    };
    let result = Call::decode(&args).and_then(|call| {
        server.stats.count_call(call);
        handle(server, vp, local, call, &args.args, regs)
    });
    match result {
        Ok(Reply::Value(value)) => {
            regs.rax = Status::Ok as u64;
            regs.rdx = value;
            CallOutcome::Resume
        }
        Ok(Reply::Failed(status, value)) => {
            regs.rax = status as u64;
            regs.rdx = value;
            CallOutcome::Resume
        }
        Ok(Reply::Redirected) => CallOutcome::Resume,
        Ok(Reply::Stop) => CallOutcome::Stop,
        Ok(Reply::Exit) => CallOutcome::ServerDone,
        Err(status) => {
            server.stats.count_bad_call(args.number, status);
            regs.rax = status as u64;
            regs.rdx = 0;
            CallOutcome::Resume
        }
    }
}

fn handle(
    server: &VirtualServer,
    vp: &VpControl,
    local: &mut VpLocal,
    call: Call,
    a: &[u64; 5],
    regs: &mut kvm_regs,
) -> Result<Reply, Status> {
    let logical = server.logical_bytes;
    match call {
        Call::ConsoleWrite => {
            if a[1] > CONSOLE_WRITE_MAX {
                return Err(Status::BadArgument);
            }
            let range = UncheckedRange::new(a[0], a[1]).check(logical, 1)?;
            let bytes = server.read_guest(range)?;
            server.console_write(vp.id, &bytes);
            Ok(Reply::Value(a[1]))
        }
        Call::ConfigRead => {
            let table = server.control.configuration().table();
            let len = a[1].min(table.len() as u64);
            if len > 0 {
                let range = UncheckedRange::new(a[0], len).check(logical, 1)?;
                let n = usize::try_from(len).expect("bounded by the table length");
                server.write_guest(range, &table[..n])?;
            }
            Ok(Reply::Value(table.len() as u64))
        }
        Call::SelfInfo => Ok(Reply::Value(u64::from(vp.id) | (u64::from(vp.node) << 32))),
        Call::VpStart => vp_start(server, vp, a),
        Call::VpStop => Ok(Reply::Stop),
        Call::Yield => {
            std::thread::yield_now();
            Ok(Reply::Value(0))
        }
        Call::SpinWait => spin_wait(server, vp, a),
        Call::IpiSend => {
            let target = u32::try_from(a[0]).map_err(|_| Status::BadVp)?;
            if !is_external_vector(a[1]) {
                return Err(Status::BadArgument);
            }
            let vector = u8::try_from(a[1]).expect("checked external vector");
            server.post_interrupt(target, vector)?;
            server.stats.count_ipi();
            Ok(Reply::Value(0))
        }
        Call::TimerSet => {
            if a[1] != 0 && !is_external_vector(a[0]) {
                return Err(Status::BadArgument);
            }
            let vector = u8::try_from(a[0]).unwrap_or(0);
            server.timers.set(vp.id, vector, a[1], a[2]);
            Ok(Reply::Value(0))
        }
        Call::IdtRegister => {
            let count = a[1];
            if count > VECTOR_COUNT as u64 {
                return Err(Status::BadArgument);
            }
            let range = UncheckedRange::new(a[0], count * 8).check(logical, 8)?;
            let bytes = server.read_guest(range)?;
            let mut idt = [0u64; VECTOR_COUNT];
            for (slot, chunk) in idt.iter_mut().zip(bytes.chunks_exact(8)) {
                *slot = u64::from_le_bytes(chunk.try_into().expect("chunks of 8"));
            }
            local.idt = idt;
            local.idt_registered = true;
            Ok(Reply::Value(0))
        }
        Call::IntrReturn => {
            interrupts::return_from_interrupt(server, vp, a[0], regs)?;
            Ok(Reply::Redirected)
        }
        Call::IntrPoll => Ok(Reply::Value(0)),
        Call::TimeRead => {
            let ns = server.started_at.elapsed().as_nanos();
            Ok(Reply::Value(u64::try_from(ns).unwrap_or(u64::MAX)))
        }
        Call::VsExit => {
            server.exit_everywhere(a[0]);
            Ok(Reply::Exit)
        }
        Call::StreamWrite => {
            if a[2] > STREAM_WRITE_MAX {
                return Err(Status::BadArgument);
            }
            let range = UncheckedRange::new(a[1], a[2]).check(logical, 1)?;
            let bytes = server.read_guest(range)?;
            server.stream_write(a[0], &bytes)?;
            Ok(Reply::Value(a[2]))
        }
        Call::ProgramRead => {
            let Some(desc) = server.program.as_ref() else {
                return Ok(Reply::Value(0));
            };
            let len = a[1].min(desc.len() as u64);
            if len > 0 {
                let range = UncheckedRange::new(a[0], len).check(logical, 1)?;
                let n = usize::try_from(len).expect("bounded by the descriptor length");
                server.write_guest(range, &desc[..n])?;
            }
            Ok(Reply::Value(desc.len() as u64))
        }
        Call::StreamRead => {
            use crate::devices::console_input::Input;
            if a[0] != vima::call::STREAM_STDIN || a[2] > vima::call::STREAM_READ_MAX {
                return Err(Status::BadArgument);
            }
            if a[2] == 0 {
                // A poll: would a read wait?
                return if server.console_input.ready() {
                    Ok(Reply::Value(0))
                } else {
                    Err(Status::NotReady)
                };
            }
            let len = usize::try_from(a[2]).expect("bounded by STREAM_READ_MAX");
            // Checked before anything is taken, so a bad buffer loses no input.
            UncheckedRange::new(a[1], a[2]).check(logical, 1)?;
            match server.console_input.take(len) {
                Input::Bytes(bytes) => {
                    let range = UncheckedRange::new(a[1], bytes.len() as u64).check(logical, 1)?;
                    server.write_guest(range, &bytes)?;
                    Ok(Reply::Value(bytes.len() as u64))
                }
                Input::EndOfFile => Ok(Reply::Value(0)),
                Input::NotYet => Err(Status::NotReady),
            }
        }
        Call::FileOpen
        | Call::FileStat
        | Call::FileRead
        | Call::FileReadDir
        | Call::FileClose
        | Call::FileReadLink => super::file_calls::handle(server, call, a),
        Call::SyscallUnimplemented => {
            const NAME_MAX: u64 = 32;
            if a[2] > NAME_MAX {
                return Err(Status::BadArgument);
            }
            let name = if a[2] == 0 {
                String::new()
            } else {
                let range = UncheckedRange::new(a[1], a[2]).check(logical, 1)?;
                String::from_utf8_lossy(&server.read_guest(range)?).into_owned()
            };
            server
                .stats
                .count_unimplemented_syscall(a[0], &name, a[3].max(1));
            Ok(Reply::Value(0))
        }
        Call::TermIoctl => {
            use crate::devices::terminal;
            let (len, to_terminal) = terminal::transfer(a[1]).ok_or(Status::BadArgument)?;
            let range = UncheckedRange::new(a[2], len as u64).check(logical, 1)?;
            let mut buf = if to_terminal {
                server.read_guest(range)?
            } else {
                vec![0u8; len]
            };
            if let Err(errno) = terminal::ioctl(a[0], a[1], &mut buf) {
                return Ok(Reply::Failed(
                    Status::HostError,
                    u64::try_from(errno).unwrap_or(25),
                ));
            }
            if !to_terminal {
                server.write_guest(range, &buf)?;
            }
            Ok(Reply::Value(0))
        }
        Call::MemDiscard => {
            if !a[0].is_multiple_of(PAGE_SIZE) || !a[1].is_multiple_of(PAGE_SIZE) {
                return Err(Status::BadArgument);
            }
            if a[1] == 0 {
                return Ok(Reply::Value(0));
            }
            let range = UncheckedRange::new(a[0], a[1]).check(logical, PAGE_SIZE)?;
            server.discard(range).map(Reply::Value)
        }
        Call::ConfigAck => config_ack(server, vp, a[0], a[1]),
        Call::SyscallEntrySet => {
            UncheckedRange::new(a[0], 1).check(logical, 1)?;
            local.syscall_entry = Some(a[0]);
            Ok(Reply::Value(0))
        }
    }
}

/// `ConfigAck`: records the acknowledgement (or refusal); parks a VP that is offline in
/// the epoch it acknowledged until a later configuration brings it back.
fn config_ack(
    server: &VirtualServer,
    vp: &VpControl,
    epoch: u64,
    refused: u64,
) -> Result<Reply, Status> {
    let epoch = u32::try_from(epoch).map_err(|_| Status::BadArgument)?;
    let config = server.control.configuration();
    config.acknowledge(vp.id, epoch, refused);
    // Read again after recording: a change made meanwhile is the guest's to see.
    if config.is_online(vp.id) || config.epoch() != epoch {
        return Ok(Reply::Value(u64::from(config.epoch())));
    }
    let parked = Instant::now();
    let back = config.park(vp.id, || server.is_finished());
    server.stats.add_idle_time(vp.id, parked.elapsed());
    match back {
        Some(epoch) => Ok(Reply::Value(u64::from(epoch))),
        None => Ok(Reply::Exit),
    }
}

fn vp_start(server: &VirtualServer, caller: &VpControl, a: &[u64; 5]) -> Result<Reply, Status> {
    let target = u32::try_from(a[0]).map_err(|_| Status::BadVp)?;
    let vp = server.vp(target).ok_or(Status::BadVp)?;
    if vp.id == caller.id {
        return Err(Status::VpBusy);
    }
    let logical = server.logical_bytes;
    UncheckedRange::new(a[1], 1).check(logical, 1)?;
    // The stack top may be the end of memory; the first push lands below it.
    UncheckedRange::new(a[2].wrapping_sub(16), 16).check(logical, 16)?;
    server.start_vp(
        vp,
        RunState::StartRequested {
            entry: a[1],
            stack_top: a[2],
            arg: a[3],
        },
    )?;
    Ok(Reply::Value(0))
}

fn spin_wait(server: &VirtualServer, vp: &VpControl, a: &[u64; 5]) -> Result<Reply, Status> {
    const WOKEN: u64 = 0;
    const CHANGED: u64 = 1;
    const INTERRUPT: u64 = 2;
    let range = UncheckedRange::new(a[0], 8).check(server.logical_bytes, 8)?;
    // A coherent read first: on a cluster it brings the page here (Shared), so the
    // DMA-window read and the watch below see the current copy.
    if server.read_guest_u64(range)? != a[1] {
        return Ok(Reply::Value(CHANGED));
    }
    // Reset before looking at pending: an interrupt posted after the look notifies
    // after the reset, so the wait returns at once.
    vp.wake.reset();
    if *vp.pending.lock().expect("pending lock") != 0 {
        return Ok(Reply::Value(INTERRUPT));
    }
    let deadline = Instant::now() + Duration::from_nanos(a[2]).min(SPIN_WAIT_MAX);
    let blocked = Instant::now();
    let outcome = server.memory.spin_wait(range, a[1], deadline, &vp.wake);
    server.stats.add_idle_time(vp.id, blocked.elapsed());
    let outcome = outcome.map_err(|_| Status::BadAddress)?;
    match outcome {
        SpinWaitOutcome::Differs => Ok(Reply::Value(CHANGED)),
        SpinWaitOutcome::TimedOut => Err(Status::TimedOut),
        SpinWaitOutcome::Woken => {
            server.stats.count_spin_wait_block();
            let pending = *vp.pending.lock().expect("pending lock") != 0;
            Ok(Reply::Value(if pending { INTERRUPT } else { WOKEN }))
        }
    }
}
