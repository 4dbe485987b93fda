//! Prints the pipeline's cycle counts per operation, measured on the Verilator model, and
//! the modeled fault latencies they give with the default parameters.
//!
//! `cargo run -p hdl-models --features hdl-sim --example cycle_counts`

use hdl_models::latency::{rows_with, LatencyParams};
use hdl_models::measure::measure;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cycles = measure(3)?;
    let params = LatencyParams::default();
    let ns = |c: u32| f64::from(c) * 1000.0 / params.clock_mhz;
    println!("cycles per operation (clock {} MHz):", params.clock_mhz);
    let table = [
        (
            "fault descriptor -> request on the wire",
            cycles.fault_to_request,
        ),
        (
            "read served from the directory (ReadReq -> PageData)",
            cycles.read_from_directory,
        ),
        (
            "read of a page the home owns (-> Downgrade, PageData)",
            cycles.read_home_exclusive,
        ),
        (
            "write of a page the home owns (-> unmap, PageData)",
            cycles.write_from_home,
        ),
        (
            "forwarded read, at the home (ReadReq -> ForwardRead)",
            cycles.forward_at_home,
        ),
        (
            "forwarded read, at the owner (ForwardRead -> PageData)",
            cycles.forward_at_owner,
        ),
        (
            "forwarded write, at the owner (ForwardWrite -> PageData)",
            cycles.forward_write_at_owner,
        ),
        (
            "invalidation fan-out, first Invalidate",
            cycles.fanout_first,
        ),
        (
            "invalidation fan-out, per further sharer",
            cycles.fanout_per_sharer,
        ),
        (
            "sharer: Invalidate -> InvalidateAck",
            cycles.invalidate_at_sharer,
        ),
        ("last InvalidateAck -> grant", cycles.ack_to_grant),
        (
            "PageData (129 beats) -> steered FaultDone",
            cycles.page_to_completion,
        ),
        (
            "UpgradeGrant -> steered FaultDone",
            cycles.grant_to_completion,
        ),
        (
            "fault on a valid page -> steered FaultDone",
            cycles.local_completion,
        ),
        (
            "steering table rewrite (VP removed)",
            cycles.steering_rewrite,
        ),
    ];
    for (what, c) in table {
        println!("  {c:>4} cycles {:>7.1} ns  {what}", ns(c));
    }
    println!("{cycles:#?}");
    println!("modeled fault latency ({}):", params.summary());
    for row in rows_with(&params, &cycles) {
        println!(
            "  {:<16} {:<32} {:>6.2} us  (nic {:.2}, pcie {:.2}, wire {:.2}, host {:.2} us)",
            row.label,
            row.kind_name,
            row.latency_ns / 1000.0,
            row.breakdown.nic_ns / 1000.0,
            row.breakdown.pcie_ns / 1000.0,
            row.breakdown.wire_ns / 1000.0,
            row.breakdown.host_ns / 1000.0
        );
    }
    Ok(())
}
