//! One step of the coherence engine at a home node, with no I/O: what the host thread (or
//! the NIC core) spends deciding, as opposed to moving bytes.
//!
//! - `read_miss_at_home`: a `ReadReq` from node 1 for a page the home owns Exclusive ->
//!   downgrade its own copy and send the page (one step, the page free again after it).
//! - `invalidate_fanout_3_sharers`: the home's own VP writes a page Shared on nodes 1, 2
//!   and 3 -> three `Invalidate`s at once, then the three acks arrive and the fault is
//!   granted (the `invalidate/3` case of `cvmm bench fault-latency`, minus the wire).
//!
//! Each engine step touches a fresh page, so no step sees a state an earlier one left:
//! batches of pages are prepared untimed (`iter_custom`), and a new engine is built when
//! a batch has used its pages. Actions go to a sink that only counts them.
//!
//! Run: `cargo bench -p nic-firmware --bench engine_step`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use nic_firmware::engine::{
    Action, DirEntry, Engine, EngineConfig, EngineStorage, HomeMap, HomeRequest, LocalFault,
    LogicalPage, PageState, PendingFault,
};
use vima::wire::{Body, Message};

const VS_ID: u16 = 1;
const NODES: u16 = 4;
/// First page of the home's range (above the per-node region and the boot stack).
const FIRST_PAGE: u64 = 0x200;
/// Pages per engine: one per step of a batch.
const PAGES: u64 = 4096;

/// Tables of one home engine (node 0 is home of every page).
struct Tables {
    local: Vec<PageState>,
    directory: Vec<DirEntry>,
    pending: Vec<PendingFault>,
    requests: Vec<HomeRequest>,
    homes: HomeMap,
}

impl Tables {
    fn new() -> Self {
        let mut homes = HomeMap::new();
        homes
            .add(LogicalPage(FIRST_PAGE), PAGES, 0)
            .expect("one home range");
        let limit = usize::try_from(homes.page_limit()).expect("small");
        Self {
            local: vec![PageState::Invalid; limit],
            directory: vec![DirEntry::default(); limit],
            pending: vec![PendingFault::default(); 4],
            requests: vec![HomeRequest::default(); 64],
            homes,
        }
    }

    fn engine(&mut self) -> Engine<'_> {
        let config = EngineConfig {
            vs_id: VS_ID,
            node: 0,
            node_count: NODES,
        };
        let storage = EngineStorage {
            local: &mut self.local,
            directory: &mut self.directory,
            pending: &mut self.pending,
            requests: &mut self.requests,
        };
        Engine::new(config, self.homes, storage).expect("valid engine")
    }
}

fn message(src: u16, request_id: u64, body: Body<'static>) -> Message<'static> {
    Message {
        vs_id: VS_ID,
        src,
        dst: 0,
        request_id,
        body,
    }
}

/// Counts actions, keeping the engine's output observable.
#[derive(Default)]
struct CountingSink {
    actions: u64,
    /// Request ids of the `Invalidate`s sent, by destination node.
    invalidations: [u64; NODES as usize],
    done: u64,
}

impl nic_firmware::engine::Actions for CountingSink {
    fn push(&mut self, action: Action<'_>) {
        self.actions += 1;
        match action {
            Action::Send(msg) => {
                if let Body::Invalidate { .. } = msg.body {
                    if let Some(slot) = self.invalidations.get_mut(usize::from(msg.dst)) {
                        *slot = msg.request_id;
                    }
                }
            }
            Action::FaultDone { .. } => self.done += 1,
            other => {
                black_box(other);
            }
        }
    }
}

fn read_miss_at_home(c: &mut Criterion) {
    c.bench_function("engine_step/read_miss_at_home", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let mut tables = Tables::new();
                let mut home = tables.engine();
                let batch = (iters - done).min(PAGES);
                let requests: Vec<Message<'static>> = (0..batch)
                    .map(|i| {
                        message(
                            1,
                            i + 1,
                            Body::ReadReq {
                                page: FIRST_PAGE + i,
                            },
                        )
                    })
                    .collect();
                let mut sink = CountingSink::default();
                let start = Instant::now();
                for request in &requests {
                    home.receive(black_box(request), &mut sink)
                        .expect("the home serves the read");
                }
                total += start.elapsed();
                // Downgrade + SendPage per request.
                assert_eq!(sink.actions, 2 * batch, "unexpected actions");
                done += batch;
            }
            total
        });
    });
}

fn invalidate_fanout(c: &mut Criterion) {
    c.bench_function("engine_step/invalidate_fanout_3_sharers", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let mut tables = Tables::new();
                let mut home = tables.engine();
                let batch = (iters - done).min(PAGES);
                // Untimed: nodes 1..=3 read every page of the batch (Shared there).
                let mut setup = CountingSink::default();
                let mut rid = 1;
                for i in 0..batch {
                    for sharer in 1..NODES {
                        let read = message(
                            sharer,
                            rid,
                            Body::ReadReq {
                                page: FIRST_PAGE + i,
                            },
                        );
                        home.receive(&read, &mut setup).expect("read served");
                        rid += 1;
                    }
                }
                let mut sink = CountingSink::default();
                let start = Instant::now();
                for i in 0..batch {
                    let page = FIRST_PAGE + i;
                    let fault = LocalFault {
                        page: LogicalPage(page),
                        write: true,
                        vp: 0,
                    };
                    home.fault(black_box(fault), &mut sink)
                        .expect("the write starts");
                    for sharer in 1..NODES {
                        let id = sink.invalidations[usize::from(sharer)];
                        let ack = message(sharer, id, Body::InvalidateAck { page });
                        home.receive(black_box(&ack), &mut sink).expect("ack taken");
                    }
                }
                total += start.elapsed();
                assert_eq!(sink.done, batch, "every write was granted");
                done += batch;
            }
            total
        });
    });
}

criterion_group!(benches, read_miss_at_home, invalidate_fanout);
criterion_main!(benches);
