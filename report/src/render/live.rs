//! Live renderers, drawn every interval while tracing: on a terminal a
//! `top`-like table redrawn in place (verdict, bytes, growth, a sparkline of
//! the series, as many frames of the stack as the width holds), otherwise
//! one plain line per interval on stderr. Neither ever writes to a stdout
//! that is not a terminal: with `-- CMD` that is the command's. Both read
//! the same report model as the final renderers.

use std::{
    fmt::Write as _,
    io::{IsTerminal, Write},
    os::fd::RawFd,
};

use crate::model::{name_of, verdict_counts, Overhead, Report, StackReport, Verdict};
use crate::units::{bytes, rate_per_hour, rate_per_min};

/// A stack's growth rate, or nothing where it has too few intervals for
/// one (see `StackReport::rated`).
fn rate_of(s: &StackReport) -> String {
    match s.rated {
        true => rate_per_min(s.growth_bytes_per_sec),
        false => String::new(),
    }
}

/// Where and how the live view is drawn.
pub enum Live {
    /// Redrawn in place on a terminal (alternate screen).
    Screen(Screen),
    /// One line per interval to stderr.
    Lines,
}

impl Live {
    /// The table on a terminal (stdout's, else stderr's), unless `table` is
    /// refused; else plain lines on stderr.
    pub fn choose(table: bool) -> Live {
        let terminal =
            [libc::STDOUT_FILENO, libc::STDERR_FILENO]
                .into_iter()
                .find(|&fd| match fd {
                    libc::STDOUT_FILENO => std::io::stdout().is_terminal(),
                    _ => std::io::stderr().is_terminal(),
                });
        match terminal {
            Some(fd) if table => Live::Screen(Screen { fd, active: false }),
            _ => Live::Lines,
        }
    }

    /// Stacks the report drawn needs: on a terminal, enough to fill the
    /// screen after the small single-block stacks are hidden; else the
    /// report's `top`.
    pub fn rows(&self, top: usize) -> usize {
        match self {
            Live::Screen(screen) => 2 * terminal_size(screen.fd).1,
            Live::Lines => top,
        }
    }

