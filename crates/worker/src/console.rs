//! Where the ready line goes: stdout (the journal) and every console the kernel command line
//! names (`console=tty0 console=ttyS0,115200` gives /dev/tty0 and /dev/ttyS0), so it is seen
//! on a screen and on the serial port the boot test reads.

use std::io::Write;

pub fn cmdline() -> String {
    std::fs::read_to_string("/proc/cmdline").unwrap_or_default()
}

pub fn cmdline_has(word: &str) -> bool {
    cmdline().split_whitespace().any(|w| w == word)
}

/// Console devices named by `console=` words, in order, without duplicates.
pub fn consoles(cmdline: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for w in cmdline.split_whitespace() {
        if let Some(dev) = w.strip_prefix("console=") {
            let name = dev.split(',').next().unwrap_or("");
            if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()) {
                let path = format!("/dev/{name}");
                if !out.contains(&path) {
                    out.push(path);
                }
            }
        }
    }
    if out.is_empty() {
        out.push("/dev/console".to_string());
    }
    out
}

pub fn announce(line: &str) {
    println!("{line}");
    let _ = std::io::stdout().flush();
    for dev in consoles(&cmdline()) {
        if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&dev) {
            let _ = f.write_all(format!("\r\n{line}\r\n").as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consoles_from_cmdline() {
        assert_eq!(
            consoles("root=x console=tty0 console=ttyS0,115200n8 quiet"),
            ["/dev/tty0", "/dev/ttyS0"]
        );
        assert_eq!(consoles("root=x"), ["/dev/console"]);
        assert_eq!(consoles("console=../x console=ttyAMA0"), ["/dev/ttyAMA0"]);
    }
}
