//! CPython targets: a process running CPython is attached once its
//! interpreter runs Python code (its runtime found, the offsets checked
//! against it), then described to the kernel, which walks its Python
//! frames at each allocation from then on; and each new stack's frames are
//! resolved to names and lines while the process lives, and spliced into
//! its native frames. A build memtrace cannot read is said once, in one
//! line, and traced as native code.

use std::collections::HashMap;

use crate::{
    bpf::{drain::Walked, probes::Probes},
    discover::python::{self, walk::RawFrame, Check, Python},
    symbolize::{
        python::{splice, CodeCache},
        Symbolizer,
    },
};

use tracer_common::PY_ENTRY;

/// Looks at a process this many times (at each refresh of its mappings:
/// every housekeeping tick at first, then every second) for a runtime that
/// runs Python before it stops looking.
const MAX_LOOKS: u32 = 30;

/// Looks whose check of the offsets failed before a build is called
/// unsupported.
const CHECK_LOOKS: u32 = 5;

/// A CPython process being attached, or attached.
struct PyTarget {
    python: Option<Python>,
    /// Described to the kernel: its frames are walked.
    walked: bool,
    /// Its frame fields were checked against its frames (a target
    /// described at its start is walked before it has any).
    verified: bool,
    /// Checks of a target walked since its start that failed so far.
    failed_checks: u32,
    /// Looks so far, and the last reason it was not ready.
    looks: u32,
    /// Code objects resolved, by address.
    codes: CodeCache,
}

pub(super) struct PythonTargets {
    by_pid: HashMap<u32, PyTarget>,
    /// Stop each one at its end until its last stacks are named (the
    /// processes memtrace started: `-- CMD` and its followed children).
    hold_exits: bool,
}

impl PythonTargets {
    pub(super) fn new(hold_exits: bool) -> PythonTargets {
        PythonTargets {
            by_pid: HashMap::new(),
            hold_exits,
        }
    }

    /// A new pass of resolving (an interval's new stacks): code objects
    /// are checked again at their next use.
    pub(super) fn new_pass(&mut self) {
        for t in self.by_pid.values_mut() {
            t.codes.new_pass();
        }
    }

    /// Attaches `pid` if it runs CPython and is not attached yet: called
    /// whenever its mappings are read again. Says once (with `verbose`,
    /// always) what it found.
    pub(super) fn consider(&mut self, pid: u32, probes: &mut Probes, verbose: bool) {
        self.look(pid, probes, verbose, true, false);
    }

    /// Attaches `pid`, stopped where its interpreter is about to run its
    /// main program (see `Tracing::continue_at_entry`): its thread list is
    /// checked now and its frames walked from now on; their fields are
    /// checked once it runs Python code (see [`PythonTargets::consider`]),
    /// and a build that fails that check is walked no more.
    pub(super) fn attach_at_start(&mut self, pid: u32, probes: &mut Probes, verbose: bool) {
        self.look(pid, probes, verbose, false, true);
    }

    /// One look at `pid` (see [`PythonTargets::consider`]); `counted`
    /// looks are limited to [`MAX_LOOKS`]; `at_start`: a check of its
    /// threads alone will do (see [`PythonTargets::attach_at_start`]).
    fn look(
        &mut self,
        pid: u32,
        probes: &mut Probes,
        verbose: bool,
        counted: bool,
        at_start: bool,
    ) {
        if self
            .by_pid
            .get(&pid)
            .is_some_and(|t| (t.walked && t.verified) || t.looks >= MAX_LOOKS)
        {
            return;
        }
        if self.by_pid.get(&pid).is_some_and(|t| t.walked) {
            self.verify(pid, probes, verbose, counted);
            return;
        }
        if !self.by_pid.contains_key(&pid) && !python::runs_python(pid) {
            return;
        }
        let t = self.by_pid.entry(pid).or_insert_with(|| PyTarget {
            python: None,
            walked: false,
            verified: false,
            failed_checks: 0,
            looks: 0,
            codes: CodeCache::default(),
        });
        t.looks += u32::from(counted);
        let last_look = t.looks == MAX_LOOKS;
        let checked = match t.python.as_mut() {
            Some(p) => p.recheck().map(|_| ()),
            None => Python::attach(pid).map(|p| t.python = Some(p)),
        };
        if let Err(e) = checked {
            let text = format!("{e:#}");
            // A version memtrace does not read does not change: said once.
            // A check that failed may have caught threads between two
            // writes (each check walks three times): looked at again, and
            // said after CHECK_LOOKS failed looks.
            let settled = text.contains("not supported")
                || (text.contains("unsupported CPython build") && t.looks >= CHECK_LOOKS);
            if settled || last_look {
                t.looks = MAX_LOOKS;
                crate::note(&format!(
                    "{text}: its allocations are traced as native code"
                ));
            }
            return;
        }
        let Some(p) = t.python.as_ref() else { return };
        let waiting = match &p.check {
            Check::NotYet(why) => Some(why.as_str()),
            Check::ThreadsOnly if !at_start => Some("no thread runs Python code yet"),
            Check::ThreadsOnly | Check::Readable { .. } => None,
        };
        if let Some(why) = waiting {
            if last_look {
                crate::note(&format!(
                    "pid {pid}: {}: no Python frames ({why})",
                    p.runtime.describe()
                ));
            }
            return;
        }
        let verified = matches!(p.check, Check::Readable { .. });
        match p
            .kernel_view(probes.fs_base_known)
            .and_then(|view| probes.describe_python(pid, &view))
        {
            Ok(()) => {
                t.walked = true;
                t.verified = verified;
                if verbose {
                    crate::note(&p.describe());
                }
                // Its code objects go with it: its last stacks are named
                // while it waits at its end.
                if self.hold_exits {
                    let points = python::runtime::end_points(pid, &p.runtime.file);
                    if let Err(e) = probes.hold_exit(pid, &points) {
                        crate::note(&format!("warning: pid {pid}: {e:#}"));
                    }
                }
            }
            Err(e) => {
                t.looks = MAX_LOOKS;
                crate::note(&format!(
                    "pid {pid}: {}: no Python frames: {e:#}",
                    p.runtime.describe()
                ));
            }
        }
    }

