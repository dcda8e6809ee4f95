//! Running a shell script inside a root tree (a base root unpacked for the apps' venvs, the
//! wheel builder's root), for the stages that need the image's own programs.

use std::path::Path;
use std::process::Command;

use super::base::shell_quote;

/// `script` run by /bin/sh chrooted into `root`, in a private mount namespace: /proc and
/// /dev exist for the chroot and vanish with it, whatever happens to this process. (An
/// arm64 root runs under qemu-user through binfmt.)
pub(super) fn command(root: &Path, script: &str) -> Command {
    let inner = format!(
        "mount -t proc proc {r}/proc && mount --rbind /dev {r}/dev && exec chroot {r} /bin/sh -c {s}",
        r = shell_quote(&root.display().to_string()),
        s = shell_quote(script)
    );
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--fork",
        "sh",
        "-c",
        &inner,
    ]);
    cmd
}
