//! The command line: clap structs only. `main` parses, `commands` runs.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::plan::{DEFAULT_ROLE, DEFAULT_SITE, DEFAULT_TARGET};
use crate::stage::Stage;

#[derive(Debug, Parser)]
#[command(
    name = "imgforge",
    version,
    about = "Turns a server's role into a bootable disk image",
    long_about = "Turns a server's role into a bootable disk image.\n\n\
        A role (profiles/roles/), a target (profiles/targets/) and a site (profiles/sites/) \
        resolve into a plan, which `imgforge plan` shows. `build` turns it into an image, \
        `test` and `boot` run the image in QEMU, `seed` puts secrets into an image and \
        `flash` writes it to a card with its secrets.",
    help_expected = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build the disk image of a role for a target.
    Build(BuildArgs),
    /// Build (from cache when unchanged), boot headless in QEMU, and wait for IMGFORGE-READY.
    Test(TestArgs),
    /// Build and boot in QEMU with the serial console on this terminal.
    Boot(BootArgs),
    /// Show what the image of a role on a target will be.
    ///
    /// The disk layout with sizes, the files written, the packages, the services with their
    /// ports and who may reach each, the gateway's routes, the secret slots and the apps.
    /// `--toml` prints the effective merged profile instead, `--json` the summary for scripts.
    Plan(PlanArgs),
    /// Write an app's lock: its requirements pinned, with hashes, for the image's Python
    /// on x86_64 and aarch64, and fetch their wheels into the cache.
    Lock(LockArgs),
    /// List the roles, targets and sites.
    List(ListArgs),
    /// Show an image's partitions, filesystems and manifest.
    Inspect(InspectArgs),
    /// Write secret values into an image's seed area (checked against its slots).
    Seed(SeedArgs),
    /// Write an image to a card (or a file), verified, then seed its secrets.
    Flash(FlashArgs),
    /// Publish a version for nodes to update from: the root slot compressed, the kernel,
    /// initramfs and boot entry (a card: its boot partition compressed), a manifest, and a
    /// signed SHA256SUMS.
    ///
    /// The folder can be served by any static web server; publishing another version into
    /// it adds that version. Sign with a key from `imgforge keygen`.
    Publish(PublishArgs),
    /// Make the OpenPGP key that signs published versions (with the host's gpg), in a
    /// folder of the user's: ~/.config/imgforge/signing unless --key-dir says otherwise.
    Keygen(KeygenArgs),
    /// Make a node take its newest published version now, over SSH (as its timer would),
    /// and report whether it came back READY on it or returned to the version it ran.
    Update(UpdateArgs),
    /// Write the man pages or a shell's completion script (what `scripts/build` installs).
    #[command(hide = true)]
    Generate(GenerateArgs),
    /// Derive a Raspberry Pi card's initramfs drivers from the device trees and kernel
    /// installed in a root (the base stage runs it in mmdebstrap's hook; also for checks).
    #[command(hide = true)]
    InitramfsDrivers(InitramfsDriversArgs),
}

#[derive(Debug, Args)]
pub struct InitramfsDriversArgs {
    /// The root holding the kernel (/usr/lib/modules/<version>) and its device trees.
    #[arg(long, value_name = "DIR")]
    pub root: PathBuf,
    /// The walk's spec (JSON: device trees, storage node, devices, modules), as the base
    /// stage writes it.
    #[arg(long, value_name = "FILE", required_unless_present = "target")]
    pub spec: Option<PathBuf>,
    /// Or a target's [raspi] table (profiles/targets/NAME.toml).
    #[arg(long, conflicts_with = "spec")]
    pub target: Option<String>,
    /// With --target: the root device to derive for (default: the target's).
    #[arg(long, requires = "target")]
    pub root_device: Option<crate::profile::machine::RootDevice>,
    /// Write the module list (one per line, initramfs-tools' modules format) here.
    #[arg(long, value_name = "FILE")]
    pub modules: Option<PathBuf>,
    /// Write each driver with its reason (TSV) here; stdout otherwise.
    #[arg(long, value_name = "FILE")]
    pub reasons: Option<PathBuf>,
}

