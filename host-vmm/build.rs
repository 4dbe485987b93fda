//! Builds the guest kernel and hands its ELF to the VMM (`src/guest_image.rs` embeds it).
//!
//! The guest (`../guest`) is a workspace of its own: a freestanding `no_std` binary with
//! `panic = "abort"` and its own linker script, which the root workspace's profiles and
//! flags must not touch. So this script runs a nested `cargo build --release --locked` of
//! it into `$OUT_DIR/guest-target` and copies the binary to `$OUT_DIR/cvmm-guest`. The
//! nested cargo gets a clean environment: every variable the outer cargo sets for build
//! scripts or that would redirect or reflag the build (`RUSTFLAGS`, `CARGO_*` except the
//! registry and home settings, jobserver `MAKEFLAGS`, wrappers) is removed, and all its
//! settings come from command line flags, so the result does not depend on the caller's
//! working directory or on how the outer build was flagged.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The only installed target; giving it explicitly keeps the guest's rustflags away from
/// build scripts and proc macros, which run on the host.
const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";
/// The guest binary's name (`[[bin]]` in guest/Cargo.toml).
const GUEST_BIN: &str = "cvmm-guest";

/// Variables kept from the outer environment although they start with `CARGO_`:
/// where the registry and its cache live and how to reach it.
const KEPT_CARGO_PREFIXES: [&str; 6] = [
    "CARGO_HOME",
    "CARGO_NET_",
    "CARGO_HTTP_",
    "CARGO_REGISTRIES_",
    "CARGO_REGISTRY_",
    "CARGO_TERM_",
];

/// Variables the outer cargo sets for build scripts, or that change how cargo and rustc
/// build, besides those starting with `CARGO_`.
const REMOVED: [&str; 16] = [
    "RUSTFLAGS",
    "RUSTDOCFLAGS",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTC_LINKER",
    "RUSTDOC",
    "MAKEFLAGS",
    "MFLAGS",
    "TARGET",
    "HOST",
    "OUT_DIR",
    "OPT_LEVEL",
    "PROFILE",
    "DEBUG",
    "NUM_JOBS",
    "CARGO",
];

fn is_removed(name: &str) -> bool {
    if REMOVED.contains(&name) || name.starts_with("DEP_") || name.starts_with("__CARGO") {
        return true;
    }
    name.starts_with("CARGO_")
        && !KEPT_CARGO_PREFIXES
            .iter()
            .any(|prefix| name.starts_with(prefix))
}

fn watch(path: &Path) {
    println!("cargo:rerun-if-changed={}", path.display());
}

fn main() {
    let manifest_dir = PathBuf::from(
        env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR for build scripts"),
    );
    let out_dir =
        PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR for build scripts"));
    let root = manifest_dir
        .parent()
        .expect("host-vmm lives in the workspace root")
        .to_path_buf();
    let guest_dir = root.join("guest");
    let vima_dir = root.join("vima");

    watch(Path::new("build.rs"));
    for path in ["src", "Cargo.toml", "Cargo.lock", "build.rs", "link.ld"] {
        watch(&guest_dir.join(path));
    }
    watch(&vima_dir.join("src"));
    watch(&vima_dir.join("Cargo.toml"));
    // vima inherits its package settings and dependency versions from the root manifest.
    watch(&root.join("Cargo.toml"));

    let cargo: OsString = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = out_dir.join("guest-target");
    let mut command = Command::new(&cargo);
    command
        .current_dir(&guest_dir)
        .arg("build")
        .arg("--release")
        .arg("--locked")
        .arg("--manifest-path")
        .arg(guest_dir.join("Cargo.toml"))
        .arg("--bin")
        .arg(GUEST_BIN)
        .arg("--target")
        .arg(GUEST_TARGET)
        .arg("--target-dir")
        .arg(&target_dir)
        .arg("--config")
        .arg(format!(
            "target.{GUEST_TARGET}.rustflags=[\"-C\", \"relocation-model=static\"]"
        ))
        // The build script's stdout carries `cargo:` directives: keep the nested build's
        // output on stderr.
        .stdout(Stdio::from(std::io::stderr()));
    for (name, _) in env::vars_os() {
        if name.to_str().is_some_and(is_removed) {
            command.env_remove(&name);
        }
    }

    let status = command.status().unwrap_or_else(|err| {
        panic!(
            "failed to run `{} build` for the guest kernel in {}: {err}",
            cargo.to_string_lossy(),
            guest_dir.display()
        )
    });
    if !status.success() {
        panic!(
            "building the guest kernel failed ({status}); its errors are above. \
             Reproduce with: cargo build --release --manifest-path {manifest} --target {GUEST_TARGET}. \
             If cargo says the lock file needs updating (a dependency of guest or vima \
             changed), run `cargo build --manifest-path {manifest}` once and commit \
             guest/Cargo.lock.",
            manifest = guest_dir.join("Cargo.toml").display()
        );
    }

    let built = target_dir
        .join(GUEST_TARGET)
        .join("release")
        .join(GUEST_BIN);
    let embedded = out_dir.join(GUEST_BIN);
    std::fs::copy(&built, &embedded).unwrap_or_else(|err| {
        panic!(
            "failed to copy the guest kernel from {} to {}: {err}",
            built.display(),
            embedded.display()
        )
    });
}
