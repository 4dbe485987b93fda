//! Cycle counts per operation, measured on the simulated pipeline.
//!
//! Each scenario puts one or two simulated NICs in a known state (by feeding them the
//! messages a cluster would), then times one input: from the cycle its first beat (or its
//! fault descriptor) was taken to the cycle the action of interest left the pipeline. The
//! counts include everything in the model: parsing (a 4 KiB page is 128 beats of 256
//! bits), the block-RAM lookup, the controller's states, the FIFO and the four stages
//! after it. The PCIe DMA engine, the MAC and the host are outside; the latency model
//! adds them as parameters ([`crate::latency`]).

use vima::wire::{encode, Body, Message, MessageKind, MAX_MESSAGE_BYTES, PAGE_BYTES};

use crate::latency::NicCycles;
use crate::rtl::{RtlActionKind, RtlConfig, RtlError, RtlNode, RtlStep};

const VS: u16 = 1;
const BASE: u64 = 0x200;
const ZERO_PAGE: [u8; PAGE_BYTES] = [0; PAGE_BYTES];

fn nic(node: u16) -> Result<RtlNode, RtlError> {
    let mut rtl = RtlNode::new(RtlConfig {
        node,
        node_count: 16,
        vs_id: VS,
        page_base: BASE,
        window_base: 0x1000_0000,
        requests: 16,
        pending: 4,
        map_vector: 0,
    })?;
    // Page index 0 is homed at node 0, page index 1 at node 1.
    rtl.set_home(0, Some(0))?;
    rtl.set_home(1, Some(1))?;
    rtl.steer_write(1, Some(3))?;
    Ok(rtl)
}

fn frame(src: u16, dst: u16, rid: u64, body: Body<'_>) -> Result<Vec<u8>, RtlError> {
    let msg = Message {
        vs_id: VS,
        src,
        dst,
        request_id: rid,
        body,
    };
    let mut buf = vec![0u8; MAX_MESSAGE_BYTES];
    let len = encode(&msg, &mut buf).map_err(|_| RtlError::Scenario {
        what: "message does not encode",
    })?;
    buf.truncate(len);
    Ok(buf)
}

fn send(rtl: &mut RtlNode, src: u16, rid: u64, body: Body<'_>) -> Result<RtlStep, RtlError> {
    let dst = rtl.config().node;
    let step = rtl.push_message(&frame(src, dst, rid, body)?)?;
    if step.error != 0 {
        return Err(RtlError::Scenario {
            what: "a measurement input was refused",
        });
    }
    Ok(step)
}

/// Cycles from the input to the `nth` action that sends `kind` (0: the first).
fn to_transmit(step: &RtlStep, kind: MessageKind, nth: usize) -> Result<u32, RtlError> {
    step.actions
        .iter()
        .filter(|a| a.transmit.is_some_and(|(h, _)| h[3] == kind as u8))
        .nth(nth)
        .and_then(|a| u32::try_from(a.cycle - step.accepted_cycle).ok())
        .ok_or(RtlError::Scenario {
            what: "the expected message was not sent",
        })
}

/// Cycles from the input to its first action of `kind`.
fn to_action(step: &RtlStep, kind: RtlActionKind) -> Result<u32, RtlError> {
    step.actions
        .iter()
        .find(|a| a.kind == kind)
        .and_then(|a| u32::try_from(a.cycle - step.accepted_cycle).ok())
        .ok_or(RtlError::Scenario {
            what: "the expected action did not happen",
        })
}

