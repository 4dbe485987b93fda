//! The RTL checked against the firmware engine and the wire format, through Verilator.
//! Needs feature `hdl-sim`: `cargo test -p hdl-models --features hdl-sim`.
#![cfg(feature = "hdl-sim")]

use hdl_models::diff::check;
use hdl_models::trace::{Choice, SplitMix64, TraceConfig};

/// Random clusters and traces; every input of every node compared.
#[test]
fn rtl_matches_the_engine_on_random_traces() {
    let seed = std::env::var("HDL_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_u64);
    let runs: usize = std::env::var("HDL_DIFF_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let mut rng = SplitMix64::new(seed);
    let (mut inputs, mut actions) = (0, 0);
    for run in 0..runs {
        let config = TraceConfig::random(&mut rng);
        let choices = Choice::random_list(&mut rng, 400);
        match check(&config, &choices, 3000) {
            Ok(stats) => {
                inputs += stats.inputs;
                actions += stats.actions;
            }
            Err(divergence) => panic!(
                "run {run} (seed {seed:#x}, {config:?}) diverged; shortest trace:\n{divergence}"
            ),
        }
    }
    println!("{inputs} inputs, {actions} actions compared");
    assert!(inputs >= runs * 200, "only {inputs} inputs");
}

mod parser {
    use hdl_models::observe::wire_error_code;
    use hdl_models::rtl::{RtlConfig, RtlNode};
    use hdl_models::trace::SplitMix64;
    use vima::wire::{decode, encode, Body, Message, MAX_MESSAGE_BYTES, PAGE_BYTES};

    fn node() -> RtlNode {
        let mut rtl = RtlNode::new(RtlConfig {
            node: 1,
            node_count: 16,
            vs_id: 3,
            page_base: 0x200,
            window_base: 0,
            requests: 8,
            pending: 2,
            map_vector: 0,
        })
        .unwrap();
        rtl.set_home(0, Some(1)).unwrap();
        rtl
    }

    fn message(rng: &mut SplitMix64, data: &[u8; PAGE_BYTES], line: &[u8]) -> Message<'static> {
        let page = 0x200 + rng.below(4);
        let src = u16::try_from(rng.below(16)).unwrap();
        let dst = if rng.below(2) == 0 { 1 } else { (src + 1) % 16 };
        let dst = if dst == src { (src + 2) % 16 } else { dst };
        let requester = (0..16u16)
            .find(|n| *n != dst && rng.below(3) == 0)
            .unwrap_or(if dst == 0 { 1 } else { 0 });
        let body = match rng.below(22) {
            0 => Body::ReadReq { page },
            1 => Body::WriteReq {
                page,
                has_copy: rng.below(2) == 1,
            },
            2 => Body::ForwardRead { page, requester },
            3 => Body::ForwardWrite { page, requester },
            4 => Body::Invalidate { page },
            5 => Body::InvalidateAck { page },
            6 => Body::PageData {
                page,
                exclusive: rng.below(2) == 1,
                data: leak(data),
            },
            7 => Body::UpgradeGrant { page },
            8 => Body::Writeback {
                page,
                data: leak(data),
            },
            9 => Body::Unblock { page },
            10 => Body::Nack { page },
            11 => Body::Ipi {
                vp: u32::try_from(rng.below(64)).unwrap(),
                vector: 32 + u8::try_from(rng.below(32)).unwrap(),
            },
            12 => Body::VpStart {
                vp: 5,
                entry: rng.next_u64(),
                stack_top: 1,
                arg: 2,
            },
            13 => Body::ConsoleLine {
                vp: 1,
                line: leak_line(line),
            },
            14 => Body::VsExit {
                status: rng.next_u64(),
            },
            15 => Body::ConfigUpdate {
                epoch: u32::try_from(rng.below(1 << 20)).unwrap(),
                mem_mib: u32::try_from(rng.below(1 << 16)).unwrap(),
                offline: rng.next_u64(),
            },
            16 => Body::Evict {
                page,
                data: (rng.below(2) == 1).then(|| leak(data)),
            },
            17 => Body::EvictAck { page },
            18 => {
                let exclusive = rng.below(2) == 1;
                Body::HomeMove {
                    page,
                    exclusive,
                    owner: if exclusive { requester } else { 0 },
                    sharers: if exclusive {
                        0
                    } else {
                        u16::try_from(rng.below(1 << 16)).unwrap()
                    },
                    data: (rng.below(2) == 1).then(|| leak(data)),
                }
            }
            19 => Body::HomeChange {
                first: rng.below(1 << 20),
                count: 1 + rng.below(1 << 12),
                home: requester,
            },
            20 => Body::HomeChangeAck {
                first: rng.below(1 << 20),
                count: 1 + rng.below(1 << 12),
                home: requester,
            },
            _ => Body::Heartbeat {
                sequence: rng.next_u64(),
            },
        };
        Message {
            vs_id: 3,
            src,
            dst,
            request_id: rng.next_u64(),
            body,
        }
    }

    fn leak(data: &[u8; PAGE_BYTES]) -> &'static [u8; PAGE_BYTES] {
        Box::leak(Box::new(*data))
    }

    fn leak_line(line: &[u8]) -> &'static [u8] {
        Box::leak(line.to_vec().into_boxed_slice())
    }

    /// Random messages, mostly corrupted in the header and the first body bytes, some cut
    /// or extended: the parser rejects exactly what `vima::wire::decode` rejects, with the
    /// same error.
    #[test]
    fn parser_agrees_with_wire_decode() {
        let mut rng = SplitMix64::new(7);
        let mut rtl = node();
        let data = [0x5au8; PAGE_BYTES];
        let line = b"a console line".to_vec();
        let (mut accepted, mut rejected) = (0, 0);
        for round in 0..3000 {
            let msg = message(&mut rng, &data, &line);
            let mut buf = vec![0u8; MAX_MESSAGE_BYTES + 4];
            let mut len = encode(&msg, &mut buf).unwrap();
            for _ in 0..rng.below(3) {
                let at = usize::try_from(rng.below(48))
                    .unwrap()
                    .min(len.saturating_sub(1));
                let bit = 1u8 << rng.below(8);
                buf[at] ^= bit;
            }
            match rng.below(12) {
                0 => len = usize::try_from(rng.below(u64::try_from(len).unwrap() + 1)).unwrap(),
                1 => len += 1 + usize::try_from(rng.below(3)).unwrap(),
                _ => {}
            }
            let frame = &buf[..len];
            let expected = decode(frame).err().map(|e| wire_error_code(&e));
            let step = rtl.push_message(frame).unwrap();
            match expected {
                Some(code) => {
                    rejected += 1;
                    assert_eq!(step.error, code, "round {round}: {frame:02x?}");
                    assert!(step.actions.is_empty());
                }
                None => {
                    accepted += 1;
                    assert!(
                        step.error < 0x10,
                        "round {round}: decoded but the parser said {:#x}",
                        step.error
                    );
                }
            }
        }
        assert!(
            accepted > 300 && rejected > 300,
            "{accepted} accepted, {rejected} rejected"
        );
    }
}