    pub fn draw(&mut self, report: &Report) {
        match self {
            Live::Screen(screen) => {
                let (width, height) = terminal_size(screen.fd);
                screen.draw(&table(report, width, height));
            }
            Live::Lines => {
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
    /// The terminal's descriptor: stdout, or stderr when stdout is not one.
    fd: RawFd,
    active: bool,
}

impl Screen {
    fn write(&self, text: &str) {
        let _ = match self.fd {
            libc::STDOUT_FILENO => {
                let mut out = std::io::stdout().lock();
                out.write_all(text.as_bytes()).and_then(|()| out.flush())
            }
            _ => std::io::stderr().lock().write_all(text.as_bytes()),
        };
    }

    fn draw(&mut self, frame: &str) {
        let enter = if self.active {
            ""
        } else {
            "\x1b[?1049h\x1b[?25l"
        };
        self.active = true;
        // Home, draw each line clearing its rest, clear below.
        let body = frame.replace('\n', "\x1b[K\n");
        self.write(&format!("{enter}\x1b[H{body}\x1b[J"));
    }

    fn leave(&mut self) {
        if std::mem::take(&mut self.active) {
            self.write("\x1b[?25h\x1b[?1049l");
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        self.leave();
    }
}

/// (columns, rows) of the terminal on `fd`; 80x24 when unknown.
fn terminal_size(fd: RawFd) -> (usize, usize) {
    // SAFETY: winsize is plain integers, for which all zeroes is valid.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ fills the winsize it is given, which outlives the
    // call.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    if rc == 0 && ws.ws_col > 0 && ws.ws_row > 0 {
        (ws.ws_col as usize, ws.ws_row as usize)
    } else {
        (80, 24)
    }
}

/// Processes named in the table's header (the largest holders); a watched
/// node may have hundreds.
const TARGETS_SHOWN: usize = 3;

/// A stack holding one block of less than this is not a row of the table
/// (unless it grows): a run's one-off allocations (locale data, buffers
/// made once) would push out the stacks worth watching.
pub const HIDDEN_SINGLE_BLOCK: u64 = 64 * 1024;

/// Width of the series' sparkline column (half on terminals narrower than
/// [`WIDE`], for the stack's frames).
const SPARK: usize = 16;
/// Columns from which the sparkline is [`SPARK`] wide.
const WIDE: usize = 120;

/// The `top`-like table for a terminal `width` columns wide and `height`
/// rows high: no line longer than `width`, at most `height - 1` lines (the
/// last row stays free, so the terminal never scrolls).
pub fn table(report: &Report, width: usize, height: usize) -> String {
    let mut lines: Vec<String> = Vec::new();
    lines.push(fit(
        &[
            &format!("memtrace  {:.0} s", report.duration_secs),
            &format!("  every {:.1} s", report.interval_secs),
            &format!("  sorted by {}", name_of(&report.sort)),
            "  (Ctrl-C: stop and report)",
        ],
        width,
    ));
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
        let exited = if t.exited { " [exited]" } else { "" };
        lines.push(fit(
            &[
                &format!("pid {} ({}){exited}", t.pid, t.comm),
                &memory.unwrap_or_default(),
            ],
            width,
        ));
    }
    if targets.len() > TARGETS_SHOWN {
        let more = format!("... and {} more processes", targets.len() - TARGETS_SHOWN);
        lines.push(fit(&[&more], width));
    }
    let many = targets.len() > 1;
    let tot = &report.totals;
    let losses = report.losses.nonzero();
    lines.push(fit(
        &[
            &format!("outstanding {}", bytes(tot.outstanding_bytes)),
            &format!(" in {} allocations", tot.outstanding_allocations),
            &format!(", {} stacks", tot.stacks_holding_memory),
            if losses.is_empty() {
                "; losses: none"
            } else {
                ""
            },
        ],
        width,
    ));
    if let Some(o) = &report.overhead {
        lines.push(fit(&[&cost(o)], width));
    }
    if !losses.is_empty() {
        let mut text = String::from("losses:");
        for (k, v) in &losses {
            let _ = write!(text, " {k}={v}");
        }
        if let Some(remedy) = report.losses.remedy() {
            let _ = write!(text, " ({remedy})");
        }
        lines.extend(wrap(&text, width));
    }
    lines.push(String::new());
    let spark = if width < WIDE { SPARK / 2 } else { SPARK };
    lines.push(fit(
        &[&format!(
            "{:<8} {:>10} {:>8} {:>14} {:<spark$} STACK",
            "VERDICT", "BYTES", "BLOCKS", "GROWTH", "SERIES"
        )],
        width,
    ));
    let shown: Vec<&StackReport> = report.stacks.iter().filter(|s| !hidden(s)).collect();
    if shown.is_empty() {
        lines.push("(nothing outstanding yet)".into());
    }
    // Rows up to the last line but one: one for "more", one left free.
    let room = height.saturating_sub(lines.len() + 2).max(1);
    for s in shown.iter().take(room) {
        let row = format!(
            "{:<8} {:>10} {:>8} {:>14} {:<spark$} {}",
            name_of(&s.verdict),
            bytes(s.outstanding_bytes),
            s.outstanding_allocations,
            rate_of(s),
            sparkline(s, spark),
            match many {
                true => format!("[{}] ", s.pid),
                false => String::new(),
            }
        );
        let stack = frames_within(s, width.saturating_sub(row.chars().count()));
        lines.push(clip(&(row + &stack), width));
    }
    let rows = shown.len().min(room) as u64;
    let more = tot.stacks_holding_memory.saturating_sub(rows);
    if more > 0 {
        let some_hidden = shown.len() < report.stacks.len();
        lines.push(fit(
            &[
                &format!("... and {more} more stacks"),
                &match some_hidden {
                    true => format!(
                        " (single blocks under {} not listed)",
                        bytes(HIDDEN_SINGLE_BLOCK)
                    ),
                    false => String::new(),
                },
            ],
            width,
        ));
    }
    let mut out = String::new();
    for l in lines {
        out.push_str(&l);
        out.push('\n');
    }
    out
}

/// Whether a stack is left out of the table: one block, small, not
/// growing.
fn hidden(s: &StackReport) -> bool {
    s.outstanding_allocations <= 1
        && s.outstanding_bytes < HIDDEN_SINGLE_BLOCK
        && !matches!(s.verdict, Verdict::Leak | Verdict::Growing)
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
        let rate = match top.rated {
            true => format!(" {}", rate_of(top)),
            false => String::new(),
        };
        let _ = write!(
            text,
            "; top: {}{rate} [{}]",
            frames_within(top, 60),
            name_of(&top.verdict)
        );
    }
    let _ = write!(
        text,
        "; top {}: {}",
        report.stacks.len(),
        verdict_counts(&report.stacks, true)
    );
    if let Some(o) = &report.overhead {
        let _ = write!(text, "; {}", cost(o));
    }
    text
}

/// What tracing costs, in a few words: `cost ~4.1% of a CPU (12,345
/// calls/s probed)`.
fn cost(o: &Overhead) -> String {
    let calls = (o.allocation_calls + o.frees) as f64 / o.seconds.max(1e-9);
    format!(
        "cost ~{:.1}% of a CPU ({:.0} calls/s probed)",
        o.one_cpu_share() * 100.0,
        calls
    )
}

/// The allocating function and as many of its callers as fit in `width`
/// characters: `leaky ← handle ← main` (C++ parameter lists left out), the
/// next one cut short (`leaky ← hand…`) when a few characters of it fit.
/// The first frame alone is cut to `width`.
fn frames_within(s: &StackReport, width: usize) -> String {
    let mut names = s.frames.iter().map(|f| match &f.function {
        Some(name) => without_parameters(name).to_string(),
        None => format!("{:#x}", f.address),
    });
    let Some(first) = names.next() else {
        return clip("[stack not captured]", width);
    };
    let mut text = clip(&first, width);
    let mut used = text.chars().count();
    for name in names {
        let add = 3 + name.chars().count(); // " ← name"
        if used + add > width {
            // The start of the next caller, when a few characters fit.
            if width >= used + 3 + 4 {
                let start = clip(&name, width - used - 3 - 1);
                let _ = write!(text, " ← {start}…");
            }
            break;
        }
        let _ = write!(text, " ← {name}");
        used += add;
    }
    text
}

/// A demangled C++ name without its parameter list and what follows it
/// (`const`, `&&`, `noexcept`): `ns::Cache::insert(std::string const&)
/// const` is `ns::Cache::insert`. Names without one are returned whole.
fn without_parameters(name: &str) -> &str {
    const QUALIFIERS: [&str; 6] = ["const", "volatile", "noexcept", "&&", "&", " "];
    // The trailing qualifiers, then the parameter list's closing paren.
    let mut end = name.len();
    'strip: loop {
        for q in QUALIFIERS {
            if name[..end].ends_with(q) {
                end -= q.len();
                continue 'strip;
            }
        }
        break;
    }
    if !name[..end].ends_with(')') {
        return name;
    }
    // Its opening paren, matched backwards.
    let mut depth = 0usize;
    for (i, c) in name[..end].char_indices().rev() {
        match c {
            ')' => depth += 1,
            '(' => {
                depth -= 1;
                if depth == 0 {
                    // `operator()` keeps its own parens.
                    return match &name[..i] {
                        "" => name,
                        head => head,
                    };
                }
            }
            _ => {}
        }
    }
    name
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

/// The parts of a line that fit in `width` whole, from the first on (the
/// first is cut when it alone is too long).
fn fit(parts: &[&str], width: usize) -> String {
    let mut line = String::new();
    for part in parts {
        if line.chars().count() + part.chars().count() > width {
            break;
        }
        line.push_str(part);
    }
    match line.is_empty() {
        true => clip(parts.first().copied().unwrap_or(""), width),
        false => line,
    }
}

/// `text` broken at spaces into lines of at most `width` characters.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    lines.push(line);
    lines.into_iter().map(|l| clip(&l, width)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        fixtures::{report, stack, target},
        Frame, MemoryReport, Verdict,
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
        let table = table(&r, 100, 40);
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
        // What tracing costs, once measured: below the totals, and at the
        // end of the line.
        let mut r = r;
        r.overhead = Some(Overhead {
            seconds: 10.0,
            allocation_calls: 80_000,
            frees: 40_000,
            program_ns: 20_000_000,
            pair_overhead_ns: 1500.0,
            pair_baseline_ns: 8.0,
            cpu_seconds: 0.11,
            cpu_share: 0.0055,
            cpus: 2,
        });
        let costed = super::table(&r, 100, 40);
        let rows: Vec<&str> = costed.lines().collect();
        assert_eq!(
            rows[2], "cost ~1.1% of a CPU (12000 calls/s probed)",
            "{costed}"
        );
        assert!(
            line(&r).ends_with("; cost ~1.1% of a CPU (12000 calls/s probed)"),
            "{}",
            line(&r)
        );
    }

