//! The latency model: what a remote page fault would cost on racks whose NICs run the
//! offload pipeline in an FPGA.
//!
//! Cycle counts come from the RTL simulation ([`NicCycles::MEASURED`], re-measured and
//! checked by `cargo test -p hdl-models --features hdl-sim`); everything outside the RTL
//! is a documented parameter ([`LatencyParams`]) with a default taken from public figures
//! (`docs/hdl.md` cites them):
//!
//! | parameter | default | source |
//! |---|---|---|
//! | FPGA clock | 250 MHz | Corundum open-source NIC (Forencich et al., FCCM 2020): 250 MHz datapath; AMD Alveo XDMA shells |
//! | PCIe round trip (DMA read of a small buffer) | 1000 ns | Neugebauer et al., "Understanding PCIe performance for end host networking", SIGCOMM 2018 (0.5–1 µs measured) |
//! | PCIe DMA bandwidth | 50 Gbit/s | same paper: Gen3 x8 after TLP overheads |
//! | wire latency per hop | 1000 ns | 25GbE (IEEE 802.3by) MAC/PHY/RS-FEC at both ends plus a cut-through switch (~300 ns port to port): 1–2 µs per hop |
//! | link rate | 25 Gbit/s | 25GbE |
//! | host mapping change | 2000 ns | estimate: MSI-X, host thread wake-up, `UFFDIO_WRITEPROTECT`/`MADV_DONTNEED`, confirmation |
//! | host fault overhead | 0 ns | the host's own userfaultfd part, shared by every path: set it from a measured row to compare end to end |
//!
//! The model follows each fault kind's critical path through the protocol
//! (`docs/protocol.md`, "typical flows"): NIC cycles, PCIe transfers, wire hops with
//! serialization, and the host mapping changes the engine's ordering rule makes a NIC wait
//! for (an owner must write-protect or unmap before its page is read). Rows are labelled
//! `fpga (modeled)`; they are never measurements.
//!
//! ```
//! use hdl_models::latency::{fpga_modeled_rows, LatencyParams, FPGA_MODELED_LABEL};
//! let rows = fpga_modeled_rows(&LatencyParams::default());
//! assert!(rows.iter().all(|r| r.label == FPGA_MODELED_LABEL));
//! let read = &rows[0];
//! assert!(read.latency_ns > 1_000.0 && read.latency_ns < 20_000.0);
//! ```

use serde::Serialize;

/// The label of every modeled row, so a benchmark never mixes them with measured ones.
pub const FPGA_MODELED_LABEL: &str = "fpga (modeled)";

/// Bytes of a header-only message, of a forward and of a page message.
const HEADER_BYTES: f64 = 32.0;
const FORWARD_BYTES: f64 = 40.0;
const PAGE_MESSAGE_BYTES: f64 = 32.0 + 4096.0;
const PAGE_BYTES: f64 = 4096.0;
/// Body beats of a page at 32 bytes per cycle: they arrive while the page is still being
/// serialized on the wire, so the model does not count them twice.
const PAGE_BODY_BEATS: u32 = 128;

