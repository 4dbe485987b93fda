//! Builds the Verilator model of `rtl/cv_top.v` and the C++ shim when feature `hdl-sim` is
//! on; does nothing otherwise, so the crate builds on machines without Verilator.
//!
//! Debian's Verilator 5.006 ships the runtime sources but no `libverilated.a`, and no
//! Rust-Verilator crate works with it, so the steps are explicit (see docs/platform.md, "HDL"):
//! `verilator --cc --build` makes `Vcv_top__ALL.a`, renamed here to `libVcv_top.a`; the
//! runtime (`verilated.cpp`, `verilated_threads.cpp`) and `sim/shim.cpp` are compiled with
//! `cc`. Link order: shim, model, runtime (each needs the next).

fn main() -> Result<(), String> {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "hdl-sim")]
    sim::build()?;
    Ok(())
}

#[cfg(feature = "hdl-sim")]
mod sim {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// The Verilog sources, top first.
    const RTL: [&str; 9] = [
        "rtl/cv_top.v",
        "rtl/cv_bram.v",
        "rtl/cv_parser.v",
        "rtl/cv_coherence.v",
        "rtl/cv_fifo.v",
        "rtl/cv_fanout.v",
        "rtl/cv_dma.v",
        "rtl/cv_reply.v",
        "rtl/cv_steer.v",
    ];

    /// The sizes of the built pipeline: Verilog parameters of `cv_top` (`-G`) and defines of
    /// the shim (`CV_*`), so `hdl_models::rtl::params` reports what was built.
    const SIZES: [(&str, u32); 8] = [
        ("NPAGES", 64),
        ("IDXW", 6),
        ("NREQ", 16),
        ("RW", 4),
        ("NPEND", 4),
        ("PW", 2),
        ("NVEC", 16),
        ("VW", 4),
    ];

    /// Defines the Verilator-generated makefile uses for the model; the runtime must agree.
    const MODEL_DEFINES: [&str; 5] = [
        "VM_COVERAGE",
        "VM_SC",
        "VM_TRACE",
        "VM_TRACE_FST",
        "VM_TRACE_VCD",
    ];

    fn verilator_root() -> Result<PathBuf, String> {
        let out = Command::new("verilator")
            .args(["--getenv", "VERILATOR_ROOT"])
            .output()
            .map_err(|e| {
                format!("feature hdl-sim needs Verilator 5 (`apt-get install -y verilator`): {e}")
            })?;
        if !out.status.success() {
            return Err("`verilator --getenv VERILATOR_ROOT` failed".into());
        }
        let root = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Ok(PathBuf::from(root))
    }

    pub fn build() -> Result<(), String> {
        let manifest =
            PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
        let out = PathBuf::from(std::env::var("OUT_DIR").map_err(|e| e.to_string())?);
        let obj = out.join("verilated");
        for file in RTL.iter().chain(["rtl/cv_defs.vh", "sim/shim.cpp"].iter()) {
            println!("cargo:rerun-if-changed={file}");
        }
        let root = verilator_root()?;
        let status = Command::new("verilator")
            .current_dir(&manifest)
            .args([
                "--cc",
                "--build",
                "-j",
                "2",
                "--top-module",
                "cv_top",
                "-Wno-fatal",
            ])
            .args(["-Irtl", "-CFLAGS", "-fPIC", "-CFLAGS", "-O1"])
            .args(
                SIZES
                    .iter()
                    .map(|(name, value)| format!("-G{name}={value}")),
            )
            .arg("--Mdir")
            .arg(&obj)
            .args(RTL)
            .status()
            .map_err(|e| format!("running verilator: {e}"))?;
        if !status.success() {
            return Err(format!("verilator failed ({status}) on hdl-models/rtl"));
        }
        let model = obj.join("Vcv_top__ALL.a");
        std::fs::copy(&model, out.join("libVcv_top.a"))
            .map_err(|e| format!("copying {}: {e}", model.display()))?;

        let include = root.join("include");
        let common = |build: &mut cc::Build, obj: &Path| {
            build
                .cpp(true)
                .std("c++17")
                .opt_level(1)
                .include(&include)
                .include(include.join("vltstd"))
                .include(obj)
                .flag_if_supported("-Wno-unused-parameter")
                .flag_if_supported("-Wno-unused-variable")
                .flag_if_supported("-Wno-sign-compare");
            for define in MODEL_DEFINES {
                build.define(define, "0");
            }
            for (name, value) in SIZES {
                build.define(&format!("CV_{name}"), value.to_string().as_str());
            }
        };
        let mut shim = cc::Build::new();
        common(&mut shim, &obj);
        shim.file(manifest.join("sim/shim.cpp")).compile("cvshim");
        println!("cargo:rustc-link-search=native={}", out.display());
        println!("cargo:rustc-link-lib=static=Vcv_top");
        let mut runtime = cc::Build::new();
        common(&mut runtime, &obj);
        runtime
            .file(include.join("verilated.cpp"))
            .file(include.join("verilated_threads.cpp"))
            .compile("verilated");
        println!("cargo:rustc-link-lib=pthread");
        Ok(())
    }
}
