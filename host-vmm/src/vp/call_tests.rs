//! Every ViMA call and its bad arguments, driven through [`calls::dispatch`] with plain
//! registers on a server built without KVM. Expected values come from the call's
//! definition (vima::call), not from the dispatcher.

use kvm_bindings::kvm_regs;
use vima::call::{Call, UncheckedRange, CONSOLE_WRITE_MAX, STREAM_STDOUT, STREAM_WRITE_MAX};
use vima::interrupt::VECTOR_COUNT;
use vima::layout::PAGE_SIZE;
use vima::wire::PAGE_BYTES;
use vima::Status;

use super::calls::{self, CallOutcome};
use super::{RunState, VpLocal};
use crate::server::testing::single_node;
use crate::server::{Outcome, VirtualServer};

/// A scratch address in guest memory (above the per-node region and page 0).
const BUF: u64 = 0x10_0000;

struct Vp<'s> {
    server: &'s VirtualServer,
    id: u32,
    local: VpLocal,
    regs: kvm_regs,
}

impl<'s> Vp<'s> {
    fn new(server: &'s VirtualServer, id: u32) -> Self {
        Vp {
            server,
            id,
            local: VpLocal::default(),
            regs: kvm_regs::default(),
        }
    }

    /// Makes call `number` with `args`; returns the outcome, the status and the value.
    fn call_raw(&mut self, number: u64, args: [u64; 5]) -> (CallOutcome, u64, u64) {
        self.regs.rax = number;
        self.regs.rdi = args[0];
        self.regs.rsi = args[1];
        self.regs.rdx = args[2];
        self.regs.r10 = args[3];
        self.regs.r8 = args[4];
        let control = self.server.vp(self.id).unwrap().clone();
        let outcome = calls::dispatch(self.server, &control, &mut self.local, &mut self.regs);
        (outcome, self.regs.rax, self.regs.rdx)
    }

    /// Makes `call`; `Ok(value)` or the status it failed with.
    fn call(&mut self, call: Call, args: [u64; 5]) -> Result<u64, Status> {
        let (outcome, status, value) = self.call_raw(call as u64, args);
        assert_eq!(outcome, CallOutcome::Resume, "{call:?} resumes");
        if status == Status::Ok as u64 {
            Ok(value)
        } else {
            Err(status_of(status))
        }
    }
}

fn status_of(raw: u64) -> Status {
    [
        Status::Ok,
        Status::UnknownCall,
        Status::BadAddress,
        Status::BadVp,
        Status::BadArgument,
        Status::VpBusy,
        Status::TimedOut,
        Status::NotReady,
        Status::HostError,
    ]
    .into_iter()
    .find(|s| *s as u64 == raw)
    .unwrap_or_else(|| panic!("status {raw} is not a ViMA status"))
}

fn write(server: &VirtualServer, addr: u64, bytes: &[u8]) {
    let range = UncheckedRange::new(addr, bytes.len() as u64)
        .check(server.logical_bytes, 1)
        .unwrap();
    server.write_guest(range, bytes).unwrap();
}

fn read(server: &VirtualServer, addr: u64, len: u64) -> Vec<u8> {
    let range = UncheckedRange::new(addr, len)
        .check(server.logical_bytes, 1)
        .unwrap();
    server.read_guest(range).unwrap()
}

fn bad_calls(server: &VirtualServer) -> u64 {
    server.stats.snapshot().bad_calls
}

#[test]
fn console_write_prints_whole_lines_and_refuses_long_or_outside_buffers() {
    let server = single_node(1);
    let mut vp = Vp::new(&server, 0);
    write(&server, BUF, b"hello\nwor");
    assert_eq!(vp.call(Call::ConsoleWrite, [BUF, 9, 0, 0, 0]), Ok(9));
    assert_eq!(server.control.console().lines(), vec!["hello"]);
    let too_long = CONSOLE_WRITE_MAX + 1;
    assert_eq!(
        vp.call(Call::ConsoleWrite, [BUF, too_long, 0, 0, 0]),
        Err(Status::BadArgument)
    );
    let end = server.logical_bytes;
    assert_eq!(
        vp.call(Call::ConsoleWrite, [end - 4, 8, 0, 0, 0]),
        Err(Status::BadAddress)
    );
    // Page 0 is never a buffer.
    assert_eq!(
        vp.call(Call::ConsoleWrite, [0, 4, 0, 0, 0]),
        Err(Status::BadAddress)
    );
    assert_eq!(bad_calls(&server), 3);
}

