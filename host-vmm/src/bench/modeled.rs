//! The hook for rows that come from the FPGA latency model instead of a measurement.
//!
//! `hdl_models::latency` (being written alongside) turns the Verilator cycle counts of the
//! offload pipeline into predicted service times. Its rows go into the report's
//! `rows_modeled` array, labelled [`MODELED_LABEL`], and are drawn apart in the plot: a
//! prediction is never mixed with the measured `paths` rows, nor used as a ratio base.
//!
//! To add them: fill [`modeled_rows`] from the model (one [`ModeledRow`] per case it can
//! predict, with `source` naming the model and its clock), and nothing else changes.

use super::parse::ProbeCase;
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

/// Predicted rows for `cases`; empty until `hdl_models::latency` is wired in here.
pub fn modeled_rows(input: ModelInput, cases: &[ProbeCase]) -> Vec<ModeledRow> {
    let _ = (input, cases);
    Vec::new()
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
        assert!(modeled_rows(ModelInput { nodes: 2, pages: 1 }, &[case]).is_empty());
    }
}