/// `imgforge lock APP --role ROLE`
#[derive(Args, Debug)]
pub struct LockArgs {
    /// The app slot whose requirements to lock (its folder is the one the site names).
    #[arg(value_name = "APP")]
    pub app: String,
    #[command(flatten)]
    pub profile: ProfileArgs,
    /// Cache folder (wheels, the uv tool) instead of ~/.cache/imgforge.
    #[arg(long, value_name = "DIR", help_heading = "Advanced")]
    pub cache: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct ProfileArgs {
    /// Role to build (a file in profiles/roles/).
    #[arg(long, default_value = DEFAULT_ROLE)]
    pub role: String,
    /// Target to build for (a file in profiles/targets/).
    #[arg(long, default_value = DEFAULT_TARGET)]
    pub target: String,
    /// Site binding roles to hosts (a file in profiles/sites/).
    #[arg(long, default_value = DEFAULT_SITE)]
    pub site: String,
    /// Host of the site to build (default: the first host running the role).
    #[arg(long)]
    pub host: Option<String>,
    /// The image's version: root slot A's name and what the node reports; letters, digits and `.+~^_-`, starting with a letter or digit (default: `0~` and a hash of the inputs).
    #[arg(long = "version", value_name = "VERSION")]
    pub image_version: Option<String>,
    /// Profiles folder adding to the embedded profiles, its files winning (default: ./profiles if present).
    #[arg(long, value_name = "DIR", help_heading = "Inputs")]
    pub profiles: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub profile: ProfileArgs,
    /// Print the effective merged profile as TOML instead of the summary.
    #[arg(long, conflicts_with = "json")]
    pub toml: bool,
    /// Print the summary as JSON, for scripts (its shape is in the README).
    #[arg(long)]
    pub json: bool,
}

impl PlanArgs {
    pub fn format(&self) -> PlanFormat {
        match (self.toml, self.json) {
            (true, _) => PlanFormat::Toml,
            (_, true) => PlanFormat::Json,
            _ => PlanFormat::Summary,
        }
    }
}

/// How `plan` prints the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanFormat {
    /// For a person: what the image will be, section by section.
    Summary,
    /// The effective merged profile, every key.
    Toml,
    /// The summary's content as one JSON object.
    Json,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(subcommand)]
    pub what: Generate,
}

