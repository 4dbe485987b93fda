//! Link arguments for the freestanding kernel binary.
//!
//! They are given here rather than in `.cargo/config.toml` because a nested `cargo build`
//! (host-vmm's build script) reads config files from its working directory, not from the
//! manifest's; link arguments from a build script apply wherever cargo is started. They
//! apply to the binary only (`-bins`), so the library's host unit tests link normally.

use std::path::PathBuf;

fn main() {
    let manifest_dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let script = manifest_dir.join("link.ld");
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-link-arg-bins=-T{}", script.display());
    for arg in [
        "-nostartfiles",
        "-nostdlib",
        "-static",
        "-no-pie",
        "-Wl,--build-id=none",
        "-Wl,-z,noexecstack",
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
}