/// Cycles per operation of the pipeline, from the input taken to the action out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct NicCycles {
    /// Requester: fault descriptor -> ReadReq/WriteReq on the wire.
    pub fault_to_request: u32,
    /// Home: ReadReq for a Shared page -> PageData (DMA read issued): a read served from
    /// the directory.
    pub read_from_directory: u32,
    /// Home: ReadReq for a page the home owns -> Downgrade, then PageData.
    pub read_home_exclusive: u32,
    /// Home: WriteReq for a page the home owns -> Invalidate own copy, then PageData.
    pub write_from_home: u32,
    /// Home: ReadReq for a page a remote node owns -> ForwardRead (a forwarded read).
    pub forward_at_home: u32,
    /// Owner: ForwardRead -> Downgrade, then PageData to the requester.
    pub forward_at_owner: u32,
    /// Owner: ForwardWrite -> unmap, then PageData to the requester.
    pub forward_write_at_owner: u32,
    /// Home: WriteReq on a page with sharers -> the first Invalidate on the wire.
    pub fanout_first: u32,
    /// Home: each further sharer's Invalidate (the fan-out slope).
    pub fanout_per_sharer: u32,
    /// Sharer: Invalidate -> unmap, InvalidateAck.
    pub invalidate_at_sharer: u32,
    /// Home: the last InvalidateAck -> the grant.
    pub ack_to_grant: u32,
    /// Requester: PageData (4 KiB, 129 beats) -> DMA write, map, steered FaultDone.
    pub page_to_completion: u32,
    /// Requester: UpgradeGrant -> map, steered FaultDone.
    pub grant_to_completion: u32,
    /// A fault on a page already valid -> FaultDone (lookup and steering only).
    pub local_completion: u32,
    /// Rewriting the steering table when a VP is removed (16 vectors).
    pub steering_rewrite: u32,
}

impl NicCycles {
    /// The counts `measure` reports for the RTL in `rtl/` (the test
    /// `measured_cycles_match_the_model` keeps them in step with the Verilog).
    pub const MEASURED: Self = Self {
        fault_to_request: 11,
        read_from_directory: 15,
        read_home_exclusive: 15,
        write_from_home: 16,
        forward_at_home: 14,
        forward_at_owner: 14,
        forward_write_at_owner: 16,
        fanout_first: 18,
        fanout_per_sharer: 1,
        invalidate_at_sharer: 15,
        ack_to_grant: 15,
        page_to_completion: 142,
        grant_to_completion: 14,
        local_completion: 10,
        steering_rewrite: 17,
    };
}

/// Everything outside the RTL, with defaults from public figures (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct LatencyParams {
    /// FPGA clock.
    pub clock_mhz: f64,
    /// A DMA read of a small buffer in host memory, request to completion.
    pub pcie_round_trip_ns: f64,
    /// DMA bandwidth for page-sized transfers.
    pub pcie_gbit_per_s: f64,
    /// One network hop: MAC, PHY and FEC at both ends, cable, one switch.
    pub wire_hop_ns: f64,
    /// Link rate (serialization of each frame).
    pub link_gbit_per_s: f64,
    /// Per-frame bytes beyond the message: Ethernet with preamble and gap, IP, UDP,
    /// transport header.
    pub frame_overhead_bytes: f64,
    /// The host changes a mapping the NIC asked for and confirms (interrupt included).
    pub host_mapping_ns: f64,
    /// The host's own part of every fault (userfaultfd wake-up, map, VP resume).
    pub host_fault_ns: f64,
    /// Sharers invalidated by the modeled upgrade.
    pub sharers: u32,
}

impl Default for LatencyParams {
    fn default() -> Self {
        Self {
            clock_mhz: 250.0,
            pcie_round_trip_ns: 1000.0,
            pcie_gbit_per_s: 50.0,
            wire_hop_ns: 1000.0,
            link_gbit_per_s: 25.0,
            frame_overhead_bytes: 80.0,
            host_mapping_ns: 2000.0,
            host_fault_ns: 0.0,
            sharers: 3,
        }
    }
}

impl LatencyParams {
    /// One line with every parameter, to print beside a modeled row.
    pub fn summary(&self) -> String {
        format!(
            "clock {} MHz, PCIe RTT {} ns at {} Gbit/s, wire {} ns/hop at {} Gbit/s \
             (+{} B/frame), host mapping {} ns, host fault {} ns, {} sharers",
            self.clock_mhz,
            self.pcie_round_trip_ns,
            self.pcie_gbit_per_s,
            self.wire_hop_ns,
            self.link_gbit_per_s,
            self.frame_overhead_bytes,
            self.host_mapping_ns,
            self.host_fault_ns,
            self.sharers
        )
    }

    fn cycles_ns(&self, cycles: u32) -> f64 {
        f64::from(cycles) * 1000.0 / self.clock_mhz
    }

