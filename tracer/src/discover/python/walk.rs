//! One walk of every thread's Python stack, read through `/proc/PID/mem`
//! while the process runs: `_PyRuntime` → interpreters → thread states →
//! each thread's current frame → its callers. Racy by nature: a thread can
//! push or pop a frame between two reads, so every structure is checked
//! (a frame object's type, a code object's type) and a frame that does not
//! parse is skipped and counted, never reported as something it is not.
//! The kernel's walk at each allocation follows the same fields.

use std::collections::HashSet;

use crate::discover::memory::{u32_at, u64_at};

use super::{
    offsets::{FrameLayout, Instr, FRAME_OWNED_BY_CSTACK, INTERPRETERS_MAIN, OB_SIZE, OB_TYPE},
    Check, Python,
};

/// At most this many interpreters, threads per interpreter and frames per
/// thread are walked (a cycle read mid-update stops there too).
const MAX_INTERPRETERS: usize = 64;
const MAX_THREADS: usize = 4096;
pub const MAX_DEPTH: usize = 1024;

/// A frame as the walk read it: the code object it runs and the byte
/// offset of its current instruction in the code's bytecode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RawFrame {
    pub code: u64,
    pub offset: i64,
}

/// One thread state's stack, innermost frame first.
#[derive(Clone, Debug)]
pub struct Thread {
    /// `pthread_self()` of the thread.
    pub thread_id: u64,
    /// The kernel's thread id (3.11+).
    pub native_id: Option<u64>,
    pub frames: Vec<RawFrame>,
    /// The chain went on past [`MAX_DEPTH`] frames.
    pub cut: bool,
}

/// One walk of every thread.
#[derive(Clone, Debug, Default)]
pub struct Walk {
    pub threads: Vec<Thread>,
    /// Frames (or thread states) that did not parse, skipped.
    pub skipped: u32,
    /// Thread states that do not point back at their interpreter.
    pub foreign: u32,
}

impl Python {
    /// Walks every thread of every interpreter once. None when the runtime
    /// has no interpreter yet (or `_PyRuntime` cannot be read).
    pub fn walk(&self) -> Option<Walk> {
        let o = &self.offsets;
        let mem = &self.mem;
        let mut walk = Walk::default();
        let mut interp = mem.u64(self.runtime.runtime + o.runtime_interpreters_head)?;
        if interp == 0 {
            return None;
        }
        let mut seen = HashSet::new();
        for _ in 0..MAX_INTERPRETERS {
            if interp == 0 || !seen.insert(interp) {
                break;
            }
            let Some(mut tstate) = mem.u64(interp + o.interp_threads_head) else {
                walk.skipped += 1;
                break;
            };
            for _ in 0..MAX_THREADS {
                if tstate == 0 || !seen.insert(tstate) {
                    break;
                }
                let Some(ts) = mem.bytes(tstate, o.tstate_span()) else {
                    walk.skipped += 1;
                    break;
                };
                let field = |at| u64_at(&ts, at).unwrap_or(0);
                if field(o.tstate_interp) != interp {
                    walk.foreign += 1;
                    break;
                }
                let mut frame = field(o.tstate_frame);
                if let Some(current) = o.cframe_current_frame {
                    frame = match frame {
                        0 => 0,
                        cframe => mem.u64(cframe + current).unwrap_or(0),
                    };
                }
                let mut thread = Thread {
                    thread_id: field(o.tstate_thread_id),
                    native_id: o.tstate_native_thread_id.map(field),
                    frames: Vec::new(),
                    cut: false,
                };
                self.walk_frames(frame, &mut thread, &mut walk.skipped);
                walk.threads.push(thread);
                tstate = field(o.tstate_next);
            }
            interp = mem.u64(interp + o.interp_next).unwrap_or(0);
        }
        Some(walk)
    }

    /// Follows the frame chain from `frame`, innermost first.
    fn walk_frames(&self, mut frame: u64, thread: &mut Thread, skipped: &mut u32) {
        let o = &self.offsets;
        let mut seen = HashSet::new();
        while frame != 0 {
            if thread.frames.len() >= MAX_DEPTH {
                thread.cut = true;
                return;
            }
            if !seen.insert(frame) {
                *skipped += 1;
                return;
            }
            // A frame that cannot be read, or a frame object of another
            // type: its caller cannot be trusted either.
            let Some(f) = self.mem.bytes(frame, o.frame_span()) else {
                *skipped += 1;
                return;
            };
            if o.frame == FrameLayout::Object && u64_at(&f, OB_TYPE) != self.runtime.frame_type {
                *skipped += 1;
                return;
            }
            let previous = u64_at(&f, o.frame_previous).unwrap_or(0);
            let owner = o.frame_owner.and_then(|at| f.get(at as usize).copied());
            // The entry frames the C stack pushes (3.12+) run no Python.
            if o.minor >= 12 && owner == Some(FRAME_OWNED_BY_CSTACK) {
                frame = previous;
                continue;
            }
            let code = u64_at(&f, o.frame_code).unwrap_or(0);
            let raw = match o.instr {
                Instr::Pointer => u64_at(&f, o.frame_instr),
                Instr::LastiBytes | Instr::LastiUnits => u32_at(&f, o.frame_instr).map(u64::from),
            };
            match (self.is_code(code), raw) {
                (true, Some(raw)) => {
                    let offset = o.instruction_offset(code, raw);
                    // A frame being pushed (3.11: not started yet, before
                    // its first instruction) is not on the stack yet.
                    if !(o.instr == Instr::Pointer && offset < 0) {
                        thread.frames.push(RawFrame { code, offset });
                    }
                }
                _ => *skipped += 1,
            }
            frame = previous;
        }
    }

