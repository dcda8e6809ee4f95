//! imgforge: turns a server's role into a bootable disk image.
//!
//! The tree follows the subjects: `profile` (schema, loading, merging) and `plan` (resolve),
//! `stage` (the pipeline: base, binaries, compose, image, outputs), `disk` (layout, GPT, MBR,
//! the identifiers written into them), `artifact` (the files written: bmap, sparse, xz),
//! `fs` (the FAT writer, ext4 by mke2fs), `qemu` (the boot-test harness), `cache`, `tool`
//! (running external programs), `commands` (one function per subcommand).

pub mod app_source;
pub mod apt_sources;
pub mod artifact;
pub mod board;
pub mod cache;
pub mod cli;
pub mod commands;
pub mod disk;
pub mod exit;
pub mod flash;
pub mod fs;
pub mod interrupt;
pub mod overlay;
pub mod plan;
pub mod profile;
pub mod progress;
pub mod pydeps;
pub mod qemu;
pub mod seed;
pub mod signing;
pub mod site;
pub mod stage;
pub mod stdout;
pub mod tool;