mod steering {
    use hdl_models::rtl::{RtlConfig, RtlNode};
    use hdl_models::steering::SteeringModel;
    use hdl_models::trace::SplitMix64;

    /// Random table writes and VP removals: every completion raises the vector the
    /// reference model predicts; a removal walks the whole table.
    #[test]
    fn steering_table_follows_the_reference_model() {
        let mut rtl = RtlNode::new(RtlConfig {
            node: 0,
            node_count: 2,
            vs_id: 1,
            page_base: 0x200,
            window_base: 0,
            requests: 4,
            pending: 2,
            map_vector: 17,
        })
        .unwrap();
        rtl.set_home(0, Some(0)).unwrap();
        let vectors = hdl_models::rtl::params().vectors;
        let mut model = SteeringModel::new(vectors, 17);
        let mut rng = SplitMix64::new(3);
        for round in 0..2000 {
            match rng.below(8) {
                0..=2 => {
                    let vector = u8::try_from(rng.below(vectors as u64)).unwrap();
                    let vp = (rng.below(4) != 0).then(|| u32::try_from(rng.below(8)).unwrap());
                    rtl.steer_write(vector, vp).unwrap();
                    model.write(vector, vp);
                }
                3 => {
                    let (vp, to) = (
                        u32::try_from(rng.below(8)).unwrap(),
                        u32::try_from(rng.below(8)).unwrap(),
                    );
                    let cycles = rtl.steer_remove(vp, to).unwrap();
                    assert!(cycles >= vectors as u64, "a rewrite visits every entry");
                    model.remove_vp(vp, to);
                }
                _ => {
                    // A fault on a page this node owns completes at once: one FaultDone.
                    let vp = u32::try_from(rng.below(8)).unwrap();
                    let step = rtl.push_fault(0x200, true, vp).unwrap();
                    assert_eq!(step.error, 0);
                    assert_eq!(step.actions.len(), 1);
                    assert_eq!(step.actions[0].vp, vp);
                    assert_eq!(
                        step.actions[0].vector,
                        Some(model.vector_for(vp)),
                        "round {round}"
                    );
                }
            }
        }
    }
}

mod cycles {
    use hdl_models::latency::NicCycles;
    use hdl_models::measure::measure;

    /// The constants the latency model uses are what the Verilog does now.
    #[test]
    fn measured_cycles_match_the_model() {
        let measured = measure(3).unwrap();
        assert_eq!(
            measured,
            NicCycles::MEASURED,
            "the RTL changed: update NicCycles::MEASURED to {measured:#?}"
        );
    }

    /// The fan-out puts one more Invalidate on the wire per cycle, whatever the sharers.
    #[test]
    fn fanout_is_one_sharer_per_cycle() {
        let few = measure(2).unwrap();
        let many = measure(13).unwrap();
        assert_eq!(few.fanout_per_sharer, 1);
        assert_eq!(many.fanout_per_sharer, 1);
        assert_eq!(few.fanout_first, many.fanout_first);
        // 129 beats of PageData arrive before anything happens.
        assert!(few.page_to_completion > 129);
    }
}