    /// Whether a code object is at `addr` (its type is `PyCode_Type`).
    pub fn is_code(&self, addr: u64) -> bool {
        addr != 0 && self.mem.u64(addr + OB_TYPE) == Some(self.runtime.code_type)
    }
}

/// How many frames the check reads in full (names, line table, code).
const CHECKED_FRAMES: usize = 64;

/// One check of the offsets against the running process: the runtime's
/// main interpreter is on its list, the thread states point back at their
/// interpreter, one of them is a thread of the process (its kernel id from
/// 3.11, else the main thread's `pthread_self()` the runtime keeps), and
/// every frame read runs a code object whose name and file name read as
/// `str`, whose line table reads as `bytes`, and whose bytecode holds the
/// frame's instruction, callers past their first instruction. Err: what
/// did not fit.
pub(super) fn check(python: &Python) -> Result<Check, String> {
    let o = &python.offsets;
    let mem = &python.mem;
    let pid = python.runtime.pid;
    let runtime = python.runtime.runtime;
    let head = mem
        .u64(runtime + o.runtime_interpreters_head)
        .ok_or("_PyRuntime is not readable")?;
    if head == 0 {
        return Ok(Check::NotYet("the runtime has no interpreter yet".into()));
    }
    let main = mem
        .u64(runtime + o.runtime_interpreters_head + INTERPRETERS_MAIN)
        .unwrap_or(0);
    let mut interp = head;
    let mut listed = false;
    for _ in 0..MAX_INTERPRETERS {
        listed |= interp == main;
        interp = match interp {
            0 => break,
            i => mem.u64(i + o.interp_next).unwrap_or(0),
        };
    }
    if !listed {
        return Err("the main interpreter is not on the interpreter list".into());
    }
    let initialized = mem.u32(runtime + o.runtime_initialized).unwrap_or(0);
    let walk = python
        .walk()
        .ok_or("the interpreter list is not readable")?;
    if walk.foreign > 0 {
        return Err(format!(
            "{} thread state(s) do not point back at their interpreter",
            walk.foreign
        ));
    }
    if walk.threads.is_empty() {
        return match initialized {
            0 => Ok(Check::NotYet("the runtime is initializing".into())),
            _ => Err("the initialized runtime has no thread state".into()),
        };
    }
    let ours = match o.tstate_native_thread_id {
        Some(_) => {
            let tasks: HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/task"))
                .map_err(|e| format!("/proc/{pid}/task: {e}"))?
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect();
            walk.threads
                .iter()
                .any(|t| t.native_id.is_some_and(|id| tasks.contains(&id)))
        }
        None => {
            let main_thread = o
                .runtime_main_thread
                .and_then(|at| mem.u64(runtime + at))
                .ok_or("_PyRuntime.main_thread is not readable")?;
            walk.threads.iter().any(|t| t.thread_id == main_thread)
        }
    };
    if !ours {
        return Err("no thread state belongs to a thread of the process".into());
    }
    let frames: Vec<&RawFrame> = walk.threads.iter().flat_map(|t| &t.frames).collect();
    if frames.is_empty() {
        return match walk.skipped {
            0 => Ok(Check::ThreadsOnly),
            n => Err(format!("none of {n} frame(s) parsed")),
        };
    }
    for f in frames.iter().take(CHECKED_FRAMES) {
        check_frame(python, f)?;
    }
    // A frame with a callee is in the middle of a call instruction, never
    // at the first one: a table that reads another field as the
    // instruction (one that is 0 in every frame) shows here.
    let mut callers = walk.threads.iter().flat_map(|t| t.frames.iter().skip(1));
    if let Some(first) = callers.next() {
        if first.offset <= 0 && callers.all(|f| f.offset <= 0) {
            return Err("no calling frame is past its first instruction".into());
        }
    }
    Ok(Check::Readable {
        threads: walk.threads.len(),
        frames: frames.len(),
    })
}

/// Whether a frame's code object reads in full: Err says what did not.
fn check_frame(python: &Python, f: &RawFrame) -> Result<(), String> {
    let o = &python.offsets;
    let head = python
        .mem
        .bytes(f.code, o.code_span())
        .ok_or("a code object is not readable")?;
    let field = |at| u64_at(&head, at).unwrap_or(0);
    if python.read_str(field(o.code_filename)).is_none() {
        return Err("a code object's file name is not a str".into());
    }
    if python.read_str(field(o.code_name)).is_none() {
        return Err("a code object's name is not a str".into());
    }
    if python.read_bytes(field(o.code_linetable)).is_none() {
        return Err("a code object's line table is not bytes".into());
    }
    let code_bytes = match o.code_code {
        Some(at) => python
            .read_bytes(field(at))
            .ok_or("a code object's bytecode is not bytes")?
            .len() as i64,
        None => field(OB_SIZE) as i64 * 2,
    };
    // f_lasti is -1 in a frame that has not started (3.8–3.10).
    let started = f.offset >= 0 || (o.instr != Instr::Pointer && f.offset >= -2);
    if !started || f.offset >= code_bytes || f.offset % 2 != 0 {
        return Err(format!(
            "an instruction offset {} outside its code's {code_bytes} bytes",
            f.offset
        ));
    }
    Ok(())
}