    fn hop_ns(&self, message_bytes: f64) -> f64 {
        self.wire_hop_ns + (message_bytes + self.frame_overhead_bytes) * 8.0 / self.link_gbit_per_s
    }

    fn page_transfer_ns(&self) -> f64 {
        PAGE_BYTES * 8.0 / self.pcie_gbit_per_s
    }
}

/// The fault kinds the model covers (requester R, home H, owner O; R is not H).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum FaultKind {
    /// Read miss served by the home's directory and memory (2 hops).
    ReadFromHome,
    /// Read miss on a page a third node owns: forwarded, the owner downgrades (3 hops).
    ReadForwarded,
    /// Write miss on a page the home owns (2 hops).
    WriteFromHome,
    /// Write miss on a page a third node owns: forwarded, the owner unmaps (3 hops).
    WriteForwarded,
    /// Write on a Shared copy: the home invalidates every other sharer in parallel,
    /// collects the acks and grants (4 hops).
    UpgradeWithSharers,
}

impl FaultKind {
    /// Every kind, in table order.
    pub const ALL: [Self; 5] = [
        Self::ReadFromHome,
        Self::ReadForwarded,
        Self::WriteFromHome,
        Self::WriteForwarded,
        Self::UpgradeWithSharers,
    ];

    /// A short name for tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::ReadFromHome => "read, served by the home",
            Self::ReadForwarded => "read, forwarded to the owner",
            Self::WriteFromHome => "write, served by the home",
            Self::WriteForwarded => "write, forwarded to the owner",
            Self::UpgradeWithSharers => "upgrade, invalidating sharers",
        }
    }
}

/// Where the modeled time goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LatencyBreakdown {
    /// Pipeline cycles on the critical path, in ns.
    pub nic_ns: f64,
    /// DMA, descriptor fetch and interrupt over PCIe.
    pub pcie_ns: f64,
    /// Wire hops and serialization.
    pub wire_ns: f64,
    /// Host mapping changes waited for, and the host's own fault overhead.
    pub host_ns: f64,
    /// NIC cycles on the critical path.
    pub nic_cycles: u32,
    /// Network hops on the critical path.
    pub hops: u32,
}

impl LatencyBreakdown {
    /// The modeled fault latency.
    pub fn total_ns(&self) -> f64 {
        self.nic_ns + self.pcie_ns + self.wire_ns + self.host_ns
    }
}

/// Accumulates a critical path.
struct Path<'p> {
    params: &'p LatencyParams,
    out: LatencyBreakdown,
}

impl Path<'_> {
    fn nic(&mut self, cycles: u32) -> &mut Self {
        self.out.nic_cycles += cycles;
        self.out.nic_ns += self.params.cycles_ns(cycles);
        self
    }
    fn hop(&mut self, bytes: f64) -> &mut Self {
        self.out.hops += 1;
        self.out.wire_ns += self.params.hop_ns(bytes);
        self
    }
    fn pcie(&mut self, ns: f64) -> &mut Self {
        self.out.pcie_ns += ns;
        self
    }
    fn host(&mut self, ns: f64) -> &mut Self {
        self.out.host_ns += ns;
        self
    }
}