/// Runs every scenario; `sharers` is the number of sharers of the fan-out scenario
/// (2..=13).
pub fn measure(sharers: u16) -> Result<NicCycles, RtlError> {
    let sharers = sharers.clamp(2, 13);
    let page = BASE; // homed at node 0
    let remote_page = BASE + 1; // homed at node 1

    // A requester: its VP 3 faults on a page homed elsewhere.
    let mut requester = nic(2)?;
    let fault = requester.push_fault(page, false, 3)?;
    let fault_to_request = to_transmit(&fault, MessageKind::ReadReq, 0)?;
    let local = requester.push_fault(page, false, 3)?; // coalesced: no action
    let _ = local;
    // The page arrives: installed by DMA, then VP 3's completion on its own vector.
    let rid = 1;
    let data = send(
        &mut requester,
        0,
        rid,
        Body::PageData {
            page,
            exclusive: false,
            data: &ZERO_PAGE,
        },
    )?;
    let page_to_completion = to_action(&data, RtlActionKind::FaultDone)?;
    // A local fault on a page already valid: completed at once (lookup + steering).
    let done = requester.push_fault(page, false, 3)?;
    let local_completion = to_action(&done, RtlActionKind::FaultDone)?;

    // The home of `page` (node 0).
    let mut home = nic(0)?;
    // Read while the home owns the page: write-protect own copy, send from memory.
    let first = send(&mut home, 2, 10, Body::ReadReq { page })?;
    let read_home_exclusive = to_transmit(&first, MessageKind::PageData, 0)?;
    // Read in Shared: served from the directory and memory.
    let shared = send(&mut home, 3, 11, Body::ReadReq { page })?;
    let read_from_directory = to_transmit(&shared, MessageKind::PageData, 0)?;
    for node in 4..(2 + sharers) {
        send(&mut home, node, 12, Body::ReadReq { page })?;
    }
    // Write by a non-sharer: drop the home's copy, invalidate every sharer at once.
    let writer = 15;
    let write = send(
        &mut home,
        writer,
        20,
        Body::WriteReq {
            page,
            has_copy: false,
        },
    )?;
    let fanout_first = to_transmit(&write, MessageKind::Invalidate, 0)?;
    let fanout_last = to_transmit(&write, MessageKind::Invalidate, usize::from(sharers) - 1)?;
    let fanout_per_sharer = (fanout_last - fanout_first) / u32::from(sharers - 1);
    let mut last_ack = None;
    for node in 2..(2 + sharers) {
        last_ack = Some(send(&mut home, node, 20, Body::InvalidateAck { page })?);
    }
    let last_ack = last_ack.ok_or(RtlError::Scenario { what: "no sharer" })?;
    let ack_to_grant = to_transmit(&last_ack, MessageKind::PageData, 0)?;
    // Read of a page a remote node owns: forwarded to the owner.
    let forward = send(&mut home, 2, 30, Body::ReadReq { page })?;
    let forward_at_home = to_transmit(&forward, MessageKind::ForwardRead, 0)?;

    // Write while the home owns the page: drop its own copy, send from memory.
    let mut fresh = nic(0)?;
    let write_home = send(
        &mut fresh,
        2,
        60,
        Body::WriteReq {
            page,
            has_copy: false,
        },
    )?;
    let write_from_home = to_transmit(&write_home, MessageKind::PageData, 0)?;

    // An owner: node 0 gets `remote_page` (homed at node 1) Exclusive for its VP.
    let mut owner = nic(0)?;
    owner.push_fault(remote_page, true, 3)?;
    send(
        &mut owner,
        1,
        1,
        Body::PageData {
            page: remote_page,
            exclusive: true,
            data: &ZERO_PAGE,
        },
    )?;
    let served = send(
        &mut owner,
        1,
        40,
        Body::ForwardRead {
            page: remote_page,
            requester: 2,
        },
    )?;
    let forward_at_owner = to_transmit(&served, MessageKind::PageData, 0)?;
    // The same owner, this time giving the page away (it is Shared now: get it back first).
    owner.push_fault(remote_page, true, 3)?;
    send(&mut owner, 1, 2, Body::UpgradeGrant { page: remote_page })?;
    let given = send(
        &mut owner,
        1,
        41,
        Body::ForwardWrite {
            page: remote_page,
            requester: 2,
        },
    )?;
    let forward_write_at_owner = to_transmit(&given, MessageKind::PageData, 0)?;

    // A sharer: node 2 holds `page` Shared (above); the home invalidates it.
    let invalidated = send(&mut requester, 0, 50, Body::Invalidate { page })?;
    let invalidate_at_sharer = to_transmit(&invalidated, MessageKind::InvalidateAck, 0)?;

    // An upgrade grant completes a write fault on a Shared copy.
    let mut upgrader = nic(2)?;
    upgrader.push_fault(page, false, 3)?;
    send(
        &mut upgrader,
        0,
        1,
        Body::PageData {
            page,
            exclusive: false,
            data: &ZERO_PAGE,
        },
    )?;
    upgrader.push_fault(page, true, 3)?;
    let grant = send(&mut upgrader, 0, 2, Body::UpgradeGrant { page })?;
    let grant_to_completion = to_action(&grant, RtlActionKind::FaultDone)?;

    let steering_rewrite = u32::try_from(upgrader.steer_remove(3, 4)?).unwrap_or(u32::MAX);

    Ok(NicCycles {
        fault_to_request,
        read_from_directory,
        read_home_exclusive,
        write_from_home,
        forward_at_home,
        forward_at_owner,
        forward_write_at_owner,
        fanout_first,
        fanout_per_sharer,
        invalidate_at_sharer,
        ack_to_grant,
        page_to_completion,
        grant_to_completion,
        local_completion,
        steering_rewrite,
    })
}