#[test]
fn an_unknown_call_number_is_refused_and_counted() {
    let server = single_node(1);
    let mut vp = Vp::new(&server, 0);
    let (outcome, status, value) = vp.call_raw(Call::ALL.len() as u64, [0; 5]);
    assert_eq!(outcome, CallOutcome::Resume);
    assert_eq!((status, value), (Status::UnknownCall as u64, 0));
    let (_, status, _) = vp.call_raw(u64::MAX, [0; 5]);
    assert_eq!(status, Status::UnknownCall as u64);
    assert_eq!(server.stats.snapshot().unknown_calls, 2);
}

#[test]
fn config_read_copies_at_most_the_buffer_and_returns_the_table_length() {
    let server = single_node(2);
    let mut vp = Vp::new(&server, 0);
    let table = server.control.configuration().table().to_vec();
    let len = table.len() as u64;
    assert_eq!(vp.call(Call::ConfigRead, [0, 0, 0, 0, 0]), Ok(len));
    assert_eq!(
        vp.call(Call::ConfigRead, [BUF, len + 100, 0, 0, 0]),
        Ok(len)
    );
    assert_eq!(read(&server, BUF, len), table);
    // A short buffer gets the table's start, and the full length.
    write(&server, BUF, &vec![0u8; table.len()]);
    assert_eq!(vp.call(Call::ConfigRead, [BUF, 16, 0, 0, 0]), Ok(len));
    assert_eq!(read(&server, BUF, 16), table[..16]);
    assert_eq!(read(&server, BUF + 16, 1), [0]);
    let parsed = vima::config::Config::parse(&table).unwrap();
    assert_eq!(parsed.vp_count(), 2);
}

#[test]
fn self_info_is_the_vp_and_its_node() {
    let server = single_node(3);
    assert_eq!(Vp::new(&server, 2).call(Call::SelfInfo, [0; 5]), Ok(2));
}

#[test]
fn vp_start_checks_the_target_and_its_entry_state() {
    let server = single_node(2);
    let mut vp = Vp::new(&server, 0);
    let (entry, stack) = (0x20_0000, 0x30_0000);
    assert_eq!(
        vp.call(Call::VpStart, [0, entry, stack, 7, 0]),
        Err(Status::VpBusy)
    );
    assert_eq!(
        vp.call(Call::VpStart, [9, entry, stack, 7, 0]),
        Err(Status::BadVp)
    );
    assert_eq!(
        vp.call(Call::VpStart, [1, server.logical_bytes, stack, 7, 0]),
        Err(Status::BadAddress)
    );
    assert_eq!(
        vp.call(Call::VpStart, [1, entry, 8, 7, 0]),
        Err(Status::BadAddress)
    );
    assert_eq!(
        *server.vp(1).unwrap().state.lock().unwrap(),
        RunState::Stopped
    );
    assert_eq!(vp.call(Call::VpStart, [1, entry, stack, 7, 0]), Ok(0));
    assert_eq!(
        *server.vp(1).unwrap().state.lock().unwrap(),
        RunState::StartRequested {
            entry,
            stack_top: stack,
            arg: 7
        }
    );
    assert_eq!(
        vp.call(Call::VpStart, [1, entry, stack, 8, 0]),
        Err(Status::VpBusy)
    );
    // The end of memory is a valid stack top: the first push lands below it.
    let server = single_node(2);
    let end = server.logical_bytes;
    assert_eq!(
        Vp::new(&server, 0).call(Call::VpStart, [1, entry, end, 0, 0]),
        Ok(0)
    );
}

#[test]
fn vp_stop_and_vs_exit_end_the_vp_and_the_server() {
    let server = single_node(1);
    let mut vp = Vp::new(&server, 0);
    assert_eq!(
        vp.call_raw(Call::VpStop as u64, [0; 5]).0,
        CallOutcome::Stop
    );
    assert!(!server.is_finished());
    assert_eq!(
        vp.call_raw(Call::VsExit as u64, [300, 0, 0, 0, 0]).0,
        CallOutcome::ServerDone
    );
    assert_eq!(server.wait(), Outcome::Exited(300));
    // The exit status is the low byte, as a process's.
    assert_eq!(server.wait().exit_code(), 300 & 0xff);
}

