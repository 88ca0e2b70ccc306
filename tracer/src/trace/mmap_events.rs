//! The targets' own anonymous mappings, from the kernel's mmap, munmap and
//! mremap events: who made each one (the program, or the dynamic loader
//! for itself) and its region accounted per stack.

use tracer_common::{EventKind, MmapEvent};

use super::{kernel::Kernel, Tracing};
use crate::accounting::series::{StackIdentity, StackKind};

impl Tracing {
    pub(super) fn on_mapping_event(&mut self, e: &MmapEvent) {
        let pid = e.tgid;
        if self.life.watcher.is_none() && self.life.by_pid.get(&pid).is_none_or(|t| t.exited) {
            // Sent before the kernel learnt of an exit: the pid's next
            // owner; or a child whose fork event was lost (ring buffer full).
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
                let frames = match self.mmap_caller_frames(e) {
                    MmapCaller::Program(frames) => frames,
                    MmapCaller::Loader => {
                        self.loader_mappings += 1;
                        return;
                    }
                };
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

    /// The stack of an mmap, starting at the function that called it. The
    /// kernel's frame-pointer walk from the syscall starts inside the libc
    /// wrapper and skips the wrapper's caller (the wrapper has no frame);
    /// the word at the stack pointer is that caller's return address. So
    /// when the syscall instruction is in a shared library, frame 0 is
    /// replaced by it. A syscall made directly by the program (Go, static
    /// binaries) keeps its frames as they are. None for mappings the dynamic
    /// loader makes for itself (zero-fill of loaded libraries, its private
    /// malloc): loader bookkeeping, not the program's memory.
    fn mmap_caller_frames(&mut self, e: &MmapEvent) -> MmapCaller {
        let n = (e.nr_frames as usize).min(e.frames.len());
        // The frame-pointer walk ends with a zero when it leaves code built
        // with frame pointers; such entries are not frames.
        let frames: Vec<u64> = e.frames[..n]
            .iter()
            .copied()
            .take_while(|&f| f != 0)
            .collect();
        let Some(&first) = frames.first() else {
            return MmapCaller::Program(Vec::new());
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
            return MmapCaller::Program(
                std::iter::once(e.user_sp_word)
                    .chain(frames[1..].iter().copied())
                    .collect(),
            );
        }
        MmapCaller::Program(frames)
    }
}

/// Who made an anonymous mapping.
enum MmapCaller {
    /// The program: counted, with these frames.
    Program(Vec<u64>),
    /// The dynamic loader, for itself.
    Loader,
}

/// Whether a mapped file is a dynamic loader (glibc's ld-linux, musl's
/// ld-musl).
fn is_dynamic_loader(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.starts_with("ld-linux") || name.starts_with("ld-musl") || name == "ld.so"
}
