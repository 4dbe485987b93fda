//! The coherence engine (`nic_firmware::engine`) fed any sequence of faults and decoded
//! wire messages, as a peer that lies could send them. Input: frames of
//! `[op, node, len_lo, len_hi, bytes...]`; op even = a message (`bytes`, through
//! `vima::wire::decode`) to `node`, odd = a fault of `node` (`bytes[0]`: page, write bit,
//! VP).
//!
//! Properties: no input panics the engine; every message it refuses counts exactly one
//! protocol error; the local states of one node stay consistent with its own directory for
//! the pages it is home of (a home never holds a page Exclusive while its directory says
//! another node owns it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nic_firmware::engine::{
    Action, DirEntry, DirectoryState, Engine, EngineConfig, EngineStorage, HomeMap, HomeRequest,
    LocalFault, LogicalPage, PageState, PendingFault,
};
use vima::wire::decode;

const NODES: u16 = 3;
const FIRST_PAGE: u64 = 5;
const PAGES: u64 = 4;
const VS_ID: u16 = 1;

enum Step<'a> {
    Fault {
        node: u8,
        page: u8,
        write: bool,
        vp: u8,
    },
    Receive {
        node: u8,
        bytes: &'a [u8],
    },
}

/// Splits the input into steps; a short last frame ends it.
fn steps(mut data: &[u8]) -> Vec<Step<'_>> {
    let mut steps = Vec::new();
    while let [op, node, lo, hi, rest @ ..] = data {
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(rest.len());
        let (bytes, tail) = rest.split_at(len);
        data = tail;
        steps.push(if op % 2 == 0 {
            Step::Receive { node: *node, bytes }
        } else {
            let spec = bytes.first().copied().unwrap_or(0);
            Step::Fault {
                node: *node,
                page: spec & 0x7,
                write: spec & 0x8 != 0,
                vp: spec >> 4,
            }
        });
    }
    steps
}

struct Tables {
    local: Vec<PageState>,
    directory: Vec<DirEntry>,
    pending: Vec<PendingFault>,
    requests: Vec<HomeRequest>,
}

fuzz_target!(|data: &[u8]| {
    let steps = steps(data);
    let mut homes = HomeMap::new();
    for page in 0..PAGES {
        let home = u16::try_from(page).unwrap_or(0) % NODES;
        homes
            .add(LogicalPage(FIRST_PAGE + page), 1, home)
            .expect("valid home map");
    }
    let mut tables: Vec<Tables> = (0..NODES)
        .map(|node| Tables {
            local: vec![PageState::Invalid; usize::try_from(homes.page_limit()).unwrap_or(0)],
            directory: vec![
                DirEntry::default();
                usize::try_from(homes.page_limit()).unwrap_or(0)
            ],
            pending: vec![PendingFault::default(); 2],
            requests: vec![HomeRequest::default(); 4],
        })
        .collect();
    let mut engines: Vec<Engine<'_>> = tables
        .iter_mut()
        .zip(0..NODES)
        .map(|(t, node)| {
            let config = EngineConfig {
                vs_id: VS_ID,
                node,
                node_count: NODES,
            };
            let storage = EngineStorage {
                local: &mut t.local,
                directory: &mut t.directory,
                pending: &mut t.pending,
                requests: &mut t.requests,
            };
            Engine::new(config, homes, storage).expect("valid engine")
        })
        .collect();
    let mut sink = |_: Action<'_>| {};
    let count = engines.len();
    for step in steps.iter().take(64) {
        match step {
            Step::Fault {
                node,
                page,
                write,
                vp,
            } => {
                let engine = &mut engines[usize::from(*node) % count];
                let fault = LocalFault {
                    page: LogicalPage(FIRST_PAGE + u64::from(*page) % (PAGES + 1)),
                    write: *write,
                    vp: u32::from(*vp % 3),
                };
                let _ = engine.fault(fault, &mut sink);
            }
            Step::Receive { node, bytes } => {
                let Ok(msg) = decode(bytes) else { continue };
                let engine = &mut engines[usize::from(*node) % count];
                let before = engine.counters().protocol_errors;
                let refused = engine.receive(&msg, &mut sink).is_err();
                let after = engine.counters().protocol_errors;
                assert_eq!(
                    after - before,
                    u64::from(refused),
                    "refusals are counted once"
                );
            }
        }
        for (node, engine) in engines.iter().enumerate() {
            for page in 0..PAGES {
                let page = LogicalPage(FIRST_PAGE + page);
                let Ok(view) = engine.directory_state(page) else {
                    continue;
                };
                let local = engine.page_state(page).expect("known page");
                if let (DirectoryState::Exclusive(owner), false) = (view.state, view.busy) {
                    if usize::from(owner) != node {
                        assert_eq!(local, PageState::Invalid, "home {node} holds {page:?}");
                    }
                }
            }
        }
    }
});