    /// Checks the frame fields of `pid`, walked since its start, once it
    /// runs Python code: a build that does not fit is walked no more (its
    /// first stacks' Python frames, read with the wrong fields, name
    /// nothing: each code object is checked when it is resolved).
    fn verify(&mut self, pid: u32, probes: &mut Probes, verbose: bool, counted: bool) {
        let Some(t) = self.by_pid.get_mut(&pid) else {
            return;
        };
        t.looks += u32::from(counted);
        let Some(p) = t.python.as_mut() else { return };
        match p.recheck().cloned() {
            Ok(Check::Readable { .. }) => {
                t.verified = true;
                if verbose {
                    crate::note(&p.describe());
                }
            }
            Ok(_) if t.looks < MAX_LOOKS => {}
            // A check may catch a thread between two writes (each walks
            // three times): a build is called unsupported after
            // CHECK_LOOKS failed looks, as before its frames are walked.
            Err(e)
                if t.failed_checks + 1 < CHECK_LOOKS
                    && !format!("{e:#}").contains("not supported") =>
            {
                t.failed_checks += 1;
            }
            outcome => {
                let why = match outcome {
                    Err(e) => format!("{e:#}"),
                    Ok(_) => "its frames could not be checked".to_string(),
                };
                crate::note(&format!(
                    "pid {pid}: {why}: its allocations are traced as native code"
                ));
                t.walked = false;
                t.looks = MAX_LOOKS;
                probes.forget_python(pid);
            }
        }
    }

    /// Forgets `pid` (it exec'd, or is gone).
    pub(super) fn forget(&mut self, pid: u32, probes: &mut Probes) {
        if self.by_pid.remove(&pid).is_some_and(|t| t.walked) {
            probes.forget_python(pid);
        }
    }

    /// The frames of a new stack of `pid`: its native frames (`native`,
    /// the walk's in-code prefix), with the Python frames the kernel read
    /// in place of the evaluation loop's.
    pub(super) fn frames(
        &mut self,
        pid: u32,
        native: &[u64],
        walked: &Walked,
        symbolizer: &mut Symbolizer,
    ) -> Vec<u64> {
        let Some(t) = self.by_pid.get_mut(&pid) else {
            return native.to_vec();
        };
        let Some(p) = t.python.as_ref() else {
            return native.to_vec();
        };
        if walked.python.is_empty() {
            return native.to_vec();
        }
        let o = &p.offsets;
        let mut python: Vec<(u64, bool)> = Vec::with_capacity(walked.python.len());
        for f in &walked.python {
            let entry = f.instr & PY_ENTRY != 0;
            let raw = RawFrame {
                code: f.code,
                offset: o.instruction_offset(f.code, f.instr & !PY_ENTRY),
            };
            // A frame being pushed (3.11+: before its first instruction)
            // is not on the stack yet; its run starts at its caller.
            if raw.offset < 0 && o.instr == python::offsets::Instr::Pointer {
                if entry {
                    if let Some(last) = python.last_mut() {
                        *last = (last.0, true);
                    }
                }
                continue;
            }
            // A code object freed since the walk is left out, never named
            // after whatever is at its address now.
            if let Some(frame) = t.codes.resolve(p, raw) {
                python.push((symbolizer.python_token(frame), entry));
            }
        }
        splice(native, p.runtime.eval_frame, &python)
    }
}
