//! Live renderers, drawn every interval while tracing: on a terminal a
//! `top`-like table redrawn in place (verdict, bytes, growth, a sparkline of
//! the series, the allocating function), otherwise one plain line per
//! interval. Both read the same report model as the final renderers.

use std::{
    fmt::Write as _,
    io::{IsTerminal, Write},
};

use crate::model::{name_of, verdict_counts, Report, StackReport};
use crate::units::{bytes, rate_per_hour, rate_per_min};

/// Where and how the live view is drawn.
pub enum Live {
    /// Redrawn in place on the terminal on stdout (alternate screen).
    Screen(Screen),
    /// One line per interval to stdout.
    Lines,
    /// One line per interval to stderr (stdout carries a JSON report).
    StderrLines,
}

impl Live {
    /// The table on a terminal, else plain lines (on stderr when stdout
    /// carries JSON), or plain lines when the table is refused.
    pub fn choose(table: bool, json_on_stdout: bool) -> Live {
        if table && std::io::stdout().is_terminal() {
            Live::Screen(Screen { active: false })
        } else if json_on_stdout {
            Live::StderrLines
        } else {
            Live::Lines
        }
    }

    /// Stacks the view shows: as many as fit under `targets` header lines
    /// on a terminal, else the report's `top`.
    pub fn rows(&self, targets: usize, top: usize) -> usize {
        match self {
            // Title, targets, totals, a blank, column titles, a spare line.
            Live::Screen(_) => terminal_size()
                .1
                .saturating_sub(5 + targets.min(TARGETS_SHOWN + 1))
                .max(1),
            Live::Lines | Live::StderrLines => top,
        }
    }

    pub fn draw(&mut self, report: &Report) {
        match self {
            Live::Screen(screen) => {
                let (width, _) = terminal_size();
                screen.draw(&table(report, width));
            }
            Live::Lines => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{}", line(report)).and_then(|()| out.flush());
            }
            Live::StderrLines => {
                let _ = writeln!(std::io::stderr(), "memtrace: {}", line(report));
            }
        }
    }

    /// Leaves the table's screen before the final report is printed.
    pub fn finish(&mut self) {
        if let Live::Screen(screen) = self {
            screen.leave();
        }
    }
}

/// The terminal's alternate screen while the table is shown; the normal
/// screen comes back when done (or dropped on an error), so the final report
/// ends up in the scrollback.
pub struct Screen {
    active: bool,
}

impl Screen {
    fn draw(&mut self, frame: &str) {
        let mut out = std::io::stdout().lock();
        let enter = if self.active {
            ""
        } else {
            "\x1b[?1049h\x1b[?25l"
        };
        self.active = true;
        // Home, draw each line clearing its rest, clear below.
        let body = frame.replace('\n', "\x1b[K\n");
        let _ = write!(out, "{enter}\x1b[H{body}\x1b[J").and_then(|()| out.flush());
    }

    fn leave(&mut self) {
        if std::mem::take(&mut self.active) {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "\x1b[?25h\x1b[?1049l").and_then(|()| out.flush());
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        self.leave();
    }
}

/// (columns, rows) of the terminal on stdout; 80x24 when unknown.
fn terminal_size() -> (usize, usize) {
    // SAFETY: winsize is plain integers, for which all zeroes is valid.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ fills the winsize it is given, which outlives the
    // call.
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    if rc == 0 && ws.ws_col > 0 && ws.ws_row > 0 {
        (ws.ws_col as usize, ws.ws_row as usize)
    } else {
        (80, 24)
    }
}

/// Processes named in the table's header (the largest holders); a watched
/// node may have hundreds.
const TARGETS_SHOWN: usize = 3;

