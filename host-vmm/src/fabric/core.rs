//! What both fabrics share: the intake of faults from userfaultfd (which VP took it,
//! which kind it is, when it started), the fault latencies and counters, the initial
//! page states, and the per-VP remote-fault counts the guest scheduler places threads
//! by. The software and offload fabrics differ only in who runs the coherence engine.
//!
//! Remote-fault counts: for every page fetched for VP `vp` from memory homed on node
//! `home`, the `u32` at [`vima::layout::remote_faults_addr`]`(vp, home)` in this node's
//! per-node region goes up by one (wrapping). The guest reads its VP's row at every
//! thread switch and charges the difference to the thread that ran (paper 4.9.5: the
//! memory component of the load vector). A page this node fetched again within
//! [`REFETCH_WINDOW`] is not counted: it bounces between writers on several nodes (a lock,
//! a barrier, a shared counter), and moving a thread does not make its faults go away,
//! whereas a thread's own data faults once per move and says where the thread belongs.
//! The counts are hints: a guest that scribbles on them only misplaces its own threads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nic_firmware::engine::{EngineError, HomeMap, LogicalPage};
use vima::call::UncheckedRange;
use vima::config::Config;
use vima::layout::{remote_faults_addr, MAX_NODES, MAX_VPS};
use vima::wire::{is_coherent_page, Body, Message};

use super::{FabricStats, FaultKindLatency};
use crate::memory::{FetchRequest, LogicalMemory, MemoryError, PageState};

/// A page fetched again within this time is write-shared, not a thread's own data.
pub const REFETCH_WINDOW: Duration = Duration::from_secs(1);
/// Slots of the table of recent fetches (direct mapped: a collision only counts a
/// fault that could have been left out).
const RECENT_SLOTS: usize = 1 << 16;
/// Bits of a slot that hold the time of the fetch, in [`TICK`]s (wrapping).
const TIME_BITS: u32 = 24;
const TIME_MASK: u64 = (1 << TIME_BITS) - 1;
/// The unit of the recent-fetch times.
const TICK: Duration = Duration::from_millis(10);

/// Why a fabric's core could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The configuration table does not parse.
    #[error("Failed to read the configuration table: {0:?}")]
    Config(vima::config::ConfigError),
    /// The configuration's memory ranges or this node's id are unusable.
    #[error("The configuration's memory ranges or node id are unusable: {0:?}")]
    Homes(EngineError),
    /// Setting the initial page states failed.
    #[error("Failed to set the initial page states")]
    Memory(#[from] MemoryError),
}

/// Parses a configuration table for a fabric.
pub fn parse_config(table: &[u8]) -> Result<Config<'_>, CoreError> {
    Config::parse(table).map_err(CoreError::Config)
}

/// A fault as the coherence engine needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intake {
    /// Logical page index.
    pub page: u64,
    /// An exclusive copy is needed.
    pub write: bool,
    /// The VP whose access faulted (the completion is steered to it).
    pub vp: u32,
}

/// One node's fault intake and fault statistics.
#[derive(Debug)]
pub struct FabricCore {
    node: u16,
    vs_id: u16,
    memory: std::sync::Arc<LogicalMemory>,
    homes: HomeMap,
    vp_of_thread: Mutex<HashMap<u32, u32>>,
    first_local_vp: u32,
    started: Mutex<HashMap<u64, (Instant, FaultKindLatency)>>,
    /// The last fetch of a page here, by slot: page index above TIME_BITS, time below.
    recent: Box<[AtomicU64]>,
    epoch: Instant,
    /// Nodes that left the cluster (bit `n` = node `n`): their silence is not a failure.
    departed: AtomicU32,
    /// Counters and latencies.
    pub stats: FabricStats,
}

impl FabricCore {
    /// The core of node `node` of virtual server `vs_id` (configuration `config`) over
    /// `memory`, with the pages homed elsewhere marked Invalid (pages homed here and the
    /// per-node region stay Exclusive).
    pub fn new(
        config: &Config<'_>,
        node: u32,
        vs_id: u16,
        local_vps: &[u32],
        memory: std::sync::Arc<LogicalMemory>,
    ) -> Result<Self, CoreError> {
        let homes = HomeMap::from_config(config).map_err(CoreError::Homes)?;
        let node = u16::try_from(node)
            .ok()
            .filter(|n| usize::from(*n) < config.node_count())
            .ok_or(CoreError::Homes(EngineError::BadNodeConfig))?;
        for page in 0..memory.page_count() {
            let home = homes.home_of(LogicalPage(page));
            if is_coherent_page(page) && home != Some(node) {
                memory.set_page_state(page, PageState::Invalid)?;
            }
        }
        Ok(Self {
            node,
            vs_id,
            memory,
            homes,
            vp_of_thread: Mutex::new(HashMap::new()),
            first_local_vp: local_vps.first().copied().unwrap_or(0),
            started: Mutex::new(HashMap::new()),
            recent: (0..RECENT_SLOTS)
                .map(|_| AtomicU64::new(u64::MAX))
                .collect(),
            epoch: Instant::now(),
            departed: AtomicU32::new(0),
            stats: FabricStats::default(),
        })
    }

