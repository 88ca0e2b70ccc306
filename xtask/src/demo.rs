//! `cargo xtask demo`: build memtrace, compile the leaky demo workload
//! (tests/workloads/demo_leak.c) and trace it, printing memtrace's report.

use std::process::Command;

use anyhow::{bail, Result};
use clap::Args;

use crate::{build, cmd};

/// How often memtrace prints an interim report during the demo.
const INTERVAL: &str = "3s";

#[derive(Args, Debug)]
pub(crate) struct DemoArgs {
    /// How long to trace, e.g. `15s`, `1m`, `1m30s`. The workload runs for
    /// about 20s; tracing stops early if it exits first.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    duration: String,
}

pub(crate) fn run(args: DemoArgs) -> Result<()> {
    // Decide how to get root before spending time on the build.
    let sudo = if cmd::is_root() {
        None
    } else {
        match cmd::which("sudo") {
            Some(sudo) => Some(sudo),
            None => bail!(
                "memtrace must run as root to load eBPF programs and `sudo` was not found: \
                 re-run `cargo xtask demo` as root"
            ),
        }
    };

    let memtrace = build::run()?;

    cmd::step("compile demo workload");
    let root = cmd::workspace_root();
    let workload = cmd::compile_workload(
        "demo_leak",
        &["-O1", "-g", "-fno-omit-frame-pointer", "-pthread"],
    )?;

    cmd::step(&format!(
        "trace demo_leak for {} (sampled every {INTERVAL})",
        args.duration
    ));
    let mut trace = match &sudo {
        Some(sudo) => {
            eprintln!("    not root: running memtrace via sudo");
            let mut c = Command::new(sudo);
            c.arg(&memtrace);
            c
        }
        None => Command::new(&memtrace),
    };
    // The report on stdout, and as a page to open in a browser.
    let page = cmd::target_dir().join("demo").join("report.html");
    std::fs::create_dir_all(page.parent().expect("target/demo"))?;
    trace
        .args(["--interval", INTERVAL, "--duration", &args.duration])
        .args(["-o", "-", "-o"])
        .arg(&page)
        .arg("--")
        .arg(&workload)
        .current_dir(&root);
    cmd::run(&mut trace)?;
    eprintln!("==> the same report as a page: {}", page.display());
    Ok(())
}

/// Accept durations memtrace understands, as one or more `<number><unit>`
/// groups with unit `ms`, `s`, `m` or `h` (e.g. `15s`, `1m30s`).
fn parse_duration(s: &str) -> Result<String, String> {
    let err = || format!("invalid duration {s:?}: expected e.g. `15s`, `500ms`, `2m` or `1m30s`");
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(err());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        if digits == 0 {
            return Err(err());
        }
        rest = &rest[digits..];
        let unit = ["ms", "s", "m", "h"]
            .into_iter()
            .find(|u| rest.starts_with(u))
            .ok_or_else(err)?;
        rest = &rest[unit.len()..];
    }
    if s.trim().chars().all(|c| c == '0' || !c.is_ascii_digit()) {
        return Err(format!("invalid duration {s:?}: must be longer than zero"));
    }
    Ok(s.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn valid_durations() {
        for ok in ["15s", "500ms", "2m", "1h", "1m30s", " 20s "] {
            assert_eq!(parse_duration(ok).as_deref(), Ok(ok.trim()), "{ok}");
        }
    }

    #[test]
    fn invalid_durations() {
        for bad in ["", "15", "s", "15x", "1.5s", "-3s", "15 s", "0s", "0m0s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