/// The modeled latency of `kind`: from the VP's fault reaching the host to the completion
/// interrupt on the VP's thread (plus [`LatencyParams::host_fault_ns`]).
pub fn modeled_fault_latency(
    kind: FaultKind,
    params: &LatencyParams,
    cycles: &NicCycles,
) -> LatencyBreakdown {
    let rtt = params.pcie_round_trip_ns;
    let page_dma_read = rtt + params.page_transfer_ns();
    // A posted write, then the MSI-X (another posted write, ordered behind it).
    let page_dma_write = rtt / 2.0 + params.page_transfer_ns();
    let msix = rtt / 2.0;
    let after_page = cycles.page_to_completion.saturating_sub(PAGE_BODY_BEATS);
    let mut path = Path {
        params,
        out: LatencyBreakdown::default(),
    };
    // Every fault: the host's own part, the NIC fetching the descriptor, the request out.
    path.host(params.host_fault_ns)
        .pcie(rtt)
        .nic(cycles.fault_to_request)
        .hop(HEADER_BYTES);
    match kind {
        FaultKind::ReadFromHome => {
            path.nic(cycles.read_from_directory).pcie(page_dma_read);
        }
        FaultKind::WriteFromHome => {
            path.nic(cycles.write_from_home)
                .host(params.host_mapping_ns)
                .pcie(page_dma_read);
        }
        FaultKind::ReadForwarded | FaultKind::WriteForwarded => {
            let at_owner = if kind == FaultKind::ReadForwarded {
                cycles.forward_at_owner
            } else {
                cycles.forward_write_at_owner
            };
            path.nic(cycles.forward_at_home)
                .hop(FORWARD_BYTES)
                .nic(at_owner)
                .host(params.host_mapping_ns)
                .pcie(page_dma_read);
        }
        FaultKind::UpgradeWithSharers => {
            let sharers = params.sharers.max(1);
            path.nic(cycles.fanout_first + (sharers - 1) * cycles.fanout_per_sharer)
                .hop(HEADER_BYTES)
                .nic(cycles.invalidate_at_sharer)
                .host(params.host_mapping_ns)
                .hop(HEADER_BYTES)
                .nic(cycles.ack_to_grant)
                .hop(HEADER_BYTES)
                .nic(cycles.grant_to_completion)
                .pcie(msix);
            return path.out;
        }
    }
    path.hop(PAGE_MESSAGE_BYTES)
        .nic(after_page)
        .pcie(page_dma_write + msix);
    path.out
}

/// One modeled row for the fault-latency benchmark.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModeledRow {
    /// Always [`FPGA_MODELED_LABEL`].
    pub label: &'static str,
    /// The fault kind.
    pub kind: FaultKind,
    /// Its name.
    pub kind_name: &'static str,
    /// The modeled latency.
    pub latency_ns: f64,
    /// Where it goes.
    pub breakdown: LatencyBreakdown,
    /// The parameters it was computed with (print them beside the row).
    pub params: LatencyParams,
    /// The cycle counts it was computed with.
    pub cycles: NicCycles,
}

/// The modeled rows, one per [`FaultKind`], with the measured cycle counts.
pub fn fpga_modeled_rows(params: &LatencyParams) -> Vec<ModeledRow> {
    rows_with(params, &NicCycles::MEASURED)
}