#[test]
fn ipi_send_posts_external_vectors_to_existing_vps() {
    let server = single_node(2);
    let mut vp = Vp::new(&server, 0);
    assert_eq!(vp.call(Call::IpiSend, [1, 0x31, 0, 0, 0]), Ok(0));
    assert_eq!(*server.vp(1).unwrap().pending.lock().unwrap(), 1 << 0x31);
    for vector in [0, 14, 31, VECTOR_COUNT as u64, u64::MAX] {
        assert_eq!(
            vp.call(Call::IpiSend, [1, vector, 0, 0, 0]),
            Err(Status::BadArgument),
            "vector {vector}"
        );
    }
    assert_eq!(
        vp.call(Call::IpiSend, [2, 0x31, 0, 0, 0]),
        Err(Status::BadVp)
    );
    assert_eq!(
        vp.call(Call::IpiSend, [1 << 32, 0x31, 0, 0, 0]),
        Err(Status::BadVp)
    );
    assert_eq!(*server.vp(1).unwrap().pending.lock().unwrap(), 1 << 0x31);
    assert_eq!(server.stats.snapshot().ipis_sent, 1);
}

#[test]
fn timer_set_needs_an_external_vector_unless_it_disarms() {
    let server = single_node(1);
    let mut vp = Vp::new(&server, 0);
    assert_eq!(
        vp.call(Call::TimerSet, [14, 1000, 0, 0, 0]),
        Err(Status::BadArgument)
    );
    assert_eq!(vp.call(Call::TimerSet, [0x32, 1_000_000, 0, 0, 0]), Ok(0));
    // A zero delay disarms, whatever the vector.
    assert_eq!(vp.call(Call::TimerSet, [999, 0, 0, 0, 0]), Ok(0));
}

#[test]
fn idt_register_reads_the_table_from_guest_memory() {
    let server = single_node(1);
    let mut vp = Vp::new(&server, 0);
    let handlers: Vec<u8> = (0..4u64)
        .flat_map(|i| (0x40_0000 + i).to_le_bytes())
        .collect();
    write(&server, BUF, &handlers);
    assert_eq!(
        vp.call(Call::IdtRegister, [BUF, VECTOR_COUNT as u64 + 1, 0, 0, 0]),
        Err(Status::BadArgument)
    );
    assert_eq!(
        vp.call(Call::IdtRegister, [BUF + 4, 4, 0, 0, 0]),
        Err(Status::BadAddress)
    );
    assert!(!vp.local.idt_registered);
    assert_eq!(vp.call(Call::IdtRegister, [BUF, 4, 0, 0, 0]), Ok(0));
    assert!(vp.local.idt_registered);
    assert_eq!(
        vp.local.idt[..5],
        [0x40_0000, 0x40_0001, 0x40_0002, 0x40_0003, 0]
    );
}

#[test]
fn time_read_counts_up_from_the_start() {
    let server = single_node(1);
    let mut vp = Vp::new(&server, 0);
    let first = vp.call(Call::TimeRead, [0; 5]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2));
    let second = vp.call(Call::TimeRead, [0; 5]).unwrap();
    assert!(second >= first + 2_000_000, "{first} then {second}");
}

#[test]
fn stream_calls_refuse_unknown_streams_and_long_buffers() {
    let server = single_node(1);
    let mut vp = Vp::new(&server, 0);
    assert_eq!(
        vp.call(Call::StreamWrite, [7, BUF, 1, 0, 0]),
        Err(Status::BadArgument)
    );
    assert_eq!(
        vp.call(
            Call::StreamWrite,
            [STREAM_STDOUT, BUF, STREAM_WRITE_MAX + 1, 0, 0]
        ),
        Err(Status::BadArgument)
    );
    assert_eq!(
        vp.call(Call::StreamRead, [STREAM_STDOUT, BUF, 1, 0, 0]),
        Err(Status::BadArgument)
    );
    assert_eq!(
        vp.call(
            Call::StreamRead,
            [0, BUF, vima::call::STREAM_READ_MAX + 1, 0, 0]
        ),
        Err(Status::BadArgument)
    );
}

