//! The targets' own anonymous mappings, from the kernel's mmap, munmap and
//! mremap events: who made each one (the program, or the dynamic loader
//! for itself, with the Python frames that made it in a CPython process)
//! and its region accounted per stack. A Go heap's own growth is left to
//! its heap profile's stacks where that is read.

use tracer_common::{EventKind, MmapEvent, MAX_FRAMES, PY_TRUNCATED};

use super::{kernel::Kernel, Tracing};
use crate::{
    accounting::series::{StackIdentity, StackKind},
    bpf::drain::Walked,
};

impl Tracing {
    pub(super) fn on_mapping_event(&mut self, e: &MmapEvent) {
        let pid = e.tgid;
        if self.life.watcher.is_none()
            && self
                .life
                .by_pid
                .get(&pid)
                .is_none_or(|t| !t.owns_event(e.timestamp_ns))
        {
            // Sent after the target was found gone (before the kernel
            // learnt of its exit): the pid's next owner; or a child whose
            // fork event was lost (ring buffer full). Events it sent before
            // it went are its own, read late or not.
            return;
        }
        if !self.life.by_pid.contains_key(&pid) && self.life.watcher.is_some() {
            // --all: a process first seen by a mapping call.
            self.life.consider(&mut self.m, pid);
            if !self.life.by_pid.contains_key(&pid) {
                return;
            }
        }
        match e.kind {
            k if k == EventKind::Mmap as u32 => {
                let (frames, truncated) = match self.mmap_caller_frames(e) {
                    MmapCaller::Program { frames, truncated } => (frames, truncated),
                    MmapCaller::Loader => {
                        self.loader_mappings += 1;
                        return;
                    }
                };
                let frames = self.with_python(e, frames, truncated);
                if self
                    .m
                    .golang
                    .heap_mapping(pid, &frames, e.len, &mut self.m.symbolizer)
                {
                    // What it maps over is replaced all the same.
                    self.m.mappings.unmap(pid, e.addr, e.len);
                    return;
                }
                let identity = StackIdentity {
                    pid,
                    kind: StackKind::Mmap,
                    frames,
                };
                if !self.m.agg.is_interned(&identity) && !self.room_for_a_stack() {
                    self.m.agg.refuse(None);
                    // What it maps over is replaced all the same.
                    self.m.mappings.unmap(pid, e.addr, e.len);
                    return;
                }
                let stack = self.m.agg.intern(identity);
                self.m.agg.stacks[stack].truncated |= truncated;
                self.m
                    .mappings
                    .mmap(pid, e.addr, e.len, stack, e.timestamp_ns);
            }
            k if k == EventKind::Munmap as u32 => self.m.mappings.unmap(pid, e.addr, e.len),
            k if k == EventKind::Mremap as u32 => self
                .m
                .mappings
                .mremap(pid, e.addr, e.len, e.new_addr, e.new_len),
            _ => {}
        }
    }

    /// An mmap's native `frames` with the Python frames the kernel walked
    /// spliced in (see `PythonTargets::frames`): an arena of a pymalloc
    /// inlined into its callers is named after the Python line whose
    /// objects needed it.
    fn with_python(&mut self, e: &MmapEvent, frames: Vec<u64>, truncated: bool) -> Vec<u64> {
        let n = (e.py_nr as usize).min(e.python.len());
        if n == 0 {
            return frames;
        }
        let walked = Walked {
            frames,
            truncated,
            python: e.python[..n].to_vec(),
            python_truncated: e.py_flags & PY_TRUNCATED != 0,
        };
        self.m
            .python
            .frames(e.tgid, &walked.frames, &walked, &mut self.m.symbolizer)
    }

