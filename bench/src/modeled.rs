//! The hook for rows that come from the FPGA latency model instead of a measurement.
//!
//! `hdl_models::latency` (being written alongside) turns the Verilator cycle counts of the
//! offload pipeline into predicted service times. Its rows go into the report's
//! `rows_modeled` array, labelled [`MODELED_LABEL`], and are drawn apart in the plot: a
//! prediction is never mixed with the measured `paths` rows, nor used as a ratio base.
//!

use super::parse::{ProbeCase, ProbeKind};
use super::report::ModeledRow;

/// The label every modeled row carries.
pub const MODELED_LABEL: &str = "fpga (modeled)";

/// What the model may use to predict a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelInput {
    /// Nodes in the benchmarked cluster.
    pub nodes: u32,
    /// Pages per probe run.
    pub pages: u64,
}

/// Predicted fetch service times for `cases` from the FPGA pipeline model
/// (`hdl_models::latency`, cycle counts measured in Verilator, documented parameters):
/// read_miss and write_miss are served by the home (2 hops), upgrade and invalidate/k are
/// the home's parallel invalidation of k sharers (upgrade: the one other copy). The local
/// floor has no model.
pub fn modeled_rows(input: ModelInput, cases: &[ProbeCase]) -> Vec<ModeledRow> {
    use hdl_models::latency::{modeled_fault_latency, FaultKind, LatencyParams, NicCycles};
    let _ = input;
    cases
        .iter()
        .filter_map(|case| {
            let (kind, sharers) = match case.kind {
                ProbeKind::Local => return None,
                ProbeKind::ReadMiss => (FaultKind::ReadFromHome, 1),
                ProbeKind::WriteMiss => (FaultKind::WriteFromHome, 1),
                ProbeKind::Upgrade => (FaultKind::UpgradeWithSharers, 1),
                ProbeKind::Invalidate => (FaultKind::UpgradeWithSharers, case.sharers.max(1)),
            };
            let params = LatencyParams {
                sharers,
                ..LatencyParams::default()
            };
            let latency = modeled_fault_latency(kind, &params, &NicCycles::MEASURED);
            let source = format!(
                "hdl_models::latency ({}; {})",
                kind.name(),
                params.summary()
            );
            Some(modeled_row(*case, latency.total_ns() / 1000.0, &source))
        })
        .collect()
}

/// A modeled row for `case` with the fixed label (for the model's adapter to use).
pub fn modeled_row(case: ProbeCase, service_p50_us: f64, source: &str) -> ModeledRow {
    ModeledRow {
        label: MODELED_LABEL.to_string(),
        kind: case.kind.name().to_string(),
        sharers: case.sharers,
        service_p50_us,
        source: source.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse::ProbeKind;
    use super::*;

    #[test]
    fn rows_are_labelled() {
        let case = ProbeCase {
            kind: ProbeKind::Invalidate,
            sharers: 2,
        };
        let row = modeled_row(case, 1.5, "model");
        assert_eq!(row.label, "fpga (modeled)");
        assert_eq!((row.kind.as_str(), row.sharers), ("invalidate", 2));
        let local = ProbeCase {
            kind: ProbeKind::Local,
            sharers: 0,
        };
        let rows = modeled_rows(ModelInput { nodes: 4, pages: 1 }, &[local, case]);
        assert_eq!(rows.len(), 1, "the local floor has no model");
        assert_eq!(rows[0].label, MODELED_LABEL);
        assert!(
            rows[0].service_p50_us > 0.0 && rows[0].source.contains("2 sharers"),
            "{rows:?}"
        );
    }
}