#[test]
fn program_read_without_a_program_is_empty_and_file_calls_have_no_root() {
    let server = single_node(1);
    let mut vp = Vp::new(&server, 0);
    assert_eq!(vp.call(Call::ProgramRead, [BUF, 64, 0, 0, 0]), Ok(0));
    write(&server, BUF, b"/etc/hostname\0");
    let (_, status, errno) = vp.call_raw(Call::FileOpen as u64, [BUF, 13, 0, 0, 0]);
    assert_eq!(
        (status, errno),
        (Status::HostError as u64, libc::ENOENT as u64)
    );
    let (_, status, errno) = vp.call_raw(Call::FileRead as u64, [3, BUF, 1, 0, 0]);
    assert_eq!(
        (status, errno),
        (Status::HostError as u64, libc::EBADF as u64)
    );
}

#[test]
fn syscall_entry_set_keeps_an_address_inside_memory_for_the_vp_thread() {
    let server = single_node(1);
    let mut vp = Vp::new(&server, 0);
    assert_eq!(
        vp.call(Call::SyscallEntrySet, [server.logical_bytes, 0, 0, 0, 0]),
        Err(Status::BadAddress)
    );
    assert_eq!(vp.local.syscall_entry, None);
    assert_eq!(
        vp.call(Call::SyscallEntrySet, [0x20_0000, 0, 0, 0, 0]),
        Ok(0)
    );
    assert_eq!(vp.local.syscall_entry, Some(0x20_0000));
}

#[test]
fn mem_discard_zeroes_whole_pages_only() {
    let server = single_node(1);
    let mut vp = Vp::new(&server, 0);
    write(&server, BUF, &[0xab; 3 * PAGE_BYTES]);
    assert_eq!(
        vp.call(Call::MemDiscard, [BUF + 8, PAGE_SIZE, 0, 0, 0]),
        Err(Status::BadArgument)
    );
    assert_eq!(
        vp.call(Call::MemDiscard, [BUF, 100, 0, 0, 0]),
        Err(Status::BadArgument)
    );
    assert_eq!(vp.call(Call::MemDiscard, [BUF, 0, 0, 0, 0]), Ok(0));
    assert_eq!(
        vp.call(Call::MemDiscard, [server.logical_bytes, PAGE_SIZE, 0, 0, 0]),
        Err(Status::BadAddress)
    );
    // One node holds every page: all of them are freed without a coherent access.
    assert_eq!(
        vp.call(Call::MemDiscard, [BUF + PAGE_SIZE, PAGE_SIZE, 0, 0, 0]),
        Ok(1)
    );
    assert_eq!(
        read(&server, BUF + PAGE_SIZE, PAGE_SIZE),
        vec![0; PAGE_BYTES]
    );
    assert_eq!(read(&server, BUF, PAGE_SIZE), vec![0xab; PAGE_BYTES]);
    assert_eq!(
        read(&server, BUF + 2 * PAGE_SIZE, PAGE_SIZE),
        vec![0xab; PAGE_BYTES]
    );
}

#[test]
fn spin_wait_returns_changed_interrupt_or_timed_out() {
    const CHANGED: u64 = 1;
    const INTERRUPT: u64 = 2;
    let server = single_node(1);
    let mut vp = Vp::new(&server, 0);
    write(&server, BUF, &5u64.to_le_bytes());
    assert_eq!(
        vp.call(Call::SpinWait, [BUF, 4, 1_000_000, 0, 0]),
        Ok(CHANGED)
    );
    assert_eq!(
        vp.call(Call::SpinWait, [BUF + 4, 5, 1_000, 0, 0]),
        Err(Status::BadAddress)
    );
    assert_eq!(
        vp.call(Call::SpinWait, [BUF, 5, 1_000_000, 0, 0]),
        Err(Status::TimedOut)
    );
    server.post_interrupt(0, 0x30).unwrap();
    assert_eq!(
        vp.call(Call::SpinWait, [BUF, 5, 1_000_000, 0, 0]),
        Ok(INTERRUPT)
    );
}

#[test]
fn unimplemented_syscalls_are_counted_by_number_and_name() {
    let server = single_node(1);
    let mut vp = Vp::new(&server, 0);
    write(&server, BUF, b"io_uring_setup");
    assert_eq!(
        vp.call(Call::SyscallUnimplemented, [425, BUF, 14, 2, 0]),
        Ok(0)
    );
    assert_eq!(
        vp.call(Call::SyscallUnimplemented, [425, BUF, 33, 1, 0]),
        Err(Status::BadArgument)
    );
    let unimplemented = server.stats.snapshot().unimplemented_syscalls;
    assert_eq!(unimplemented.len(), 1);
    assert_eq!(
        (
            unimplemented[0].number,
            unimplemented[0].name.as_str(),
            unimplemented[0].count
        ),
        (425, "io_uring_setup", 2)
    );
}

