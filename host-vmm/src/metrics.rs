//! Counters of one node's VMM, and the `--stats-json` report.
//!
//! Counters are relaxed atomics bumped on the paths they describe; the report is taken
//! once at exit. Fault counts and latencies come from the memory module's own counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use vima::call::{Call, CALL_COUNT};
use vima::layout::MAX_VPS;
use vima::Status;

/// Counters of the VP side of a node.
#[derive(Debug)]
pub struct VmmStats {
    /// Per VP: time inside KVM_RUN (guest code, and faults it waits in), ns.
    vp_run_ns: Box<[AtomicU64]>,
    /// Per VP: time blocked in SpinWait (the guest's idle and lock waits), ns.
    vp_idle_ns: Box<[AtomicU64]>,
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

impl Default for VmmStats {
    fn default() -> Self {
        let per_vp = || (0..MAX_VPS).map(|_| AtomicU64::new(0)).collect();
        VmmStats {
            vp_run_ns: per_vp(),
            vp_idle_ns: per_vp(),
            calls: Default::default(),
            unknown_calls: AtomicU64::new(0),
            bad_calls: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            interrupts_delivered: AtomicU64::new(0),
            interrupts_dropped: AtomicU64::new(0),
            ipis_sent: AtomicU64::new(0),
            spin_wait_blocks: AtomicU64::new(0),
            stray_port_io: AtomicU64::new(0),
            unimplemented: Default::default(),
        }
    }
}

fn add_ns(per_vp: &[AtomicU64], vp: u32, time: Duration) {
    if let Some(slot) = per_vp.get(vp as usize) {
        let ns = u64::try_from(time.as_nanos()).unwrap_or(u64::MAX);
        slot.fetch_add(ns, Ordering::Relaxed);
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl VmmStats {
    /// VP `vp` spent `time` in KVM_RUN.
    pub fn add_run_time(&self, vp: u32, time: Duration) {
        add_ns(&self.vp_run_ns, vp, time);
    }
    /// VP `vp` spent `time` blocked in SpinWait.
    pub fn add_idle_time(&self, vp: u32, time: Duration) {
        add_ns(&self.vp_idle_ns, vp, time);
    }
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
            vp_time: (0..MAX_VPS)
                .filter_map(|vp| {
                    let (run, idle) = (get(&self.vp_run_ns[vp]), get(&self.vp_idle_ns[vp]));
                    (run != 0 || idle != 0).then(|| VpTime {
                        vp: u32::try_from(vp).unwrap_or(u32::MAX),
                        run_s: run as f64 / 1e9,
                        idle_s: idle as f64 / 1e9,
                    })
                })
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
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct VmmStatsSnapshot {
    /// Calls by name (only those made).
    pub calls: std::collections::BTreeMap<String, u64>,
    /// Run and idle time of each VP of this node that ran.
    pub vp_time: Vec<VpTime>,
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

/// Where one VP's time went.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct VpTime {
    /// The VP.
    pub vp: u32,
    /// Seconds inside KVM_RUN: guest code, and the faults it waited in.
    pub run_s: f64,
    /// Seconds blocked in SpinWait: idle, or waiting for a lock's word to change.
    pub idle_s: f64,
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
