//! `cvmm bench fault-latency` end to end on a small cluster: it writes a JSON document with
//! the documented keys (one row per kind the shape allows, counts equal to the pages
//! asked for) and an SVG chart. Timings are not checked, only their presence and shape,
//! and that the ratios between paths are the ratios of the figures beside them.

use std::process::Command;

use tests::cvmm_bin;

fn temp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("cvmm-bench-test-{}-{name}", std::process::id()))
}

#[test]
fn fault_latency_writes_json_and_svg() {
    let json_path = temp("bench.json");
    let svg_path = temp("bench.svg");
    let out = Command::new(cvmm_bin())
        .args(["bench", "fault-latency", "--nodes", "2", "--pages", "20"])
        .args(["--repeat", "1", "--json"])
        .arg(&json_path)
        .arg("--plot")
        .arg(&svg_path)
        .output()
        .expect("cvmm runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // Progress while it ran: 5 cases on 2 nodes, one repeat, on software/udp at least.
    assert!(
        stderr.contains("software/udp local run 1/1 ..."),
        "{stderr}"
    );

    let text = std::fs::read_to_string(&json_path).expect("JSON written");
    let svg = std::fs::read_to_string(&svg_path).expect("SVG written");
    let _ = std::fs::remove_file(&json_path);
    let _ = std::fs::remove_file(&svg_path);
    let json: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");

    assert!(json["rows_modeled"].is_array(), "{json}");
    let rows = json["paths"].as_array().expect("paths array");
    let software: Vec<&serde_json::Value> = rows
        .iter()
        .filter(|r| r["fabric"] == "software" && r["transport"] == "udp")
        .collect();
    let kinds: Vec<(String, u64)> = software
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap_or("?").to_string(),
                r["sharers"].as_u64().unwrap_or(99),
            )
        })
        .collect();
    let want: Vec<(String, u64)> = [
        ("local", 0),
        ("read_miss", 0),
        ("write_miss", 0),
        ("upgrade", 0),
        ("invalidate", 1),
    ]
    .iter()
    .map(|(k, s)| (k.to_string(), *s))
    .collect();
    assert_eq!(kinds, want, "{json}");
    for row in rows {
        for key in ["p50_us", "p99_us", "mean_us"] {
            assert!(row[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {row}");
        }
        assert_eq!(row["count"], 20, "{row}");
        for key in [
            "service_p50_us",
            "host_serve_cpu_us_per_fault",
            "ratio_to_software_udp",
        ] {
            assert!(row.get(key).is_some(), "missing {key}: {row}");
        }
    }
    // Every ratio is the row's p50 (and fetch service p50) over the software/udp row of
    // the same kind and sharers, recomputed here from the raw figures.
    let base = |row: &serde_json::Value| {
        software
            .iter()
            .find(|b| b["kind"] == row["kind"] && b["sharers"] == row["sharers"])
            .copied()
    };
    let mut other_paths = 0;
    for row in rows {
        let Some(base) = base(row) else { continue };
        for (ratio, value) in [
            ("ratio_to_software_udp", "p50_us"),
            ("service_ratio_to_software_udp", "service_p50_us"),
        ] {
            let (Some(v), Some(b)) = (row[value].as_f64(), base[value].as_f64()) else {
                assert!(row[ratio].is_null(), "{ratio} without {value}: {row}");
                continue;
            };
            let got = row[ratio]
                .as_f64()
                .expect("a ratio where both values exist");
            assert!(
                (got - v / b).abs() <= 1e-9 * (v / b).abs(),
                "{ratio}: {row} vs {base}"
            );
        }
        if row["fabric"] != "software" || row["transport"] != "udp" {
            other_paths += 1;
        }
    }
    // The offload path runs on every machine (its NIC is a model), so ratios between
    // different paths are checked, not only software/udp against itself.
    assert!(other_paths >= 4, "{json}");
    for row in &software {
        if row["kind"] != "local" {
            // Remote kinds have a fetch service time.
            assert!(row["service_p50_us"].as_f64().is_some(), "{row}");
        } else {
            assert!(row["host_serve_cpu_us_per_fault"].is_null(), "{row}");
        }
    }
    // Serving CPU is dropped for a run whose samples came late (a busy machine), so ask
    // for it on most remote rows, not all.
    let with_cpu = software
        .iter()
        .filter(|r| r["host_serve_cpu_us_per_fault"].as_f64().is_some())
        .count();
    assert!(with_cpu >= 2, "{json}");

    assert!(svg.starts_with("<svg"), "{svg}");
    assert!(svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("software/udp (measured)"));
    assert!(svg.contains("invalidate/1"));
    // The table is printed at the end.
    assert!(stdout.contains("software/udp   read_miss"), "{stdout}");
}

/// `cvmm bench reconfig`: every change on both fabrics is measured as many times as asked,
/// with figures in order (p50 <= p99 <= max, all positive) and no fabric failed (its
/// program's output matched the native run's).
#[test]
fn reconfig_measures_every_change_on_both_fabrics() {
    let json_path = temp("reconfig.json");
    let out = Command::new(cvmm_bin())
        .args(["bench", "reconfig", "--cycles", "2", "--json"])
        .arg(&json_path)
        .output()
        .expect("cvmm runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let text = std::fs::read_to_string(&json_path).expect("JSON written");
    let _ = std::fs::remove_file(&json_path);
    let json: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(json["failed"], serde_json::json!([]), "{text}");
    let rows = json["rows"].as_array().expect("rows");
    let mut seen = Vec::new();
    for row in rows {
        assert_eq!(row["count"], 2, "{row}");
        let figure = |key: &str| row[key].as_f64().expect("a number");
        let (p50, p99, max) = (figure("p50_ms"), figure("p99_ms"), figure("max_ms"));
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{row}");
        seen.push(format!(
            "{}/{}",
            row["fabric"].as_str().unwrap(),
            row["change"].as_str().unwrap()
        ));
    }
    let mut want = Vec::new();
    for fabric in ["software", "offload"] {
        for change in ["vp_remove", "vp_add", "memory_shrink", "memory_grow"] {
            want.push(format!("{fabric}/{change}"));
        }
    }
    assert_eq!(seen, want);
    // The table on stdout has a line per row.
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.contains("| vp_remove |"))
            .count(),
        2
    );
}