#[test]
fn term_ioctl_refuses_requests_it_does_not_know() {
    let server = single_node(1);
    let mut vp = Vp::new(&server, 0);
    assert_eq!(
        vp.call(Call::TermIoctl, [1, 0xdead, BUF, 0, 0]),
        Err(Status::BadArgument)
    );
}

#[test]
fn every_call_is_counted_by_name() {
    let server = single_node(1);
    let mut vp = Vp::new(&server, 0);
    vp.call(Call::SelfInfo, [0; 5]).unwrap();
    vp.call(Call::SelfInfo, [0; 5]).unwrap();
    let _ = vp.call(Call::IpiSend, [0, 3, 0, 0, 0]);
    let calls = server.stats.snapshot().calls;
    assert_eq!(calls.get(Call::SelfInfo.name()), Some(&2));
    assert_eq!(calls.get(Call::IpiSend.name()), Some(&1));
}

/// Node 0's part with VPs `mask` offline and its memory as it is.
fn offline(
    config: &crate::server::reconfig::Configuration,
    mask: u64,
) -> crate::server::reconfig::NodePart {
    crate::server::reconfig::NodePart {
        offline: mask,
        mem_mib: config.mem_mib(0),
    }
}

#[test]
fn config_ack_returns_the_current_epoch_to_an_online_vp() {
    let server = single_node(2);
    let mut vp = Vp::new(&server, 1);
    assert_eq!(vp.call(Call::ConfigAck, [0, 0, 0, 0, 0]), Ok(0));
    // An epoch past u32 is no epoch.
    assert_eq!(
        vp.call(Call::ConfigAck, [1 << 32, 0, 0, 0, 0]),
        Err(Status::BadArgument)
    );
    let config = server.control.configuration();
    assert!(config.apply_node(0, 1, offline(config, 0)).unwrap());
    // A stale acknowledgement learns the new epoch and records nothing.
    assert_eq!(vp.call(Call::ConfigAck, [0, 0, 0, 0, 0]), Ok(1));
    let short = std::time::Duration::from_millis(10);
    assert_eq!(config.wait_acks(&[1], 1, short, || false), Err(vec![1]));
    assert_eq!(vp.call(Call::ConfigAck, [1, 0, 0, 0, 0]), Ok(1));
    assert_eq!(config.wait_acks(&[1], 1, short, || false), Ok(vec![]));
    // A refusal is recorded with its reason.
    assert!(config.apply_node(0, 2, offline(config, 0)).unwrap());
    assert_eq!(vp.call(Call::ConfigAck, [2, 1, 0, 0, 0]), Ok(2));
    assert_eq!(config.wait_acks(&[1], 2, short, || false), Ok(vec![(1, 1)]));
}

#[test]
fn config_ack_parks_an_offline_vp_until_it_is_online_again() {
    let server = std::sync::Arc::new(single_node(2));
    let config = server.control.configuration();
    assert!(config.apply_node(0, 1, offline(config, 1 << 1)).unwrap());
    let parked = {
        let server = server.clone();
        std::thread::spawn(move || Vp::new(&server, 1).call(Call::ConfigAck, [1, 0, 0, 0, 0]))
    };
    let long = std::time::Duration::from_secs(10);
    assert_eq!(config.wait_acks(&[1], 1, long, || false), Ok(vec![]));
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(!parked.is_finished(), "an offline VP stays in ConfigAck");
    assert!(config.apply_node(0, 2, offline(config, 0)).unwrap());
    assert_eq!(parked.join().unwrap(), Ok(2));
    // Parked again, the end of the server ends the call (and the VP).
    assert!(config.apply_node(0, 3, offline(config, 1 << 1)).unwrap());
    server.finish(Outcome::AllStopped);
    let (outcome, _, _) = Vp::new(&server, 1).call_raw(Call::ConfigAck as u64, [3, 0, 0, 0, 0]);
    assert_eq!(outcome, CallOutcome::ServerDone);
}