/// The modeled rows with other cycle counts (e.g. a fresh measurement).
pub fn rows_with(params: &LatencyParams, cycles: &NicCycles) -> Vec<ModeledRow> {
    FaultKind::ALL
        .iter()
        .map(|kind| {
            let breakdown = modeled_fault_latency(*kind, params, cycles);
            ModeledRow {
                label: FPGA_MODELED_LABEL,
                kind: *kind,
                kind_name: kind.name(),
                latency_ns: breakdown.total_ns(),
                breakdown,
                params: *params,
                cycles: *cycles,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit_cycles() -> NicCycles {
        NicCycles {
            fault_to_request: 10,
            read_from_directory: 20,
            read_home_exclusive: 21,
            write_from_home: 22,
            forward_at_home: 30,
            forward_at_owner: 40,
            forward_write_at_owner: 41,
            fanout_first: 50,
            fanout_per_sharer: 1,
            invalidate_at_sharer: 60,
            ack_to_grant: 70,
            page_to_completion: 228,
            grant_to_completion: 80,
            local_completion: 5,
            steering_rewrite: 17,
        }
    }

    #[test]
    fn read_from_home_adds_up_by_hand() {
        // 1 GHz clock so cycles are ns; numbers chosen to add up by hand.
        let params = LatencyParams {
            clock_mhz: 1000.0,
            pcie_round_trip_ns: 1000.0,
            pcie_gbit_per_s: 32.0,
            wire_hop_ns: 500.0,
            link_gbit_per_s: 8.0,
            frame_overhead_bytes: 0.0,
            host_mapping_ns: 7000.0,
            host_fault_ns: 100.0,
            sharers: 1,
        };
        let b = modeled_fault_latency(FaultKind::ReadFromHome, &params, &unit_cycles());
        // NIC: request 10 + directory 20 + after the page (228 - 128) = 130 cycles.
        assert_eq!(b.nic_cycles, 130);
        assert_eq!(b.nic_ns, 130.0);
        // Wire: (500 + 32 B at 1 B/ns) + (500 + 4128 B at 1 B/ns).
        assert_eq!(b.wire_ns, 532.0 + 4628.0);
        // PCIe: descriptor 1000 + read (1000 + 1024) + write (500 + 1024) + MSI-X 500.
        assert_eq!(b.pcie_ns, 1000.0 + 2024.0 + 1524.0 + 500.0);
        assert_eq!(b.host_ns, 100.0, "no mapping change at a Shared home");
        assert_eq!(b.hops, 2);
    }

    #[test]
    fn forwarding_and_invalidating_cost_more_hops() {
        let p = LatencyParams::default();
        let c = unit_cycles();
        let hops = |k| modeled_fault_latency(k, &p, &c).hops;
        assert_eq!(hops(FaultKind::ReadFromHome), 2);
        assert_eq!(hops(FaultKind::ReadForwarded), 3);
        assert_eq!(hops(FaultKind::WriteForwarded), 3);
        assert_eq!(hops(FaultKind::UpgradeWithSharers), 4);
        let one = modeled_fault_latency(
            FaultKind::UpgradeWithSharers,
            &LatencyParams { sharers: 1, ..p },
            &c,
        );
        let more = modeled_fault_latency(
            FaultKind::UpgradeWithSharers,
            &LatencyParams { sharers: 9, ..p },
            &c,
        );
        // Eight more sharers: eight more fan-out cycles, nothing else.
        assert_eq!(more.nic_cycles - one.nic_cycles, 8);
    }

    #[test]
    fn rows_are_labelled_and_serialize() {
        let rows = fpga_modeled_rows(&LatencyParams::default());
        assert_eq!(rows.len(), FaultKind::ALL.len());
        assert!(rows.iter().all(|r| r.label == "fpga (modeled)"));
        // The read row with the RTL's measured cycles (checked against the simulation by
        // `measured_cycles_match_the_model` under `hdl-sim`), summed here by hand along
        // its critical path at the defaults: 250 MHz (4 ns a cycle), PCIe round trip
        // 1000 ns, a page over PCIe 4096 * 8 / 50 ns, a hop 1000 ns plus (bytes + 80)
        // * 8 / 25 ns.
        let c = NicCycles::MEASURED;
        let cycle = |n: u32| f64::from(n) * 4.0;
        let hop = |bytes: f64| 1000.0 + (bytes + 80.0) * 8.0 / 25.0;
        let page_pcie = 4096.0 * 8.0 / 50.0;
        let by_hand = 1000.0 // descriptor fetch
            + cycle(c.fault_to_request)
            + hop(32.0) // ReadReq
            + cycle(c.read_from_directory)
            + 1000.0 + page_pcie // DMA read of the page at the home
            + hop(32.0 + 4096.0) // PageData
            + cycle(c.page_to_completion - 128)
            + 500.0 + page_pcie // DMA write at the requester
            + 500.0; // MSI-X
        let read = &rows[0];
        assert_eq!(read.kind, FaultKind::ReadFromHome);
        assert!(
            (read.latency_ns - by_hand).abs() < 1e-6,
            "{} vs {by_hand}",
            read.latency_ns
        );
        let json = serde_json::to_string(&rows[0]).expect("rows serialize");
        assert!(json.contains("\"label\":\"fpga (modeled)\""));
        assert!(json.contains("\"clock_mhz\":250.0"));
    }
}