    /// Node `node` left the cluster (after its leave): from now on its silence is not a
    /// failure and broadcasts skip it.
    pub fn forget_node(&self, node: u32) {
        if let Some(bit) = 1u32.checked_shl(node) {
            self.departed.fetch_or(bit, Ordering::Relaxed);
        }
    }

    /// True when `node` left the cluster.
    pub fn is_departed(&self, node: u32) -> bool {
        1u32.checked_shl(node)
            .is_some_and(|bit| self.departed.load(Ordering::Relaxed) & bit != 0)
    }

    /// This node.
    pub fn node(&self) -> u16 {
        self.node
    }

    /// The virtual server this node serves: messages naming another are refused.
    pub fn vs_id(&self) -> u16 {
        self.vs_id
    }

    /// A control message from this node to `node`.
    pub fn control_message<'b>(&self, node: u32, body: Body<'b>) -> Message<'b> {
        Message {
            vs_id: self.vs_id,
            src: self.node,
            dst: u16::try_from(node).expect("node ids are below MAX_NODES"),
            request_id: 0,
            body,
        }
    }

    /// The node's logical memory.
    pub fn memory(&self) -> &std::sync::Arc<LogicalMemory> {
        &self.memory
    }

    /// Records the calling thread as VP `vp`'s (faults are steered by thread).
    pub fn register_vp_thread(&self, vp: u32) {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let tid = u32::try_from(tid).unwrap_or(0);
        self.vp_of_thread.lock().expect("tid lock").insert(tid, vp);
    }

    /// The core's counters and latencies with `more` (an object) merged in.
    pub fn stats_json(&self, more: serde_json::Value) -> serde_json::Value {
        let mut value = serde_json::to_value(self.stats.snapshot()).expect("stats serialize");
        if let (Some(obj), serde_json::Value::Object(more)) = (value.as_object_mut(), more) {
            obj.extend(more);
        }
        value
    }

    /// Takes in a fault the local copy cannot serve: finds its VP, counts it by kind and
    /// for the guest's placement, and starts its latency clock.
    pub fn intake(&self, request: &FetchRequest) -> Intake {
        let vp = self
            .vp_of_thread
            .lock()
            .expect("tid lock")
            .get(&request.thread_id)
            .copied()
            .unwrap_or(self.first_local_vp);
        let kind = match (request.write, self.memory.page_state(request.page)) {
            (false, _) => FaultKindLatency::ReadMiss,
            (true, Ok(PageState::Shared)) => FaultKindLatency::Upgrade,
            (true, _) => FaultKindLatency::WriteMiss,
        };
        self.stats.count_fault(kind);
        self.count_remote_fault(vp, request.page);
        self.started
            .lock()
            .expect("latency lock")
            .entry(request.page)
            .or_insert((Instant::now(), kind));
        Intake {
            page: request.page,
            write: request.write,
            vp,
        }
    }

    /// A fetch ended: records its latency.
    pub fn page_ready(&self, page: u64) {
        if let Some((start, kind)) = self.started.lock().expect("latency lock").remove(&page) {
            self.stats.record(kind, start.elapsed());
        }
    }

    /// Notes a fetch of `page` now; true if this node fetched it within REFETCH_WINDOW.
    fn fetched_recently(&self, page: u64) -> bool {
        let ticks = |d: Duration| u64::try_from(d.as_millis() / TICK.as_millis()).unwrap_or(0);
        let now = ticks(self.epoch.elapsed()) & TIME_MASK;
        // Fibonacci hashing spreads neighbouring pages over the slots.
        let hash = page.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 48;
        let slot = &self.recent[usize::try_from(hash).unwrap_or(0) % RECENT_SLOTS];
        let old = slot.swap((page << TIME_BITS) | now, Ordering::Relaxed);
        old != u64::MAX
            && old >> TIME_BITS == page
            && now.wrapping_sub(old & TIME_MASK) & TIME_MASK < ticks(REFETCH_WINDOW)
    }

    fn count_remote_fault(&self, vp: u32, page: u64) {
        if self.fetched_recently(page) {
            return;
        }
        let Some(home) = self.homes.home_of(LogicalPage(page)) else {
            return;
        };
        if vp as usize >= MAX_VPS || usize::from(home) >= MAX_NODES {
            return;
        }
        let at = UncheckedRange::new(remote_faults_addr(vp, u32::from(home)), 4)
            .check(self.memory.size(), 4);
        if let Ok(at) = at {
            // Best effort: the per-node region is always inside logical memory.
            let _ = self.memory.add_u32(at, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{build_config_table, NodeConfig};

    fn two_node_core(node: u16) -> (FabricCore, u64) {
        let cfg = NodeConfig {
            node_id: u32::from(node),
            nodes: 2,
            vps_per_node: 1,
            mem_mib_per_node: 8,
            cmdline: "hello".into(),
        };
        let per_node = cfg.mem_mib_per_node << 20;
        let table = build_config_table(&cfg, 1_000_000).unwrap();
        let config = vima::config::Config::parse(&table).unwrap();
        let memory = LogicalMemory::new(cfg.logical_bytes()).unwrap();
        let core =
            FabricCore::new(&config, u32::from(node), 1, &[u32::from(node)], memory).unwrap();
        (core, per_node)
    }

    fn count(core: &FabricCore, vp: u32, home: u32) -> u32 {
        let addr = remote_faults_addr(vp, home);
        let at = UncheckedRange::new(addr & !7, 8)
            .check(core.memory.size(), 8)
            .unwrap();
        let word = core.memory.read_u64(at).unwrap();
        // Little endian: the counter at an address that is 8-aligned is the low half.
        let half = if addr & 4 == 0 { word } else { word >> 32 };
        u32::try_from(half & 0xffff_ffff).unwrap()
    }

    #[test]
    fn pages_homed_elsewhere_start_invalid() {
        let (core, per_node) = two_node_core(0);
        let page = |addr: u64| addr / vima::layout::PAGE_SIZE;
        assert_eq!(
            core.memory.page_state(page(per_node + 4096)).unwrap(),
            PageState::Invalid
        );
        assert_eq!(
            core.memory.page_state(page(per_node - 4096)).unwrap(),
            PageState::Exclusive
        );
    }

    #[test]
    fn intake_counts_each_fault_for_its_vp_and_home() {
        let (core, per_node) = two_node_core(0);
        // SAFETY: gettid has no preconditions.
        let tid = u32::try_from(unsafe { libc::gettid() }).unwrap();
        core.register_vp_thread(0);
        let remote_page = (per_node + 3 * 4096) / 4096;
        for (i, write) in [false, true, false].into_iter().enumerate() {
            let got = core.intake(&FetchRequest {
                page: remote_page + i as u64,
                write,
                thread_id: tid,
            });
            assert_eq!(
                got,
                Intake {
                    page: remote_page + i as u64,
                    write,
                    vp: 0
                }
            );
        }
        assert_eq!(count(&core, 0, 1), 3);
        assert_eq!(count(&core, 0, 0), 0);
        assert_eq!(count(&core, 1, 1), 0);
        // An unknown thread is charged to the first local VP.
        core.intake(&FetchRequest {
            page: 5,
            write: false,
            thread_id: tid.wrapping_add(1),
        });
        assert_eq!(count(&core, 0, 0), 1);
        let snap = core.stats.snapshot();
        assert_eq!(snap.remote_read_faults, 3);
        assert_eq!(snap.remote_write_faults, 1);
    }

    #[test]
    fn a_page_fetched_again_soon_is_counted_once() {
        let (core, per_node) = two_node_core(0);
        let page = per_node / 4096 + 1;
        for _ in 0..5 {
            core.intake(&FetchRequest {
                page,
                write: true,
                thread_id: 0,
            });
        }
        assert_eq!(count(&core, 0, 1), 1);
        assert_eq!(core.stats.snapshot().remote_write_faults, 5);
    }

    #[test]
    fn page_ready_records_one_latency_per_started_fetch() {
        let (core, per_node) = two_node_core(1);
        let page = 9;
        assert!(page < per_node / 4096);
        core.intake(&FetchRequest {
            page,
            write: false,
            thread_id: 0,
        });
        core.page_ready(page);
        core.page_ready(page);
        assert_eq!(
            core.stats
                .snapshot()
                .fault_latency_by_kind_us
                .read_miss
                .count,
            1
        );
    }
}
