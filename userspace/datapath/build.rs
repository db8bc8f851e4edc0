//! Builds ebpf/programs for bpfel-unknown-none with the nightly toolchain (through aya-build)
//! and leaves the objects in OUT_DIR, where src/loader.rs embeds them.

use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, bail};
use aya_build::{Package, Toolchain};

/// The eBPF binaries of ebpf/programs, as named in its Cargo.toml.
const OBJECTS: [&str; 3] = ["skiff-sock", "skiff-tc", "skiff-pod"];

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?);
    let ebpf_dir = manifest_dir.join("../../ebpf");

    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    println!("cargo:rerun-if-env-changed=SKIFF_EBPF_TOOLCHAIN");
    println!("cargo:rerun-if-env-changed=RUSTC_WORKSPACE_WRAPPER");
    // aya-build watches ebpf/programs; the ABI crate changes the objects just as much.
    println!(
        "cargo:rerun-if-changed={}",
        ebpf_dir.join("common").display()
    );

    // clippy (and `AYA_BUILD_SKIP=1 cargo check`) only need the crate to type-check: empty
    // objects keep include_bytes_aligned! happy, and the loader refuses them at run time.
    let under_clippy = env::var("RUSTC_WORKSPACE_WRAPPER").is_ok_and(|w| w.contains("clippy"));
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip || under_clippy {
        for name in OBJECTS {
            fs::write(out_dir.join(name), b"").context("writing placeholder eBPF object")?;
        }
        return Ok(());
    }

    if which("bpf-linker").is_none() {
        bail!(
            "bpf-linker is not on PATH: run `cargo xtask setup` (it builds bpf-linker against the \
             nightly toolchain's LLVM and installs it into ~/.cargo/bin)"
        );
    }
    let toolchain = env::var("SKIFF_EBPF_TOOLCHAIN").unwrap_or_else(|_| "nightly".to_owned());
    let programs = ebpf_dir.join("programs");
    let root_dir = programs
        .to_str()
        .context("non-UTF-8 path to ebpf/programs")?;
    aya_build::build_ebpf(
        [Package {
            name: "skiff-ebpf",
            root_dir,
            ..Default::default()
        }],
        Toolchain::Custom(&toolchain),
    )?;
    Ok(())
}

fn which(program: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}