    /// A leak whose stack is `names`, innermost first.
    fn deep(names: &[&str]) -> StackReport {
        let mut s = stack("x", Verdict::Leak, &[0, 1024, 2048]);
        s.frames = names
            .iter()
            .map(|n| Frame {
                address: 0x1000,
                function: Some(n.to_string()),
                file: None,
                line: None,
                module: None,
                inlined: false,
                language: None,
                column: None,
            })
            .collect();
        s
    }

    /// The row of the table that shows `function`.
    fn row_of<'a>(table: &'a str, function: &str) -> &'a str {
        table
            .lines()
            .find(|l| l.contains(function))
            .unwrap_or_else(|| panic!("no row shows {function}:\n{table}"))
    }

    const CHAIN: [&str; 8] = [
        "xmalloc",
        "make_node",
        "parse_block",
        "parse_document",
        "read_input",
        "process_file",
        "run",
        "main",
    ];

    #[test]
    fn a_wide_terminal_shows_as_many_frames_as_fit() {
        let r = report(vec![deep(&CHAIN)]);
        let wide = table(&r, 220, 40);
        assert!(
            row_of(&wide, "xmalloc").ends_with(&CHAIN.join(" ← ")),
            "at 220 columns the whole stack fits:\n{wide}"
        );
        // At 100 columns: the frames that fit whole, the line within 100.
        let narrow = table(&r, 100, 40);
        let row = row_of(&narrow, "xmalloc");
        assert!(
            row.ends_with("xmalloc ← make_node ← parse_block ← parse_docu…"),
            "{narrow}"
        );
        assert!(narrow.lines().all(|l| l.chars().count() <= 100), "{narrow}");
    }

    #[test]
    fn cpp_parameter_lists_are_left_out() {
        for (name, short) in [
            (
                "ns::Cache::insert(std::string const&, int) const",
                "ns::Cache::insert",
            ),
            ("operator new(unsigned long)", "operator new"),
            (
                "std::function<void (int)>::operator()(int) const",
                "std::function<void (int)>::operator()",
            ),
            (
                "(anonymous namespace)::grow(std::vector<int, std::allocator<int> >&) &&",
                "(anonymous namespace)::grow",
            ),
            ("main", "main"),
            ("get_const", "get_const"),
            ("operator&", "operator&"),
        ] {
            assert_eq!(without_parameters(name), short, "{name}");
        }
        let r = report(vec![deep(&[
            "operator new(unsigned long)",
            "Node::Node(Node const&)",
            "main",
        ])]);
        let t = table(&r, 120, 40);
        assert!(
            row_of(&t, "operator new").ends_with("operator new ← Node::Node ← main"),
            "{t}"
        );
    }

    #[test]
    fn small_single_block_stacks_are_hidden() {
        let mut once = deep(&["setlocale", "main"]);
        (once.outstanding_bytes, once.outstanding_allocations) = (600, 1);
        once.verdict = Verdict::Stable;
        let mut big = deep(&["big_buffer", "main"]);
        (big.outstanding_bytes, big.outstanding_allocations) = (1 << 20, 1);
        big.verdict = Verdict::Stable;
        let mut regrown = deep(&["realloc_grow", "main"]);
        (regrown.outstanding_bytes, regrown.outstanding_allocations) = (4096, 1);
        let mut r = report(vec![once, big, regrown, deep(&["leaky", "main"])]);
        r.totals.stacks_holding_memory = 4;
        let t = table(&r, 120, 40);
        assert!(!t.contains("setlocale"), "{t}");
        for shown in ["big_buffer", "realloc_grow", "leaky"] {
            row_of(&t, shown);
        }
        assert!(
            t.lines()
                .last()
                .unwrap()
                .starts_with("... and 1 more stacks (single blocks under 64.0 KiB not listed)"),
            "{t}"
        );
    }

    #[test]
    fn rows_beyond_the_screen_are_counted() {
        let mut r = report((0..30).map(|_| deep(&CHAIN)).collect());
        r.totals.stacks_holding_memory = 30;
        let t = table(&r, 120, 12);
        assert_eq!(t.lines().count(), 11, "{t}");
        assert_eq!(t.lines().last(), Some("... and 24 more stacks"), "{t}");
    }

    #[test]
    fn no_line_wraps_at_80_columns() {
        let mut r = report((0..40).map(|_| deep(&CHAIN)).collect());
        r.duration_secs = 86_400.0;
        r.sort = crate::model::SortBy::Outstanding;
        r.totals.outstanding_allocations = 123_456_789;
        r.totals.stacks_holding_memory = 16_384;
        r.losses.live_map_full = 399_464;
        r.losses.stack_lost = 12_345;
        r.losses.return_without_entry = 7;
        r.losses.address_reused = 8;
        for pid in 1000..1005 {
            let mut t = target(pid, "a-long-comm-nam");
            t.exited = true;
            t.memory = Some(MemoryReport {
                samples: vec![crate::model::MemorySample {
                    t: 1.0,
                    rss_bytes: 123 << 30,
                    anon_bytes: 0,
                    traced_bytes: 0,
                }],
                rss_growth_bytes_per_hour: 1e12,
                anon_growth_bytes_per_hour: 0.0,
                traced_growth_bytes_per_hour: 0.0,
                explained_share: None,
                alert: true,
                alert_threshold_bytes_per_hour: 0.0,
                peak_rss_bytes: 0,
                peak_rss_t: 0.0,
            });
            r.targets.push(t);
        }
        let t = table(&r, 80, 24);
        for l in t.lines() {
            assert!(l.chars().count() <= 80, "{l:?} is wider than 80:\n{t}");
        }
        assert_eq!(t.lines().count(), 23, "one line left free:\n{t}");
        assert!(
            t.starts_with("memtrace  86400 s  every 1.0 s  sorted by outstanding"),
            "{t}"
        );
        assert!(
            row_of(&t, "xmalloc").ends_with("[7] xmalloc ← make_node"),
            "a narrower sparkline leaves room for a caller:\n{t}"
        );
        // The losses, whole, with what to do about them.
        let losses: String = t
            .lines()
            .skip_while(|l| !l.starts_with("losses:"))
            .take_while(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(
            losses,
            "losses: live_map_full=399464 stack_lost=12345 return_without_entry=7 \
             address_reused=8 (raise --max-live and --max-stacks)",
            "{t}"
        );
    }
}
