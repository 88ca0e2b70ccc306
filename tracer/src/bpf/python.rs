//! The CPython processes whose frames the kernel walks at each allocation
//! (`PY_PROCS`, see tracer-ebpf/src/python.rs): described once their
//! offsets were checked, forgotten when they exec or exit; and where the
//! kernel finds a thread's fs base, which 3.8–3.10 know their threads by.

use anyhow::{Context, Result};
use aya::maps::{Array, HashMap as BpfHashMap};
use tracer_common::PyProc;

use super::{btf::Btf, probes::Probes};

/// `task_struct.thread.fsbase`'s offset from the kernel's BTF (0: not
/// found; then 3.8–3.10 processes get no Python frames).
pub fn task_fs_base_offset() -> u32 {
    Btf::kernel()
        .and_then(|btf| btf.offset_of("task_struct", &["thread", "fsbase"]))
        .and_then(|off| u32::try_from(off).ok())
        .unwrap_or(0)
}

impl Probes {
    /// Has the kernel walk `pid`'s Python frames from now on.
    pub fn describe_python(&mut self, pid: u32, view: &PyProc) -> Result<()> {
        let mut procs: BpfHashMap<_, u32, PyProc> = BpfHashMap::try_from(
            self.bpf
                .map_mut("PY_PROCS")
                .context("PY_PROCS map missing")?,
        )?;
        procs
            .insert(pid, view, 0)
            .with_context(|| format!("pid {pid}: describing its interpreter to the kernel"))?;
        let mut any: Array<_, u32> =
            Array::try_from(self.bpf.map_mut("PY_ANY").context("PY_ANY map missing")?)?;
        any.set(0, 1, 0)?;
        Ok(())
    }

    /// Stops walking `pid`'s Python frames (it exec'd or exited).
    pub fn forget_python(&mut self, pid: u32) {
        if let Some(map) = self.bpf.map_mut("PY_PROCS") {
            if let Ok(mut procs) = BpfHashMap::<_, u32, PyProc>::try_from(map) {
                let _ = procs.remove(&pid);
            }
        }
    }
}
