//! The access log: lines gathered in memory and written to standard output every 50 ms, or
//! as soon as 64 KiB are waiting, like nginx's `access_log … buffer=64k flush=50ms`
//! (bench/gateway.sh sets nginx so). A write per line was one system call per request
//! (3% of the gateway's time under load, and a lock on stdout taken by every thread);
//! a line now waits at most 50 ms, and what waits is written when the gateway stops.

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

static WAITING: Mutex<Vec<u8>> = Mutex::new(Vec::new());
/// Written out at once past this.
const FULL: usize = 64 * 1024;
/// The longest a line waits.
pub const EVERY: Duration = Duration::from_millis(50);

/// Adds a line (the newline is added here).
pub fn line(args: std::fmt::Arguments) {
    let mut w = WAITING.lock().unwrap_or_else(|e| e.into_inner());
    // Writing to a Vec cannot fail.
    let _ = w.write_fmt(args);
    w.push(b'\n');
    if w.len() >= FULL {
        let full = std::mem::take(&mut *w);
        drop(w);
        write_out(&full);
    }
}

/// Writes what waits (the flusher, and the gateway as it stops).
pub fn flush() {
    let waiting = std::mem::take(&mut *WAITING.lock().unwrap_or_else(|e| e.into_inner()));
    write_out(&waiting);
}

fn write_out(b: &[u8]) {
    if b.is_empty() {
        return;
    }
    let mut out = std::io::stdout().lock();
    // A closed or full stdout loses log lines, never requests.
    let _ = out.write_all(b);
    let _ = out.flush();
}

/// Flushes every `EVERY` for as long as the runtime runs.
pub fn spawn_flusher() {
    tokio::spawn(async {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            flush();
        }
    });
}

/// Bytes for the access log: printable ASCII other than `"` and `\` as is, the rest as
/// `\xNN` (a Host or path holding `"` or a control character must not forge a field or a
/// line). Written straight into the line, no String per field.
pub struct Escaped<'a>(pub &'a [u8]);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plain = |c: u8| (0x21..0x7f).contains(&c) && c != b'"' && c != b'\\';
        let mut rest = self.0;
        while !rest.is_empty() {
            let n = rest.iter().position(|&c| !plain(c)).unwrap_or(rest.len());
            // The plain run is ASCII.
            f.write_str(std::str::from_utf8(&rest[..n]).expect("ASCII"))?;
            if let Some(&c) = rest.get(n) {
                write!(f, "\\x{c:02x}")?;
                rest = &rest[n + 1..];
            } else {
                rest = &[];
            }
        }
        Ok(())
    }
}

/// Milliseconds with one decimal, from whole tenths (`{:.1}` on an f64 cost more than the
/// rest of the line).
pub struct Millis(pub Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // u64: formatting a u128 costs several times more. 2^64 tenths of a millisecond
        // is longer than any request.
        let tenths = u64::try_from((self.0.as_micros() + 50) / 100).unwrap_or(u64::MAX);
        write!(f, "{}.{}ms", tenths / 10, tenths % 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_millis() {
        assert_eq!(
            Escaped(b"evil.test/\" 200\x01\\ok").to_string(),
            "evil.test/\\x22\\x20200\\x01\\x5cok"
        );
        assert_eq!(Escaped(b"").to_string(), "");
        assert_eq!(Millis(Duration::from_micros(1234)).to_string(), "1.2ms");
        assert_eq!(Millis(Duration::from_micros(960)).to_string(), "1.0ms");
        assert_eq!(Millis(Duration::from_micros(40)).to_string(), "0.0ms");
    }
}