#[derive(Debug, Subcommand)]
pub enum Generate {
    /// Man pages: imgforge.1 and one per subcommand (imgforge-build.1, ...), written to DIR.
    Man {
        /// Folder the pages are written to (created if missing), e.g. /usr/local/share/man/man1.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// The completion script of a shell, written to DIR (or to stdout without DIR).
    Completions {
        /// The shell to complete for.
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
        /// Folder the script is written to (created if missing), under the name the shell
        /// looks for: imgforge.bash, _imgforge (zsh), imgforge.fish.
        #[arg(value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub profile: ProfileArgs,
    /// Folder the image, qcow2, manifest and SHA256SUMS are written to.
    #[arg(long, value_name = "DIR", default_value = "images")]
    pub out: PathBuf,
    /// Rebuild this stage and every later one, ignoring their cache.
    #[arg(long, value_name = "STAGE", help_heading = "Advanced")]
    pub rebuild: Option<Stage>,
    /// Overlays folder replacing the embedded overlays (default: ./overlays if present).
    #[arg(long, value_name = "DIR", help_heading = "Inputs")]
    pub overlays: Option<PathBuf>,
    /// The imgforge checkout holding crates/gateway and crates/worker.
    #[arg(long, value_name = "DIR", help_heading = "Inputs")]
    pub source: Option<PathBuf>,
    /// Cache folder (default: $IMGFORGE_CACHE, else ~/.cache/imgforge).
    #[arg(long, value_name = "DIR", help_heading = "Advanced")]
    pub cache: Option<PathBuf>,
    /// The signing key folder (see `keygen`) whose public key the image of a host with
    /// `updates` holds (default: ~/.config/imgforge/signing).
    #[arg(long, value_name = "DIR", help_heading = "Inputs")]
    pub key_dir: Option<PathBuf>,
    /// Print only errors and the result.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    #[command(flatten)]
    pub build: BuildArgs,
    /// Seconds to wait for the ready line (default: the profile's boot-timeout-secs).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Boot the kernel directly (-kernel) instead of through UEFI firmware and systemd-boot.
    #[arg(long)]
    pub direct_kernel: bool,
    /// Where the serial console is saved (default: <out>/<role>-<target>.serial.log).
    #[arg(long, value_name = "FILE")]
    pub serial_log: Option<PathBuf>,
    #[command(flatten)]
    pub disk: DiskArgs,
}

/// What `test` and `boot` boot: a seeded throwaway copy of the image, or a given disk.
#[derive(Debug, Args)]
pub struct DiskArgs {
    /// Seed the booted copy with these secrets (default: throwaway random values for every
    /// slot the node does not generate).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["unseeded", "disk"])]
    pub secrets: Option<PathBuf>,
    /// Boot without seeding: required slots stay empty (the node reports them).
    #[arg(long, conflicts_with = "disk")]
    pub unseeded: bool,
    /// Attach the VM to this existing tap device (put it on a host bridge to join several
    /// VMs on one network) instead of QEMU's user network.
    #[arg(long, value_name = "IFNAME")]
    pub tap: Option<String>,
    /// Boot this disk file as it is, keeping its writes (e.g. a copy you seeded, enlarged or
    /// booted before), instead of a throwaway copy of the built image.
    #[arg(long, value_name = "FILE")]
    pub disk: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BootArgs {
    #[command(flatten)]
    pub build: BuildArgs,
    /// Forward a TCP port: HOST:GUEST, e.g. 8080:80 (repeatable). Binds 127.0.0.1 only.
    #[arg(long = "forward", value_name = "HOST:GUEST", value_parser = parse_forward)]
    pub forwards: Vec<(u16, u16)>,
    /// Boot the kernel directly (-kernel) instead of through UEFI firmware and systemd-boot.
    #[arg(long)]
    pub direct_kernel: bool,
    #[command(flatten)]
    pub disk: DiskArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Profiles folder adding to the embedded profiles, its files winning (default: ./profiles if present).
    #[arg(long, value_name = "DIR")]
    pub profiles: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The image (.img or .img.xz) to inspect.
    pub image: PathBuf,
    /// Print the report as JSON, for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SeedArgs {
    /// The raw image (.img) to seed.
    pub image: PathBuf,
    /// TOML file with one `slot-name = "value"` per slot (see profiles/secrets.example.toml).
    #[arg(long, value_name = "FILE")]
    pub secrets: PathBuf,
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub profile: ProfileArgs,
    /// Folder the version's files, SHA256SUMS and SHA256SUMS.gpg are written to (what the
    /// nodes' update URL serves).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The signing key's folder (default: ~/.config/imgforge/signing; see `keygen`).
    #[arg(long, value_name = "DIR")]
    pub key_dir: Option<PathBuf>,
    /// Folder the image is built in (as `build --out`).
    #[arg(long, value_name = "DIR", default_value = "images")]
    pub images: PathBuf,
    /// Overlays folder replacing the embedded overlays (default: ./overlays if present).
    #[arg(long, value_name = "DIR", help_heading = "Inputs")]
    pub overlays: Option<PathBuf>,
    /// The imgforge checkout holding crates/gateway and crates/worker.
    #[arg(long, value_name = "DIR", help_heading = "Inputs")]
    pub source: Option<PathBuf>,
    /// Cache folder (default: $IMGFORGE_CACHE, else ~/.cache/imgforge).
    #[arg(long, value_name = "DIR", help_heading = "Advanced")]
    pub cache: Option<PathBuf>,
    /// Print only errors and the published files.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The site's host to update (it must have `updates` in the site).
    #[arg(long)]
    pub host: String,
    /// Site the host is in (a file in profiles/sites/).
    #[arg(long, default_value = DEFAULT_SITE)]
    pub site: String,
    /// Profiles folder adding to the embedded profiles (default: ./profiles if present).
    #[arg(long, value_name = "DIR")]
    pub profiles: Option<PathBuf>,
    /// Where to reach the node (default: its static address in the site, else its FQDN).
    #[arg(long, value_name = "ADDRESS")]
    pub address: Option<String>,
    /// SSH port.
    #[arg(long, default_value_t = 22)]
    pub port: u16,
    /// The private key whose public half is in the site's admin-ssh-keys (default: ssh's own).
    #[arg(long, short = 'i', value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// An ssh -o option, e.g. UserKnownHostsFile=FILE (repeatable).
    #[arg(long = "ssh-option", value_name = "KEY=VALUE")]
    pub ssh_options: Vec<String>,
    /// How long to wait for the node to come back READY on the new version, in seconds.
    #[arg(long, default_value_t = 1800)]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Folder the key is made in (created mode 0700; refused if it already holds a key or
    /// lies inside the checkout).
    #[arg(long, value_name = "DIR")]
    pub key_dir: Option<PathBuf>,
    /// The key's user id (default: `imgforge update signing (<this host's name>)`).
    #[arg(long, value_name = "TEXT")]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct FlashArgs {
    /// The image: .img, or .img.xz (decompressed as it is written).
    pub image: PathBuf,
    /// The card's block device (e.g. /dev/sdb), or a file with --file-target.
    pub target: PathBuf,
    /// Secrets file to seed into the written card (see profiles/secrets.example.toml).
    #[arg(long, value_name = "FILE")]
    pub secrets: Option<PathBuf>,
    /// Do not ask for confirmation.
    #[arg(long, short)]
    pub yes: bool,
    /// Write a device that is not removable (a fixed disk, a loop device).
    #[arg(long)]
    pub force: bool,
    /// The target is a regular file (created if missing), not a device.
    #[arg(long)]
    pub file_target: bool,
    /// Block map to use (default: <name>.img.bmap beside the image, if present).
    #[arg(long, value_name = "FILE", help_heading = "Advanced")]
    pub bmap: Option<PathBuf>,
    /// Write every byte even when a bmap is present.
    #[arg(long, help_heading = "Advanced", conflicts_with = "bmap")]
    pub no_bmap: bool,
    /// Testing aid: fail with a write error after this many MiB.
    #[arg(long, hide = true, value_name = "MIB")]
    pub fail_after_mib: Option<u64>,
}

fn parse_forward(s: &str) -> Result<(u16, u16), String> {
    let (h, g) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}`: expected HOST:GUEST, e.g. 8080:80"))?;
    let port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("`{p}` is not a port number"))
    };
    Ok((port(h)?, port(g)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn forward_parses() {
        assert_eq!(parse_forward("8080:80"), Ok((8080, 80)));
        assert!(parse_forward("8080").is_err());
        assert!(parse_forward("x:80").is_err());
    }
}
