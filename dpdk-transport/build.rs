//! Builds the C shim over libdpdk when the `dpdk` feature is on (nothing otherwise).
//!
//! Flags come from `pkg-config libdpdk`, as DPDK documents: its cflags carry
//! `-include rte_config.h -march=corei7`, without which the headers do not compile, and
//! its libs list the `librte_*` libraries to link. No bindgen: the shim's few functions
//! are declared by hand in `src/dpdk/sys.rs`, so a fresh machine needs only `libdpdk-dev`
//! and `pkg-config`, not libclang.

#[cfg(feature = "dpdk")]
mod shim {
    use std::process::Command;

    fn pkg_config(args: &[&str]) -> Result<String, String> {
        let out = Command::new("pkg-config")
            .args(args)
            .arg("libdpdk")
            .output()
            .map_err(|e| format!("cannot run pkg-config ({e}); install pkg-config"))?;
        if !out.status.success() {
            return Err(format!(
                "pkg-config {} libdpdk failed: {}; install libdpdk-dev (Debian: apt-get install dpdk libdpdk-dev pkg-config) or build without the `dpdk` feature",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        String::from_utf8(out.stdout).map_err(|_| "pkg-config printed non-UTF-8".to_string())
    }

    /// Splits pkg-config output into words (`-include rte_config.h` stays two words, which is
    /// how the compiler wants them).
    fn words(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_string).collect()
    }

    pub fn build_shim() -> Result<(), String> {
        println!("cargo:rerun-if-changed=csrc/cvmm_dpdk.c");
        println!("cargo:rerun-if-changed=csrc/cvmm_dpdk.h");
        println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
        let cflags = words(&pkg_config(&["--cflags"])?);
        let libs = words(&pkg_config(&["--libs"])?);

        let mut build = cc::Build::new();
        build
            .file("csrc/cvmm_dpdk.c")
            .include("csrc")
            .warnings(true);
        for flag in &cflags {
            build.flag(flag);
        }
        build.try_compile("cvmm_dpdk").map_err(|e| e.to_string())?;

        for lib in &libs {
            if let Some(name) = lib.strip_prefix("-l") {
                println!("cargo:rustc-link-lib=dylib={name}");
            } else if let Some(dir) = lib.strip_prefix("-L") {
                println!("cargo:rustc-link-search=native={dir}");
            }
        }
        Ok(())
    }
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "dpdk")]
    if let Err(message) = shim::build_shim() {
        println!("cargo:warning={message}");
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}