    /// The stack of an mmap, starting at the function that called it. The
    /// kernel's frame-pointer walk from the syscall starts inside the libc
    /// wrapper and skips the wrapper's caller (the wrapper has no frame);
    /// the word at the stack pointer is that caller's return address. So
    /// when the syscall instruction is in a shared library, frame 0 is
    /// replaced by it. A syscall made directly by the program (Go, static
    /// binaries) keeps its frames as they are. None for mappings the dynamic
    /// loader makes for itself (zero-fill of loaded libraries, its private
    /// malloc): loader bookkeeping, not the program's memory.
    ///
    /// The kernel's walk stops without saying why, so the stack is flagged
    /// truncated, as a heap walk would be, when it shows it stopped short:
    /// at the frame limit, or with a last frame of code (a frame-pointer
    /// step through code without frame pointers reads data: zeros and
    /// addresses outside code are cut) that is not where a process's or a
    /// thread's stack begins (see [`is_stack_base`]).
    fn mmap_caller_frames(&mut self, e: &MmapEvent) -> MmapCaller {
        let n = (e.nr_frames as usize).min(e.frames.len());
        // The frame-pointer walk ends with a zero when it leaves code built
        // with frame pointers; such entries are not frames.
        let mut frames: Vec<u64> = e.frames[..n]
            .iter()
            .copied()
            .take_while(|&f| f != 0)
            .collect();
        let Some(&first) = frames.first() else {
            return MmapCaller::Program {
                frames,
                truncated: n > 0,
            };
        };
        let pid = e.tgid;
        if self.m.symbolizer.mapping(pid, first).is_none() {
            self.m.refresh_maps(pid);
        }
        let module = self
            .m
            .symbolizer
            .mapping(pid, first)
            .and_then(|m| m.path.as_deref());
        if module.is_some_and(is_dynamic_loader) {
            return MmapCaller::Loader;
        }
        let exe = self.life.by_pid.get(&pid).and_then(|t| t.info.exe.clone());
        let in_library = self
            .m
            .symbolizer
            .mapping(pid, first)
            .is_some_and(|m| m.is_file() && m.path != exe);
        if in_library && e.user_sp_word != 0 {
            frames[0] = e.user_sp_word;
        }
        let code = self.m.symbolizer.in_code(pid, &frames);
        let whole = frames.len() == n && code == n;
        frames.truncate(code);
        // Where the walk stopped: the frame limit, or (whatever was read
        // after it, a zero or data) its last frame of code.
        let truncated = if whole && n >= MAX_FRAMES {
            true
        } else {
            let last = *frames.last().expect("frame 0 is kept");
            !self
                .m
                .symbolizer
                .frames(pid, &[last])
                .iter()
                .any(|f| f.function.as_deref().is_some_and(is_stack_base))
        };
        MmapCaller::Program { frames, truncated }
    }
}

/// Functions where a process's or a thread's stack begins, or the frame
/// a frame-pointer walk of it ends at (glibc's start routines keep no
/// frame pointer, so the walk from `main` ends in `__libc_start_call_main`
/// and a thread's in `start_thread`): a walk that ends anywhere else
/// stopped short.
fn is_stack_base(function: &str) -> bool {
    const BASES: &[&str] = &[
        "_start",
        "__libc_start_call_main",
        "__libc_start_main",
        "__libc_start_main_impl",
        "libc_start_main_stage2",
        "start_thread",
        "clone",
        "clone3",
        "__clone",
        "__clone3",
        "runtime.goexit",
        "runtime.mstart",
        "runtime.rt0_go",
    ];
    BASES.contains(&function)
}

/// Who made an anonymous mapping.
enum MmapCaller {
    /// The program: counted, with these frames (`truncated`: the walk
    /// stopped before the outermost frame).
    Program { frames: Vec<u64>, truncated: bool },
    /// The dynamic loader, for itself.
    Loader,
}

/// Whether a mapped file is a dynamic loader (glibc's ld-linux, musl's
/// ld-musl).
fn is_dynamic_loader(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.starts_with("ld-linux") || name.starts_with("ld-musl") || name == "ld.so"
}
