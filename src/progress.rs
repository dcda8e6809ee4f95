//! Progress of a build: a spinner per stage on a terminal, plain lines otherwise, and the
//! closing summary with each stage's time (or "cached") and the image size.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Built(Duration),
    Cached,
}

#[derive(Debug, Clone)]
pub struct StageRecord {
    pub stage: &'static str,
    pub outcome: Outcome,
}

pub struct Progress {
    tty: bool,
    quiet: bool,
    bar: Option<ProgressBar>,
    current: Option<(&'static str, Instant)>,
    records: Vec<StageRecord>,
    started: Instant,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        Progress {
            tty: std::io::stderr().is_terminal(),
            quiet,
            bar: None,
            current: None,
            records: Vec::new(),
            started: Instant::now(),
        }
    }

    pub fn records(&self) -> &[StageRecord] {
        &self.records
    }

    pub fn start(&mut self, stage: &'static str, what: &str) {
        self.current = Some((stage, Instant::now()));
        if self.quiet {
            return;
        }
        if self.tty {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix:<12} {elapsed:>4} {wide_msg}")
                    .expect("valid template"),
            );
            bar.set_prefix(stage);
            bar.set_message(what.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            self.bar = Some(bar);
        } else {
            eprintln!("==> {stage}: {what}");
        }
    }

    /// A line of detail about the running stage (a tool's progress line).
    pub fn detail(&self, line: &str) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(bar) => bar.set_message(line.to_string()),
            None => eprintln!("    {line}"),
        }
    }

    /// A line that stays on screen (the spinner's detail is replaced by the next): what the
    /// user should see in the build's log, such as a wheel built from source and its time.
    pub fn note(&self, line: &str) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(bar) => bar.println(format!("    {line}")),
            None => eprintln!("    {line}"),
        }
    }

    /// Records a stage that ran alongside another, with its own elapsed time.
    pub fn record(&mut self, stage: &'static str, outcome: Outcome) {
        self.finish_current(stage, outcome);
    }

    pub fn cached(&mut self, stage: &'static str) {
        self.finish_current(stage, Outcome::Cached);
    }

    pub fn done(&mut self, stage: &'static str) {
        let elapsed = match self.current {
            Some((s, t)) if s == stage => t.elapsed(),
            _ => Duration::ZERO,
        };
        self.finish_current(stage, Outcome::Built(elapsed));
    }

    fn finish_current(&mut self, stage: &'static str, outcome: Outcome) {
        self.current = None;
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if !self.quiet {
            eprintln!("    {stage:<12} {}", fmt_outcome(outcome));
        }
        self.records.push(StageRecord { stage, outcome });
    }

    /// Abandons the running stage's spinner so an error prints on a clean line.
    pub fn abort(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    pub fn summary(&self, lines: &[(String, String)]) {
        if self.quiet {
            return;
        }
        // Wall time: binaries and base run side by side, so stage times overlap.
        let total = self.started.elapsed();
        eprintln!("summary:");
        for r in &self.records {
            eprintln!("  {:<12} {}", r.stage, fmt_outcome(r.outcome));
        }
        eprintln!("  {:<12} {:.1}s", "total", total.as_secs_f64());
        for (k, v) in lines {
            eprintln!("  {k:<12} {v}");
        }
    }
}

pub fn fmt_outcome(o: Outcome) -> String {
    match o {
        Outcome::Built(d) => format!("{:.1}s", d.as_secs_f64()),
        Outcome::Cached => "cached".to_string(),
    }
}

pub fn fmt_bytes(n: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    format!("{:.1} MiB", n as f64 / MIB)
}
