//! Which Rust toolchain builds the gateway and worker for a target triple.
//!
//! The machine's own toolchain (rustup's `cargo` and `rustc` on PATH) builds for its own
//! triple. For aarch64, rustup's toolchain here has only the x86_64 standard library and
//! none can be fetched, so Debian's Rust builds it: `rustc-web`/`cargo-web` (/usr/bin/rustc,
//! /usr/bin/cargo) with the arm64 standard library from `libstd-rust-web-dev:arm64`, linked
//! (and ring's C and assembly compiled) by `aarch64-linux-gnu-gcc`. Only Debian packages.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::exit::UserError;

pub struct Toolchain {
    pub cargo: PathBuf,
    pub rustc: PathBuf,
    /// Environment for cargo: linker and C compiler of the target.
    pub env: Vec<(String, String)>,
    /// The cargo target folder under the cache: one per toolchain, so neither rebuilds the
    /// other's build scripts.
    pub target_dir: &'static str,
    pub label: &'static str,
}

/// Debian's cross toolchain pieces for aarch64, and the package providing each.
const AARCH64_NEEDS: &[(&str, &str)] = &[
    ("/usr/bin/cargo", "cargo-web"),
    ("/usr/bin/rustc", "rustc-web"),
    (
        "/usr/lib/rustlib/aarch64-unknown-linux-gnu/lib",
        "libstd-rust-web-dev:arm64",
    ),
    ("/usr/bin/aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
];

pub fn for_target(triple: &str) -> Result<Toolchain> {
    match triple {
        "aarch64-unknown-linux-gnu" => {
            let missing: Vec<&str> = AARCH64_NEEDS
                .iter()
                .filter(|(p, _)| !Path::new(p).exists())
                .map(|(_, pkg)| *pkg)
                .collect();
            if !missing.is_empty() {
                return Err(UserError(format!(
                    "building for {triple} needs Debian's Rust cross toolchain; missing: {} (`scripts/setup-host.sh --arch arm64` installs them, with `dpkg --add-architecture arm64`)",
                    missing.join(", ")
                ))
                .into());
            }
            let t = "AARCH64_UNKNOWN_LINUX_GNU";
            let c = "aarch64_unknown_linux_gnu";
            Ok(Toolchain {
                cargo: "/usr/bin/cargo".into(),
                rustc: "/usr/bin/rustc".into(),
                env: vec![
                    ("RUSTC".into(), "/usr/bin/rustc".into()),
                    // rustup's proxies must not pick the toolchain for Debian's cargo.
                    ("RUSTUP_TOOLCHAIN".into(), String::new()),
                    (
                        format!("CARGO_TARGET_{t}_LINKER"),
                        "aarch64-linux-gnu-gcc".into(),
                    ),
                    (format!("CC_{c}"), "aarch64-linux-gnu-gcc".into()),
                    (format!("AR_{c}"), "aarch64-linux-gnu-ar".into()),
                ],
                target_dir: "cargo-target-debian",
                label: "Debian's rustc-web, aarch64-linux-gnu-gcc",
            })
        }
        _ => Ok(Toolchain {
            cargo: "cargo".into(),
            rustc: "rustc".into(),
            env: vec![],
            target_dir: "cargo-target",
            label: "the machine's Rust toolchain",
        }),
    }
}
