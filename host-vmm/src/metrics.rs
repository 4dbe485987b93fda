//! Counters of one node's VMM, and the `--stats-json` report.
//!
//! Counters are relaxed atomics bumped on the paths they describe; the report is taken
//! once at exit. Fault counts and latencies come from the memory module's own counters.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use vima::call::{Call, CALL_COUNT};
use vima::Status;

/// Counters of the VP side of a node.
#[derive(Debug, Default)]
pub struct VmmStats {
    calls: [AtomicU64; CALL_COUNT],
    unknown_calls: AtomicU64,
    bad_calls: AtomicU64,
    timeouts: AtomicU64,
    interrupts_delivered: AtomicU64,
    interrupts_dropped: AtomicU64,
    ipis_sent: AtomicU64,
    spin_wait_blocks: AtomicU64,
    stray_port_io: AtomicU64,
    unimplemented: std::sync::Mutex<std::collections::BTreeMap<u64, (String, u64)>>,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl VmmStats {
    /// One call of `call`.
    pub fn count_call(&self, call: Call) {
        bump(&self.calls[call as usize]);
    }
    /// A call that returned an error status.
    pub fn count_bad_call(&self, _number: u64, status: Status) {
        match status {
            Status::UnknownCall => bump(&self.unknown_calls),
            Status::TimedOut => bump(&self.timeouts),
            _ => bump(&self.bad_calls),
        }
    }
    /// An interrupt entered the guest.
    pub fn count_interrupt_delivered(&self) {
        bump(&self.interrupts_delivered);
    }
    /// A pending vector had no handler and was dropped.
    pub fn count_interrupt_dropped(&self) {
        bump(&self.interrupts_dropped);
    }
    /// An IPI was sent.
    pub fn count_ipi(&self) {
        bump(&self.ipis_sent);
    }
    /// A SpinWait blocked.
    pub fn count_spin_wait_block(&self) {
        bump(&self.spin_wait_blocks);
    }
    /// Port I/O to a port other than the ViMA port.
    pub fn count_stray_port(&self, _port: u16) {
        bump(&self.stray_port_io);
    }

    /// A Linux system call the guest kernel answered with ENOSYS.
    pub fn count_unimplemented_syscall(&self, number: u64, name: &str, count: u64) {
        let mut map = self.unimplemented.lock().expect("stats lock");
        let entry = map.entry(number).or_insert_with(|| (name.to_string(), 0));
        entry.1 = entry.1.saturating_add(count);
    }

    /// A plain copy for the report.
    pub fn snapshot(&self) -> VmmStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        VmmStatsSnapshot {
            calls: Call::ALL
                .iter()
                .map(|call| (call.name().to_string(), get(&self.calls[*call as usize])))
                .filter(|(_, n)| *n > 0)
                .collect(),
            unknown_calls: get(&self.unknown_calls),
            bad_calls: get(&self.bad_calls),
            spin_wait_timeouts: get(&self.timeouts),
            interrupts_delivered: get(&self.interrupts_delivered),
            interrupts_dropped: get(&self.interrupts_dropped),
            ipis_sent: get(&self.ipis_sent),
            spin_wait_blocks: get(&self.spin_wait_blocks),
            stray_port_io: get(&self.stray_port_io),
            unimplemented_syscalls: self
                .unimplemented
                .lock()
                .expect("stats lock")
                .iter()
                .map(|(&number, (name, count))| UnimplementedSyscall {
                    number,
                    name: name.clone(),
                    count: *count,
                })
                .collect(),
        }
    }
}

/// What `--stats-json` reports for the VP side of a node.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct VmmStatsSnapshot {
    /// Calls by name (only those made).
    pub calls: std::collections::BTreeMap<String, u64>,
    /// Calls with an unknown number.
    pub unknown_calls: u64,
    /// Calls rejected for a bad argument.
    pub bad_calls: u64,
    /// SpinWaits that timed out.
    pub spin_wait_timeouts: u64,
    /// Interrupts delivered into the guest.
    pub interrupts_delivered: u64,
    /// Pending interrupts dropped for want of a handler.
    pub interrupts_dropped: u64,
    /// IPIs sent.
    pub ipis_sent: u64,
    /// SpinWaits that blocked.
    pub spin_wait_blocks: u64,
    /// `in`/`out` to ports other than the ViMA port.
    pub stray_port_io: u64,
    /// A Linux program's system calls that got ENOSYS, by number.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unimplemented_syscalls: Vec<UnimplementedSyscall>,
}

/// One system call a Linux program made that the guest kernel does not implement.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct UnimplementedSyscall {
    /// Its number.
    pub number: u64,
    /// Its name ("" when the guest kernel does not know it).
    pub name: String,
    /// How many times.
    pub count: u64,
}
