//! Loading the embedded eBPF object and attaching its programs: the mapping
//! syscall tracepoints once, and the allocator uprobes per (process,
//! allocator file). Dropping [`Probes`] detaches everything.

use std::{collections::HashSet, num::NonZeroU32, path::Path};

use anyhow::{Context, Result};
use aya::{
    maps::HashMap as BpfHashMap,
    programs::{
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
        TracePoint, UProbe,
    },
    Ebpf, EbpfLoader,
};

use crate::allocator::{Hook, ProbePoint};

/// Object built by tracer/build.rs from tracer-ebpf.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));

const TRACEPOINTS: &[(&str, &str)] = &[
    ("syscalls", "sys_enter_mmap"),
    ("syscalls", "sys_exit_mmap"),
    ("syscalls", "sys_enter_munmap"),
    ("syscalls", "sys_exit_munmap"),
    ("syscalls", "sys_enter_mremap"),
    ("syscalls", "sys_exit_mremap"),
    ("sched", "sched_process_exec"),
];

/// The loaded programs and maps.
pub struct Probes {
    pub bpf: Ebpf,
    /// (pid, file) pairs already hooked.
    attached: HashSet<(u32, std::path::PathBuf)>,
}

/// Map sizes chosen on the command line.
pub struct Capacity {
    pub max_live: u32,
    pub max_stacks: u32,
}

impl Probes {
    pub fn load(capacity: &Capacity) -> Result<Probes> {
        let mut bpf = EbpfLoader::new()
            .map_max_entries("LIVE", capacity.max_live)
            .map_max_entries("STACKS", capacity.max_stacks)
            // Stacks of every target share the stack map but have totals
            // per process; leave room for a few processes per stack.
            .map_max_entries("STACK_TOTALS", capacity.max_stacks.saturating_mul(2))
            .load(EBPF_OBJECT)
            .context("loading the eBPF programs into the kernel")?;
        for name in ["alloc_enter", "alloc_return", "free_enter"] {
            uprobe(&mut bpf, name)?
                .load()
                .with_context(|| format!("loading eBPF program {name} (verifier)"))?;
        }
        for &(category, name) in TRACEPOINTS {
            let tp: &mut TracePoint = bpf
                .program_mut(name)
                .with_context(|| format!("program {name} missing from the eBPF object"))?
                .try_into()?;
            tp.load()
                .with_context(|| format!("loading eBPF program {name} (verifier)"))?;
            tp.attach(category, name)
                .with_context(|| format!("attaching tracepoint {category}/{name}"))?;
        }
        Ok(Probes {
            bpf,
            attached: HashSet::new(),
        })
    }

    /// Makes `pid`'s mapping syscalls count.
    pub fn add_target(&mut self, pid: u32) -> Result<()> {
        let mut targets: BpfHashMap<_, u32, u8> =
            BpfHashMap::try_from(self.bpf.map_mut("TARGETS").context("TARGETS map missing")?)?;
        targets
            .insert(pid, 1, 0)
            .with_context(|| format!("registering pid {pid} as a target"))
    }

    /// Hooks the allocator implemented in `file` for process `pid` only
    /// (other processes mapping the same file never trap). Returns false if
    /// this pair was already hooked.
    pub fn attach_allocator(
        &mut self,
        pid: u32,
        file: &Path,
        points: &[ProbePoint],
    ) -> Result<bool> {
        if !self.attached.insert((pid, file.to_path_buf())) {
            return Ok(false);
        }
        let scope = UProbeScope::OneProcess(NonZeroU32::new(pid).context("pid 0")?);
        let what = |point: &ProbePoint| {
            format!(
                "attaching to {} in {} (pid {pid})",
                point.symbol,
                file.display()
            )
        };
        // Order matters while the target runs: free first, so every block
        // recorded later has its free seen; then each allocation function's
        // return probe right before its entry probe, so every recorded entry
        // sees its return (an entry without one would make later calls at
        // that depth look nested). Functions go in `HOOKED` order, callees
        // first (realloc(NULL, n) calls malloc, reallocarray tail-calls
        // realloc): a nested call's probes are complete before its caller's
        // entry is. Pairs keep the window in which calls return without a
        // recorded entry to one attach per function (~80 ms of a busy
        // target's calls were lost per function when all returns went
        // first).
        for point in points.iter().filter(|p| p.hook == Hook::Free) {
            let location = UProbeAttachLocation::AbsoluteOffset(point.entry_offset);
            uprobe(&mut self.bpf, "free_enter")?
                .attach(location, file, scope)
                .with_context(|| what(point))?;
        }
        for point in points {
            let Hook::Alloc(func) = point.hook else {
                continue;
            };
            let at = || UProbeAttachLocation::AbsoluteOffset(point.file_offset);
            uprobe(&mut self.bpf, "alloc_return")?
                .attach(at(), file, scope)
                .with_context(|| what(point))?;
            let entry = UProbeAttachPoint {
                location: at(),
                cookie: Some(func as u64),
            };
            uprobe(&mut self.bpf, "alloc_enter")?
                .attach(entry, file, scope)
                .with_context(|| what(point))?;
        }
        Ok(true)
    }
}

fn uprobe<'a>(bpf: &'a mut Ebpf, name: &str) -> Result<&'a mut UProbe> {
    Ok(bpf
        .program_mut(name)
        .with_context(|| format!("program {name} missing from the eBPF object"))?
        .try_into()?)
}
