//! ViMA call arguments as a guest controls them: the call number, a guest-supplied range,
//! and the configuration table a guest parses (the VMM encodes it, but the parser must
//! hold against any bytes, and `HomeMap::from_config` consumes what it accepts).
//!
//! Properties, each against an independent computation: `Call::decode` accepts exactly
//! the numbers below `CALL_COUNT`; `UncheckedRange::check` accepts exactly the ranges that
//! lie in `[PAGE_SIZE, logical_bytes)` at the alignment asked (computed in u128); a
//! configuration `Config::parse` accepts has every count within its limits, every VP and
//! memory range on a listed node, page-aligned non-overlapping ranges inside logical
//! memory, and re-encodes (canonically) to one that parses to the same contents.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use nic_firmware::engine::{HomeMap, LogicalPage};
use vima::call::{Call, CallArgs, UncheckedRange, CALL_COUNT};
use vima::config::{
    encode, Config, ConfigInput, DeviceDesc, MemRange, NodeDesc, VpDesc, MAX_CMDLINE, MAX_DEVICES,
    MAX_MEM_RANGES,
};
use vima::layout::{MAX_NODES, MAX_VPS, PAGE_SIZE};
use vima::Status;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    number: u64,
    args: [u64; 5],
    addr: u64,
    len: u64,
    logical_bytes: u64,
    align: u64,
    align_shift: u8,
    config: &'a [u8],
}

fn check_call(input: &Input<'_>) {
    let args = CallArgs {
        number: input.number,
        args: input.args,
    };
    match Call::decode(&args) {
        Ok(call) => {
            assert!(input.number < CALL_COUNT as u64);
            assert_eq!(call as u64, input.number);
            assert!(!call.name().is_empty());
        }
        Err(status) => {
            assert!(input.number >= CALL_COUNT as u64);
            assert_eq!(status, Status::UnknownCall);
        }
    }
}

fn check_range(addr: u64, len: u64, logical_bytes: u64, align: u64) {
    let inside = u128::from(addr) >= u128::from(PAGE_SIZE)
        && u128::from(addr) + u128::from(len) <= u128::from(logical_bytes);
    let aligned = align.is_power_of_two() && addr.is_multiple_of(align);
    match UncheckedRange::new(addr, len).check(logical_bytes, align) {
        Ok(range) => {
            assert!(
                inside && aligned,
                "accepted {addr:#x}+{len:#x} in {logical_bytes:#x}/{align}"
            );
            assert_eq!((range.addr(), range.len()), (addr, len));
            assert_eq!(range.is_empty(), len == 0);
        }
        Err(status) => {
            assert!(
                !(inside && aligned),
                "refused {addr:#x}+{len:#x} in {logical_bytes:#x}"
            );
            assert_eq!(status, Status::BadAddress);
        }
    }
}

fn check_config(bytes: &[u8]) {
    let Ok(config) = Config::parse(bytes) else {
        return;
    };
    let header = *config.header();
    let nodes: Vec<NodeDesc> = config.nodes().collect();
    let vps: Vec<VpDesc> = config.vps().collect();
    let ranges: Vec<MemRange> = config.mem_ranges().collect();
    let devices: Vec<DeviceDesc> = config.devices().collect();
    let cmdline = config.cmdline();
    assert!((1..=MAX_NODES).contains(&nodes.len()) && nodes.len() == config.node_count());
    assert!((1..=MAX_VPS).contains(&vps.len()) && vps.len() == config.vp_count());
    assert!((1..=MAX_MEM_RANGES).contains(&ranges.len()));
    assert!(devices.len() <= MAX_DEVICES && cmdline.len() <= MAX_CMDLINE);
    assert!(usize::try_from(header.total_size).is_ok_and(|t| t <= bytes.len()));
    let listed = |id: u32| nodes.iter().any(|n| n.node_id == id);
    for (index, vp) in vps.iter().enumerate() {
        assert_eq!(vp.vp_id as usize, index);
        assert!(listed(vp.node_id));
    }
    for (index, range) in ranges.iter().enumerate() {
        assert!(listed(range.node_id));
        assert!(range.size > 0 && range.base % PAGE_SIZE == 0 && range.size % PAGE_SIZE == 0);
        let end = u128::from(range.base) + u128::from(range.size);
        assert!(end <= u128::from(header.logical_bytes));
        for other in &ranges[..index] {
            let other_end = u128::from(other.base) + u128::from(other.size);
            assert!(end <= u128::from(other.base) || other_end <= u128::from(range.base));
        }
        assert_eq!(config.home_of(range.base), Some(range.node_id));
        assert_eq!(
            config.home_of(range.base + (range.size - 1)),
            Some(range.node_id)
        );
    }
    // The canonical encoding of the same contents parses back to them.
    let input = ConfigInput {
        epoch: header.epoch,
        tsc_khz: header.tsc_khz,
        logical_bytes: header.logical_bytes,
        nodes: &nodes,
        vps: &vps,
        mem_ranges: &ranges,
        devices: &devices,
        cmdline,
    };
    // Arrays may overlap in the input (the parser allows it), so the canonical encoding
    // can be longer than the input: size the buffer for the largest one.
    let mut buf = vec![0u8; 8192];
    let len = encode(&input, &mut buf).expect("parsed contents re-encode");
    let again = Config::parse(&buf[..len]).expect("a canonical encoding parses");
    assert!(again.nodes().eq(nodes.iter().copied()));
    assert!(again.vps().eq(vps.iter().copied()));
    assert!(again.mem_ranges().eq(ranges.iter().copied()));
    assert!(again.devices().eq(devices.iter().copied()));
    assert_eq!(again.cmdline(), cmdline);
    // The coherence engine's view of the same ranges.
    if let Ok(homes) = HomeMap::from_config(&config) {
        for range in &ranges {
            let page = LogicalPage(range.base / PAGE_SIZE);
            assert_eq!(homes.home_of(page).map(u32::from), Some(range.node_id));
        }
    }
}

fuzz_target!(|input: Input<'_>| {
    check_call(&input);
    check_range(input.addr, input.len, input.logical_bytes, input.align);
    let power = 1u64 << (input.align_shift % 64);
    check_range(input.addr, input.len, input.logical_bytes, power);
    check_config(input.config);
});