/// The `top`-like table for a terminal `width` columns wide.
pub fn table(report: &Report, width: usize) -> String {
    let mut out = String::new();
    let w = &mut out;
    let tot = &report.totals;
    let _ = writeln!(
        w,
        "memtrace  {:.0} s  sampled every {:.1} s  sorted by {}  (Ctrl-C: stop and report)",
        report.duration_secs,
        report.interval_secs,
        name_of(&report.sort)
    );
    let mut targets: Vec<_> = report.targets.iter().collect();
    targets.sort_by_key(|t| std::cmp::Reverse(t.outstanding_bytes));
    for t in targets.iter().take(TARGETS_SHOWN) {
        let memory = t.memory.as_ref().and_then(|m| {
            let last = m.samples.last()?;
            Some(format!(
                "  RSS {} ({}){}",
                bytes(last.rss_bytes),
                rate_per_hour(m.rss_growth_bytes_per_hour),
                if m.alert { " ALERT" } else { "" }
            ))
        });
        let _ = writeln!(
            w,
            "pid {} ({}){}{}",
            t.pid,
            t.comm,
            if t.exited { " [exited]" } else { "" },
            memory.unwrap_or_default()
        );
    }
    if targets.len() > TARGETS_SHOWN {
        let _ = writeln!(
            w,
            "... and {} more processes",
            targets.len() - TARGETS_SHOWN
        );
    }
    let many = targets.len() > 1;
    let losses = report.losses.nonzero();
    let _ = writeln!(
        w,
        "outstanding {} in {} allocations, {} stacks; losses: {}",
        bytes(tot.outstanding_bytes),
        tot.outstanding_allocations,
        tot.stacks_holding_memory,
        if losses.is_empty() {
            "none".to_string()
        } else {
            losses
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        }
    );
    let _ = writeln!(w);
    const SPARK: usize = 16;
    let _ = writeln!(
        w,
        "{}",
        clip(
            &format!(
                "{:<8} {:>10} {:>8} {:>14} {:<SPARK$} STACK",
                "VERDICT", "BYTES", "BLOCKS", "GROWTH", "SERIES"
            ),
            width
        )
    );
    if report.stacks.is_empty() {
        let _ = writeln!(w, "(nothing outstanding yet)");
    }
    for s in &report.stacks {
        let row = format!(
            "{:<8} {:>10} {:>8} {:>14} {:<SPARK$} {}",
            name_of(&s.verdict),
            bytes(s.outstanding_bytes),
            s.outstanding_allocations,
            rate_per_min(s.growth_bytes_per_sec),
            sparkline(s, SPARK),
            match many {
                true => format!("[{}] {}", s.pid, stack_summary(s)),
                false => stack_summary(s),
            }
        );
        let _ = writeln!(w, "{}", clip(&row, width));
    }
    out
}

/// One plain line: time, totals, the top stack and the verdicts of the
/// stacks in the report.
pub fn line(report: &Report) -> String {
    let tot = &report.totals;
    let mut text = format!(
        "{:>6.1}s  {} outstanding in {} stacks",
        report.duration_secs,
        bytes(tot.outstanding_bytes),
        tot.stacks_holding_memory
    );
    if let Some(top) = report.stacks.first() {
        let _ = write!(
            text,
            "; top: {} {} [{}]",
            stack_summary(top),
            rate_per_min(top.growth_bytes_per_sec),
            name_of(&top.verdict)
        );
    }
    let _ = write!(
        text,
        "; top {}: {}",
        report.stacks.len(),
        verdict_counts(&report.stacks, true)
    );
    text
}

/// The allocating function and its caller: `leaky ← main`.
fn stack_summary(s: &StackReport) -> String {
    let name = |i: usize| {
        s.frames.get(i).map(|f| match &f.function {
            Some(name) => name.clone(),
            None => format!("{:#x}", f.address),
        })
    };
    match (name(0), name(1)) {
        (Some(a), Some(b)) => format!("{a} ← {b}"),
        (Some(a), None) => a,
        _ => "[stack not captured]".into(),
    }
}

/// The last `width` samples of the series as block characters, scaled to
/// the series' peak.
fn sparkline(s: &StackReport, width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let tail = &s.series[s.series.len().saturating_sub(width)..];
    let peak = tail.iter().map(|p| p.bytes).max().unwrap_or(0).max(1);
    tail.iter()
        .map(|p| {
            if p.bytes == 0 {
                ' '
            } else {
                BARS[((p.bytes as f64 / peak as f64) * 7.0).round() as usize]
            }
        })
        .collect()
}

/// The first `width` characters of a line.
fn clip(line: &str, width: usize) -> String {
    line.chars().take(width).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        fixtures::{report, stack},
        Verdict,
    };

    #[test]
    fn sparkline_scales_to_the_peak() {
        let s = stack("leaky", Verdict::Leak, &[0, 100, 400, 800]);
        assert_eq!(sparkline(&s, 16), " ▂▅█");
        assert_eq!(sparkline(&s, 2), "▅█");
    }

    #[test]
    fn table_and_line() {
        let r = report(vec![
            stack("leaky", Verdict::Leak, &[0, 1024, 2048]),
            stack("", Verdict::Plateau, &[0, 5, 5]),
        ]);
        let table = table(&r, 100);
        let rows: Vec<&str> = table.lines().collect();
        assert!(rows[3].starts_with("VERDICT"), "{table}");
        assert!(
            rows[4].starts_with("leak        2.0 KiB        3   +1.0 KiB/min  ▅█ "),
            "{table}"
        );
        assert!(rows[4].ends_with("leaky ← main"), "{table}");
        assert!(rows[5].ends_with("[stack not captured]"), "{table}");
        assert!(table.lines().all(|l| l.chars().count() <= 100));
        assert_eq!(
            line(&r),
            "  12.0s  2.0 KiB outstanding in 2 stacks; top: leaky ← main +1.0 KiB/min \
             [leak]; top 2: 1 leak, 0 growing, 1 plateau, 0 stable"
        );
    }
}
