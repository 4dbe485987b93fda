//! `/metrics`: the nodes' counters in the Prometheus text exposition format (0.0.4).
//!
//! Rendered from the `/v1/stats` document, so a node and the launcher (which gathers
//! its nodes' documents) give the same families. Each family's HELP and TYPE come once,
//! then its samples for every node; times are in seconds, the base unit.

use std::fmt::Write;

use serde_json::Value;

/// One metric family.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    samples: Vec<String>,
}

impl Family {
    fn new(name: &'static str, kind: &'static str, help: &'static str) -> Self {
        Family {
            name,
            kind,
            help,
            samples: Vec::new(),
        }
    }

    /// A sample `name{labels} value` (`suffix` for a histogram's parts).
    fn sample(&mut self, suffix: &str, labels: &[(&str, String)], value: f64) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        let value = if value.is_infinite() {
            "+Inf".to_string()
        } else {
            format!("{value}")
        };
        self.samples.push(format!(
            "{}{suffix}{{{}}} {value}",
            self.name,
            labels.join(",")
        ));
    }
}

/// Escapes a label value (backslash, quote, newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(value: &Value) -> f64 {
    value.as_f64().unwrap_or(0.0)
}

/// The Prometheus text of a `/v1/stats` document (`{"nodes": [...]}`).
pub fn render(stats: &Value) -> String {
    let mut faults = Family::new(
        "cvmm_remote_faults_total",
        "counter",
        "Faults on pages this node did not hold as needed, by kind.",
    );
    let mut latency = Family::new(
        "cvmm_remote_fault_latency_seconds",
        "histogram",
        "Time from a remote fault's intake to its page being ready, by kind.",
    );
    let mut userfaults = Family::new(
        "cvmm_userfaults_total",
        "counter",
        "userfaultfd events handled, by type.",
    );
    let mut messages = Family::new(
        "cvmm_coherence_messages_total",
        "counter",
        "Coherence work of the engine: invalidations sent and received, forwards, pages.",
    );
    let mut retransmits = Family::new(
        "cvmm_retransmits_total",
        "counter",
        "Messages the node-to-node transport sent again.",
    );
    let mut run = Family::new(
        "cvmm_vp_run_seconds_total",
        "counter",
        "Time each VP spent in KVM_RUN (guest code and the faults it waited in).",
    );
    let mut idle = Family::new(
        "cvmm_vp_idle_seconds_total",
        "counter",
        "Time each VP spent blocked in SpinWait (idle, or waiting on a lock word).",
    );
    let mut calls = Family::new(
        "cvmm_vima_calls_total",
        "counter",
        "ViMA calls the guest made, by name.",
    );
    let mut bad_calls = Family::new(
        "cvmm_vima_bad_calls_total",
        "counter",
        "ViMA calls refused for an unknown number or a bad argument.",
    );
    let empty = Vec::new();
    for node in stats["nodes"].as_array().unwrap_or(&empty) {
        let id = node["id"].as_u64().unwrap_or(0).to_string();
        let at = |key: &str| number(&node[key]);
        for (kind, key) in [
            ("read_miss", "remote_read_faults"),
            ("write_miss", "remote_write_faults"),
            ("upgrade", "upgrades"),
        ] {
            faults.sample("", &[("node", id.clone()), ("kind", kind.into())], at(key));
            let h = &node["fault_latency_histograms_us"][kind];
            let labels = |le: String| vec![("node", id.clone()), ("kind", kind.into()), ("le", le)];
            let bounds = h["le_us"].as_array().unwrap_or(&empty);
            let counts = h["cumulative"].as_array().unwrap_or(&empty);
            for (bound, count) in bounds.iter().zip(counts) {
                let le = format!("{}", number(bound) / 1e6);
                latency.sample("_bucket", &labels(le), number(count));
            }
            latency.sample("_bucket", &labels("+Inf".into()), number(&h["count"]));
            let plain = [("node", id.clone()), ("kind", kind.into())];
            latency.sample("_sum", &plain, number(&h["sum_us"]) / 1e6);
            latency.sample("_count", &plain, number(&h["count"]));
        }
        for (kind, key) in [
            ("missing", "missing_faults"),
            ("minor", "minor_faults"),
            ("write_protect", "write_protect_faults"),
        ] {
            userfaults.sample("", &[("node", id.clone()), ("type", kind.into())], at(key));
        }
        for (kind, key) in [
            ("invalidation_sent", "invalidations_sent"),
            ("invalidation_received", "invalidations_received"),
            ("forward_sent", "forwards_sent"),
            ("page_sent", "pages_sent"),
            ("page_received", "pages_received"),
        ] {
            if !node[key].is_null() {
                messages.sample("", &[("node", id.clone()), ("kind", kind.into())], at(key));
            }
        }
        if !node["retransmits"].is_null() {
            retransmits.sample("", &[("node", id.clone())], at("retransmits"));
        }
        for vp in node["vp_time"].as_array().unwrap_or(&empty) {
            let labels = [
                ("node", id.clone()),
                ("vp", vp["vp"].as_u64().unwrap_or(0).to_string()),
            ];
            run.sample("", &labels, number(&vp["run_s"]));
            idle.sample("", &labels, number(&vp["idle_s"]));
        }
        if let Some(map) = node["calls"].as_object() {
            for (name, count) in map {
                calls.sample(
                    "",
                    &[("node", id.clone()), ("call", name.clone())],
                    number(count),
                );
            }
        }
        for (reason, key) in [("unknown", "unknown_calls"), ("bad_argument", "bad_calls")] {
            bad_calls.sample(
                "",
                &[("node", id.clone()), ("reason", reason.into())],
                at(key),
            );
        }
    }
    let mut out = String::new();
    for family in [
        faults,
        latency,
        userfaults,
        messages,
        retransmits,
        run,
        idle,
        calls,
        bad_calls,
    ] {
        let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind);
        for sample in family.samples {
            let _ = writeln!(out, "{sample}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u64) -> Value {
        serde_json::json!({
            "id": id,
            "remote_read_faults": 7,
            "remote_write_faults": 2,
            "upgrades": 1,
            "missing_faults": 3, "minor_faults": 4, "write_protect_faults": 5,
            "invalidations_sent": 6,
            "retransmits": 9,
            "calls": {"self_info": 2, "console_write": 10},
            "unknown_calls": 0, "bad_calls": 1,
            "vp_time": [{"vp": id, "run_s": 1.5, "idle_s": 0.25}],
            "fault_latency_histograms_us": {
                "read_miss": {"le_us": [10, 100], "cumulative": [3, 6], "count": 7, "sum_us": 700.0},
                "write_miss": {"le_us": [10, 100], "cumulative": [0, 2], "count": 2, "sum_us": 150.0},
                "upgrade": {"le_us": [10, 100], "cumulative": [1, 1], "count": 1, "sum_us": 5.0},
            },
        })
    }

    #[test]
    fn every_family_comes_once_with_the_samples_of_every_node() {
        let text = render(&serde_json::json!({ "nodes": [node(0), node(1)] }));
        assert_eq!(
            text.matches("# TYPE cvmm_remote_faults_total counter")
                .count(),
            1
        );
        assert!(text.contains("cvmm_remote_faults_total{node=\"1\",kind=\"read_miss\"} 7\n"));
        assert!(text.contains(
            "cvmm_remote_fault_latency_seconds_bucket{node=\"0\",kind=\"read_miss\",le=\"0.0001\"} 6\n"
        ));
        assert!(text.contains(
            "cvmm_remote_fault_latency_seconds_bucket{node=\"0\",kind=\"read_miss\",le=\"+Inf\"} 7\n"
        ));
        assert!(text.contains(
            "cvmm_remote_fault_latency_seconds_sum{node=\"0\",kind=\"read_miss\"} 0.0007\n"
        ));
        assert!(text.contains("cvmm_vp_run_seconds_total{node=\"1\",vp=\"1\"} 1.5\n"));
        assert!(text.contains("cvmm_vima_calls_total{node=\"0\",call=\"console_write\"} 10\n"));
        assert!(text
            .contains("cvmm_coherence_messages_total{node=\"0\",kind=\"invalidation_sent\"} 6\n"));
        // Absent counters (a single node has no fabric) give no sample.
        assert!(!text.contains("kind=\"page_received\""));
        // The samples of a family follow its TYPE line, before the next family's.
        let mut family = "";
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                family = rest.split(' ').next().unwrap();
            } else if !line.starts_with('#') {
                assert!(line.starts_with(family), "{line} outside {family}");
            }
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
