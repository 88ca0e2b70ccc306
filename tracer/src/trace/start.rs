//! The start of a trace: the targets given on the command line hooked
//! before the run (a `--pid` process on every allocator it maps, a held
//! `-- CMD` child on its program's libraries before it execs), and the
//! line that says what is traced (and, with --verbose, how long the start
//! took).

use std::{path::Path, time::Duration};

use anyhow::{bail, Context, Result};

use super::{kernel::Machinery, targets::Target, Tracing};
use crate::{
    accounting::verdict,
    config::{self, Mode, Selection},
    discover::{
        allocator,
        launch::{self, HeldChild},
        select,
        target::{self, TargetInfo},
    },
};

/// Hooks every allocator mapped by a running process (and the
/// `--allocator-lib` ones).
pub(super) fn attach_pid(m: &mut Machinery, pid: u32) -> Result<Target> {
    let info = target::inspect(pid)?;
    // Unreadable maps are an error here (the allocator cache below would
    // just see no files).
    target::read_maps(pid)?;
    m.probes.add_target(pid)?;
    let mut allocators: Vec<String> = Vec::new();
    for file in m.files.of(pid) {
        m.probes.attach_allocator(Some(pid), &file)?;
        m.describe_probes(&file.path, &file);
        if !allocators.contains(&file.name) {
            allocators.push(file.name.clone());
        }
    }
    if allocators.is_empty() {
        if !allocator::is_go_executable(Path::new(&format!("/proc/{pid}/exe"))) {
            bail!(
                "no allocator symbols (malloc/free) found in pid {pid} ({}): none of its mapped \
                 files exports them (--allocator-lib and --symbol-prefix name others)",
                info.comm
            );
        }
        crate::note(&format!(
            "pid {pid} ({}) is a Go program: Go code gets no probes; its runtime's mmap calls \
             are traced and its heap profile read",
            info.comm
        ));
    }
    Ok(Target::new(info, allocators))
}

/// Hooks the allocator of a held child's program before it execs.
pub(super) fn attach_command(m: &mut Machinery, child: &HeldChild) -> Result<Target> {
    let pid = child.pid;
    m.probes.add_target(pid)?;
    let mut allocators = Vec::new();
    let mut libraries = launch::libraries_of(&child.program)?;
    libraries.extend(m.files.forced().iter().map(|f| f.path.clone()));
    for path in libraries {
        let name = path.display().to_string();
        let Some(file) = m
            .files
            .open(path, name)
            .context("reading the symbols of the program's libraries")?
        else {
            continue;
        };
        if m.probes.attach_allocator(Some(pid), &file)? {
            m.describe_probes(&file.path, &file);
            allocators.push(file.name.clone());
        }
    }
    let comm = child
        .program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if allocators.is_empty() {
        if !allocator::is_go_executable(&child.program) {
            bail!(
                "no allocator symbols (malloc/free) found in {} or the libraries it loads",
                child.program.display()
            );
        }
        crate::note(&format!(
            "{} is a Go program: Go code gets no probes; its runtime's mmap calls are traced and \
             its heap profile read",
            child.program.display()
        ));
    }
    let exe = std::fs::canonicalize(&child.program).unwrap_or(child.program.clone());
    let info = TargetInfo {
        pid,
        comm,
        exe: Some(exe.display().to_string()),
        // The held child's: exec keeps it.
        start_time: target::start_time(pid).unwrap_or(0),
    };
    Ok(Target::new(info, allocators))
}

pub(super) fn announce(tracing: &Tracing, cfg: &config::Trace) {
    if let Some(d) = cfg
        .sampling
        .duration
        .filter(|_| tracing.mode != Mode::OomOnly)
    {
        let intervals = d.as_secs_f64() / cfg.sampling.interval.as_secs_f64();
        if intervals < verdict::MIN_LEAK_INTERVALS as f64 {
            crate::note(&format!(
                "note: --duration {} is {intervals:.1} intervals of {}: calling a leak takes \
                 {}; a shorter --interval gives more",
                humantime::format_duration(d),
                humantime::format_duration(cfg.sampling.interval),
                verdict::MIN_LEAK_INTERVALS
            ));
        }
    }
    let until = match cfg.sampling.duration {
        Some(d) => format!("for {}", humantime::format_duration(d)),
        None => "until Ctrl-C".to_string(),
    };
    let hooked = || {
        let mut files: Vec<&str> = tracing
            .life
            .by_pid
            .values()
            .flat_map(|t| t.allocators.iter().map(String::as_str))
            .collect();
        files.sort_unstable();
        files.dedup();
        files.join(", ")
    };
    match &tracing.mode {
        Mode::OomOnly => {
            return crate::note(&format!("watching for OOM kills on this node {until}"));
        }
        Mode::Watch(Selection::All) => {
            return crate::note(&format!(
                "tracing every process ({} now) {until}; allocator probed for all processes in: {}",
                tracing.life.by_pid.len(),
                hooked()
            ));
        }
        Mode::Watch(Selection::Matching(f)) => {
            let mut criteria = Vec::new();
            for c in &f.comm {
                criteria.push(format!("--comm {c}"));
            }
            if let Some(c) = &f.cgroup {
                criteria.push(format!("--cgroup {c}"));
                if !select::cgroup_exists(c) {
                    crate::note(&format!(
                        "warning: no cgroup {c} under /sys/fs/cgroup (v2 or any v1 \
                         hierarchy): no process is in it now"
                    ));
                }
            }
            if let Some(c) = &f.container {
                criteria.push(format!("--container {c}"));
            }
            let pids: Vec<String> = tracing.life.by_pid.keys().map(|p| p.to_string()).collect();
            return crate::note(&format!(
                "tracing processes matching {} as they appear {until} ({} now{})",
                criteria.join(" "),
                pids.len(),
                if pids.is_empty() {
                    String::new()
                } else {
                    format!(": pid {}", pids.join(", "))
                }
            ));
        }
        _ => {}
    }
    let what: Vec<String> = tracing
        .life
        .by_pid
        .values()
        .map(|t| {
            let via = match t.allocators.is_empty() {
                true => "its mmap calls".to_string(),
                false => t.allocators.join(", "),
            };
            format!("pid {} ({}) via {via}", t.info.pid, t.info.comm)
        })
        .collect();
    crate::note(&format!("tracing {} {until}", what.join(", ")));
}

impl Tracing {
    /// With --verbose, says once how long the start took, from memtrace's
    /// own start: to the command's first instruction, or to the targets'
    /// probes in place.
    pub(super) fn say_started(&mut self) {
        let Some(s) = self.startup.take() else {
            return;
        };
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let what = match (&self.mode, self.child.is_some()) {
            (_, true) => "the command runs",
            (Mode::Pids, _) => "probes in place",
            _ => "watching",
        };
        crate::note(&format!(
            "{what} {:.0} ms after memtrace started (programs loaded and verified in {:.0} ms, \
             targets attached in {:.0} ms)",
            ms(crate::since_start()),
            ms(s.load),
            ms(s.attach)
        ));
    }
}
