//! `cargo xtask fuzz`: runs every cargo fuzz target of fuzz/ — memtrace's
//! parsers of outside input — for a bounded time each, starting from the
//! seeds in fuzz/seeds/TARGET (new inputs go to fuzz/corpus/TARGET), and
//! prints how many inputs each ran and what crashed (libFuzzer keeps a
//! crashing input in fuzz/artifacts/TARGET/). Needs the nightly toolchain;
//! installs cargo-fuzz with `cargo install --locked` when missing.

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::cmd;

#[derive(Args, Debug)]
pub(crate) struct FuzzArgs {
    /// How long each target runs.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
    /// Run only this target (repeatable; default: every target).
    #[arg(long = "target", value_name = "TARGET")]
    targets: Vec<String>,
}

/// What one target did.
struct Outcome {
    target: String,
    executions: Option<u64>,
    /// Wall time, the target's build included.
    seconds: f64,
    crash: Option<String>,
}

pub(crate) fn run(args: FuzzArgs) -> Result<()> {
    ensure_cargo_fuzz()?;
    let dir = cmd::workspace_root().join("fuzz");
    let targets = match args.targets.is_empty() {
        true => list_targets(&dir)?,
        false => args.targets.clone(),
    };
    let mut outcomes = Vec::new();
    for target in &targets {
        cmd::step(&format!("fuzz {target} for {} s", args.seconds));
        outcomes.push(fuzz_one(&dir, target, args.seconds)?);
    }
    println!(
        "\n{:<14} {:>14} {:>8}  result",
        "target", "executions", "wall s"
    );
    for o in &outcomes {
        println!(
            "{:<14} {:>14} {:>8.0}  {}",
            o.target,
            o.executions.map_or("?".to_string(), |n| n.to_string()),
            o.seconds,
            o.crash.as_deref().unwrap_or("no crash")
        );
    }
    let crashed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.crash.is_some())
        .map(|o| o.target.as_str())
        .collect();
    if !crashed.is_empty() {
        bail!(
            "{} crashed: the inputs are in fuzz/artifacts/ (reproduce with `cargo +nightly fuzz \
             run TARGET fuzz/artifacts/TARGET/crash-…` in fuzz/)",
            crashed.join(", ")
        );
    }
    Ok(())
}

/// `cargo fuzz` on the nightly toolchain, run in fuzz/ without what the
/// outer (stable) cargo put in the environment.
fn cargo_fuzz(dir: &Path) -> Command {
    let mut c = Command::new("rustup");
    c.args(["run", "nightly", "cargo", "fuzz"])
        .current_dir(dir)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTC_BOOTSTRAP");
    c
}

fn list_targets(dir: &Path) -> Result<Vec<String>> {
    let out = cmd::stdout_of(cargo_fuzz(dir).arg("list"))?;
    let targets: Vec<String> = out.lines().map(|l| l.trim().to_string()).collect();
    if targets.is_empty() {
        bail!("`cargo fuzz list` found no target in {}", dir.display());
    }
    Ok(targets)
}

/// Runs one target for `seconds`, from its seeds.
fn fuzz_one(dir: &Path, target: &str, seconds: u64) -> Result<Outcome> {
    let corpus = dir.join("corpus").join(target);
    fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let mut run = cargo_fuzz(dir);
    run.args(["run", target]).arg(&corpus);
    let seeds = dir.join("seeds").join(target);
    if seeds.is_dir() {
        run.arg(&seeds);
    }
    run.args([
        "--",
        &format!("-max_total_time={seconds}"),
        "-print_final_stats=1",
    ]);
    eprintln!("    $ {}", cmd::display(&run));
    let started = Instant::now();
    let out = run
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .output()
        .context("running cargo fuzz")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let executions = stderr
        .lines()
        .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .and_then(|n| n.trim().parse().ok());
    let crash = (!out.status.success()).then(|| {
        // libFuzzer's summary line, else the end of what it said.
        stderr
            .lines()
            .rev()
            .find(|l| l.starts_with("SUMMARY:") || l.contains("panicked at"))
            .or_else(|| stderr.lines().rev().find(|l| !l.trim().is_empty()))
            .unwrap_or("failed")
            .trim()
            .to_string()
    });
    if crash.is_some() {
        let tail: Vec<&str> = stderr.lines().rev().take(40).collect();
        for line in tail.into_iter().rev() {
            eprintln!("    | {line}");
        }
    }
    Ok(Outcome {
        target: target.to_string(),
        executions,
        seconds: started.elapsed().as_secs_f64(),
        crash,
    })
}

/// cargo-fuzz on PATH, else `cargo install cargo-fuzz --locked`.
fn ensure_cargo_fuzz() -> Result<()> {
    if cmd::which("cargo-fuzz").is_some() {
        eprintln!("    ok: cargo-fuzz is installed");
        return Ok(());
    }
    eprintln!("    installing cargo-fuzz with `cargo install --locked`...");
    cmd::run(cmd::cargo().args(["install", "cargo-fuzz", "--locked"]))
}
