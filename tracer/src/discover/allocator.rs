//! Allocator discovery: which mapped ELF files implement the allocator (the
//! libc-style names, or the same API under a prefix: jemalloc's `je_`,
//! tikv-jemallocator's `_rjem_`, tcmalloc's `tc_`, mimalloc's `mi_`, or one
//! given with `--symbol-prefix`), the file offset of each entry point to
//! probe in them, and (through `placement`) where in each function its
//! entry-only probe goes.

use std::{collections::BTreeMap, fs, path::Path};

use anyhow::{Context, Result};
use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};
use tracer_common::{AllocFn, ARG_REGISTERS, COOKIE_ARGS_SHIFT};

use iced_x86::Register;

use crate::discover::{
    placement, pymalloc,
    wrapper::{self, Wrapped},
};

/// What a probed function does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Alloc(AllocFn),
    Free,
    /// A free whose block is its second argument: an allocator's own
    /// `free(ctx, p)` (CPython's pymalloc, see `pymalloc`).
    FreeSecond,
    /// The failure path of an allocation function whose other calls go on
    /// to a hooked one (see `wrapper::checked_call`): each run is a failed
    /// call.
    FailurePath,
}

/// Which processes a probe point is for: CPython's frees are probed in
/// pymalloc itself where the process runs the default allocator, else at
/// the public functions (see `pymalloc`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    Always,
    /// A given process whose environment leaves CPython's default
    /// allocator.
    DefaultAllocator,
    /// Every other process (and all of them at once, with `--all`).
    ReplacedAllocator,
}

impl When {
    /// For `--verbose`: the processes a point is for, if not all.
    pub fn describe(self) -> &'static str {
        match self {
            When::Always => "",
            When::DefaultAllocator => " [processes with CPython's default allocator]",
            When::ReplacedAllocator => " [processes with PYTHONMALLOC or -X dev, and --all]",
        }
    }
}

/// The functions memtrace hooks, by symbol name. Several names may share an
/// address (glibc's aligned_alloc and memalign); each address is probed once.
pub const HOOKED: &[(&str, Hook)] = &[
    ("malloc", Hook::Alloc(AllocFn::Malloc)),
    ("calloc", Hook::Alloc(AllocFn::Calloc)),
    ("realloc", Hook::Alloc(AllocFn::Realloc)),
    ("reallocarray", Hook::Alloc(AllocFn::ReallocArray)),
    ("posix_memalign", Hook::Alloc(AllocFn::PosixMemalign)),
    ("aligned_alloc", Hook::Alloc(AllocFn::AlignedAlloc)),
    ("memalign", Hook::Alloc(AllocFn::AlignedAlloc)),
    ("valloc", Hook::Alloc(AllocFn::Malloc)),
    ("pvalloc", Hook::Alloc(AllocFn::Malloc)),
    ("free", Hook::Free),
    // jemalloc's non-standard API (Rust's tikv-jemallocator frees only
    // with sdallocx): a missed free would read as a leak.
    ("mallocx", Hook::Alloc(AllocFn::Malloc)),
    ("rallocx", Hook::Alloc(AllocFn::Realloc)),
    ("sdallocx", Hook::Free),
    ("dallocx", Hook::Free),
    // mimalloc's (Rust's mimalloc crate allocates with these).
    ("zalloc", Hook::Alloc(AllocFn::Malloc)),
    ("malloc_aligned", Hook::Alloc(AllocFn::Malloc)),
];

/// Whether `symbol` frees through another hooked free: one of C++'s
/// `operator delete` functions (Itanium ABI `_Zdl…`/`_Zda…`), which
/// libstdc++'s call `free` in, or CPython's object and memory frees, which
/// call it for blocks pymalloc did not serve.
pub fn is_outer_free(symbol: &str) -> bool {
    symbol.starts_with("_ZdlPv")
        || symbol.starts_with("_ZdaPv")
        || symbol == PYMALLOC_FREE
        || HOOKED_PYTHON
            .iter()
            .any(|&(name, hook)| hook == Hook::Free && name == symbol)
}

/// CPython's allocation API, where the interpreter's executable or
/// libpython defines it: the object domain (`PyObject_*`) and the memory
/// domain (`PyMem_*`), both served by pymalloc in a default build, so
/// that every small Python object is an allocation of its own. Blocks
/// over 512 bytes come from malloc inside these calls: nested, counted
/// once; pymalloc's arena mmaps inside them are the allocator's.
pub const HOOKED_PYTHON: &[(&str, Hook)] = &[
    ("PyObject_Malloc", Hook::Alloc(AllocFn::Malloc)),
    ("PyObject_Calloc", Hook::Alloc(AllocFn::Calloc)),
    ("PyObject_Realloc", Hook::Alloc(AllocFn::Realloc)),
    ("PyObject_Free", Hook::Free),
    ("PyMem_Malloc", Hook::Alloc(AllocFn::Malloc)),
    ("PyMem_Calloc", Hook::Alloc(AllocFn::Calloc)),
    ("PyMem_Realloc", Hook::Alloc(AllocFn::Realloc)),
    ("PyMem_Free", Hook::Free),
];

/// pymalloc's free, probed in place of CPython's two public frees where it
/// can be (see `pymalloc`).
pub const PYMALLOC_FREE: &str = "_PyObject_Free";

/// pymalloc's slow path that takes a new pool, probed where the
/// interpreter has pymalloc inlined (see `pymalloc::inlined_pools`).
pub const PYMALLOC_NEW_POOL: &str = "allocate_from_new_pool";

/// C++'s allocation functions (Itanium ABI names): `operator new` and
/// `new[]` in their plain, nothrow and aligned forms, and every `operator
/// delete`, hooked where a file other than libstdc++ defines its own
/// (tcmalloc, jemalloc and mimalloc, a program's own) and they do more
/// than call a hooked function first (see `wrapper`). libstdc++'s are not
/// hooked: they only call `malloc` (`aligned_alloc` for the aligned forms)
/// and `free`, which are, so a `new`/`delete` pair traps twice instead of
/// four times; its `operator new` frame is the allocator's own, and the
/// stack starts at the function that wrote `new` (see
/// `symbolize::allocator_frames`). Size and pointer are the first argument.
pub const HOOKED_CXX: &[(&str, Hook)] = &[
    ("_Znwm", Hook::Alloc(AllocFn::Malloc)),
    ("_Znam", Hook::Alloc(AllocFn::Malloc)),
    ("_ZnwmRKSt9nothrow_t", Hook::Alloc(AllocFn::Malloc)),
    ("_ZnamRKSt9nothrow_t", Hook::Alloc(AllocFn::Malloc)),
    ("_ZnwmSt11align_val_t", Hook::Alloc(AllocFn::Malloc)),
    ("_ZnamSt11align_val_t", Hook::Alloc(AllocFn::Malloc)),
    (
        "_ZnwmSt11align_val_tRKSt9nothrow_t",
        Hook::Alloc(AllocFn::Malloc),
    ),
    (
        "_ZnamSt11align_val_tRKSt9nothrow_t",
        Hook::Alloc(AllocFn::Malloc),
    ),
    ("_ZdlPv", Hook::Free),
    ("_ZdaPv", Hook::Free),
    ("_ZdlPvm", Hook::Free),
    ("_ZdaPvm", Hook::Free),
    ("_ZdlPvRKSt9nothrow_t", Hook::Free),
    ("_ZdaPvRKSt9nothrow_t", Hook::Free),
    ("_ZdlPvSt11align_val_t", Hook::Free),
    ("_ZdaPvSt11align_val_t", Hook::Free),
    ("_ZdlPvmSt11align_val_t", Hook::Free),
    ("_ZdaPvmSt11align_val_t", Hook::Free),
    ("_ZdlPvSt11align_val_tRKSt9nothrow_t", Hook::Free),
    ("_ZdaPvSt11align_val_tRKSt9nothrow_t", Hook::Free),
];

/// Prefixes under which allocators export the libc API, besides the bare
/// names: jemalloc built with a prefix, Rust's tikv-jemallocator, tcmalloc
/// (which also exports the bare names, at the same addresses), mimalloc.
pub const PREFIXES: [&str; 4] = ["je_", "_rjem_", "tc_", "mi_"];

/// One place to attach a probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbePoint {
    /// The symbol probed (`malloc`, `je_malloc`, ...).
    pub symbol: String,
    pub hook: Hook,
    /// Offset in the file of the function (what the kernel's uprobe API
    /// takes); return probes and allocation entry probes go there.
    pub file_offset: u64,
    /// Where the probes go: at or after `file_offset` (see `placement`).
    pub entry_offset: u64,
    /// Why there (for `--verbose`).
    pub placement: String,
    /// The kernel single-steps the probed instruction (~10 µs a hit).
    pub stepped: bool,
    /// The attach cookie's bits that say where the probe reads arguments
    /// the placement found moved (`tracer_common::COOKIE_ARGS_SHIFT`); 0
    /// when all are where the ABI passes them.
    pub argument_bits: u64,
    /// On the uprobe session path, whether an unsampled call may skip its
    /// return.
    pub skip: Skip,
    /// The processes it is for.
    pub when: When,
    /// [`AllocFn::NewPool`]: log2 of pymalloc's pool size (else 0).
    pub pool_bits: u32,
}

/// Whether an unsampled call of a function may skip its return (uprobe
/// session path).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Skip {
    Never,
    /// glibc's malloc and calloc, below its mmap threshold
    /// (`tracer_common::COOKIE_MAY_SKIP`).
    Glibc,
    /// The malloc and calloc of an allocator in a library of its own
    /// (jemalloc, tcmalloc, mimalloc), where the kernel holds the library's
    /// text for the process (`tracer_common::COOKIE_SKIP_OWN_TEXT`).
    OwnText,
}

impl Skip {
    /// For `--verbose`, after the placement.
    pub fn describe(self) -> &'static str {
        match self {
            Skip::Never => "",
            Skip::Glibc => " [with sampling, unsampled calls under 124 KiB skip their return]",
            Skip::OwnText => {
                " [with sampling, unsampled calls under 124 KiB skip their return; the \
                 library's mmaps are told by its text]"
            }
        }
    }
}

/// The allocation functions that call no other probed function, in glibc
/// and in the allocators in a library of their own (the ones that can skip
/// their return when unsampled): glibc's realloc calls malloc (and may
/// mremap), and so do posix_memalign, aligned_alloc, memalign, valloc and
/// pvalloc for an alignment malloc gives anyway. jemalloc's, tcmalloc's
/// and mimalloc's malloc and calloc call only their own internals and
/// functions memtrace does not probe (memset, __errno_location, tcmalloc's
/// tc_nallocx), checked on Debian 12's builds.
const LEAVES: [&str; 2] = ["malloc", "calloc"];

/// Functions only an allocator in a library of its own exports (under any
/// of [`PREFIXES`] or none): jemalloc's `mallocx`, tcmalloc's `tc_malloc`,
/// mimalloc's `mi_malloc`. tcmalloc and mimalloc also export
/// `__libc_malloc` at their `malloc`'s address, which alone would pass
/// for glibc.
const OWN_LIBRARY_MARKS: [&str; 3] = ["mallocx", "tc_malloc", "mi_malloc"];

/// Probe points of the allocators implemented in the ELF file at `path`:
/// for the bare names and each prefix of [`PREFIXES`] and `extra_prefixes`
/// under which the file defines both `malloc` and `free`, and C++'s
/// operators ([`HOOKED_CXX`]) where it defines `operator new` and `operator
/// delete`. Empty when there is none. A function with several names
/// (aliases) is probed once.
pub fn probe_points(path: &Path, extra_prefixes: &[String]) -> Result<Vec<ProbePoint>> {
    Ok(file_probes(path, extra_prefixes)?.points)
}

/// What is probed in an allocator file, and the C++ operators in it that
/// are not because they only hand each call on to a hooked function.
#[derive(Debug, Default)]
pub struct FileProbes {
    pub points: Vec<ProbePoint>,
    /// (operator, its call), see `wrapper`.
    pub wrappers: Vec<(String, Wrapped)>,
}

/// [`probe_points`], with the wrappers left out.
pub fn file_probes(path: &Path, extra_prefixes: &[String]) -> Result<FileProbes> {
    let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let file =
        object::File::parse(&*data).with_context(|| format!("parsing ELF {}", path.display()))?;
    if super::golang::is_go(&file) {
        // Go code must never get return probes (a uretprobe rewrites the
        // return address on the stack, which Go's stack copying and
        // unwinding do not expect), and its heap is not malloc's anyway.
        return Ok(FileProbes::default());
    }
    let prefixes: Vec<&str> = std::iter::once("")
        .chain(PREFIXES)
        .chain(extra_prefixes.iter().map(String::as_str))
        .collect();
    // (prefix, hooked name) -> address
    let mut addresses: BTreeMap<(&str, &'static str), u64> = BTreeMap::new();
    let mut cxx: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut python: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut libc_malloc = None;
    let mut own_library_mark = false;
    for symbol in file.dynamic_symbols().chain(file.symbols()) {
        if !symbol.is_definition() || symbol.kind() != SymbolKind::Text || symbol.address() == 0 {
            continue;
        }
        let Ok(name) = symbol.name() else { continue };
        // Versioned names from .symtab look like "malloc@@GLIBC_2.2.5".
        let name = name.split('@').next().unwrap_or(name);
        if name == "__libc_malloc" {
            libc_malloc.get_or_insert(symbol.address());
        }
        if !symbol.is_local()
            && OWN_LIBRARY_MARKS
                .iter()
                .any(|m| PREFIXES.iter().any(|p| name.strip_prefix(p) == Some(m)) || name == *m)
        {
            own_library_mark = true;
        }
        if let Some(&(hooked, _)) = HOOKED_PYTHON.iter().find(|(n, _)| *n == name) {
            if !symbol.is_local() {
                python.entry(hooked).or_insert(symbol.address());
            }
            continue;
        }
        if let Some(&(hooked, _)) = HOOKED_CXX.iter().find(|(n, _)| *n == name) {
            if !symbol.is_local() {
                cxx.entry(hooked).or_insert(symbol.address());
            }
            continue;
        }
        for &prefix in &prefixes {
            let Some(bare) = name.strip_prefix(prefix) else {
                continue;
            };
            // Under a prefix only exported functions count: a file's own
            // static tc_free is not an allocator API.
            if !prefix.is_empty() && symbol.is_local() {
                continue;
            }
            if let Some(&(hooked, _)) = HOOKED.iter().find(|(n, _)| *n == bare) {
                addresses
                    .entry((prefix, hooked))
                    .or_insert(symbol.address());
            }
        }
    }
    // glibc's malloc: its internal name at the address of the bare one (in
    // a file that is not another allocator's, which may export that name
    // too). An allocator's library of its own: not an executable (whose
    // text is the whole program's).
    let glibc = libc_malloc.is_some()
        && libc_malloc == addresses.get(&("", "malloc")).copied()
        && !own_library_mark;
    let own_library = own_library_mark
        && file.kind() == object::ObjectKind::Dynamic
        && file.section_by_name(".interp").is_none();
    let mut points: Vec<ProbePoint> = Vec::new();
    let mut wrappers = Vec::new();
    let callees = wrapper::Callees::of(&file);
    for &prefix in &prefixes {
        let has = |name: &'static str| addresses.contains_key(&(prefix, name));
        // A built-in prefix also needs calloc or realloc: two functions
        // named tc_malloc and tc_free are not proof of an allocator.
        let builtin = PREFIXES.contains(&prefix);
        if !(has("malloc") && has("free")) || (builtin && !(has("calloc") || has("realloc"))) {
            continue;
        }
        for &(name, hook) in HOOKED {
            if let Some(&vaddr) = addresses.get(&(prefix, name)) {
                let skip = match (glibc, own_library, LEAVES.contains(&name)) {
                    (true, _, true) if prefix.is_empty() => Skip::Glibc,
                    (false, true, true) => Skip::OwnText,
                    _ => Skip::Never,
                };
                let symbol = format!("{prefix}{name}");
                let pushed = push_point(
                    &mut points,
                    &data,
                    &file,
                    symbol.clone(),
                    (hook, skip, When::Always, 0),
                    vaddr,
                );
                // A probe the kernel would single-step, on a function that
                // checks its arguments and hands the call on: on its
                // failure paths instead.
                if !(pushed && is_alloc(hook) && points.last().is_some_and(|p| p.stepped)) {
                    continue;
                }
                let Some(checked) =
                    wrapper::checked_call(&data, &file, &callees, vaddr, same_kind(hook))
                else {
                    continue;
                };
                points.pop();
                for &at in &checked.failures {
                    if let Some(point) = failure_point(&file, &symbol, vaddr, at, &checked.call) {
                        points.push(point);
                    }
                }
                wrappers.push((symbol, checked.call));
            }
        }
    }
    // C++'s operators, where an allocator that replaces them defines them:
    // a file with operator new and operator delete, not libstdc++ (its
    // wrappers around malloc and free).
    if cxx.contains_key("_Znwm") && cxx.contains_key("_ZdlPv") && !is_libstdcxx(path) {
        for &(name, hook) in HOOKED_CXX {
            if let Some(&vaddr) = cxx.get(name) {
                if let Some(call) = wrapper::wrapped_call(
                    &data,
                    &file,
                    &callees,
                    vaddr,
                    !is_alloc(hook),
                    same_kind(hook),
                ) {
                    wrappers.push((name.to_string(), call));
                    continue;
                }
                push_point(
                    &mut points,
                    &data,
                    &file,
                    name.to_string(),
                    (hook, Skip::Never, When::Always, 0),
                    vaddr,
                );
            }
        }
    }
    // CPython's, in the file that defines its object allocator; its frees
    // in pymalloc itself where they can be. Where the interpreter's own
    // code has pymalloc inlined, its pools instead (see `pymalloc`).
    if python.contains_key("PyObject_Malloc") && python.contains_key("PyObject_Free") {
        python_points(&mut points, &data, &file, &python);
    }
    Ok(FileProbes { points, wrappers })
}

fn is_alloc(hook: Hook) -> bool {
    matches!(hook, Hook::Alloc(_))
}

/// Whether a callee, by name (bare or under one of [`PREFIXES`]), is a
/// hooked function of the same kind as `hook` (allocating or freeing).
fn same_kind(hook: Hook) -> impl Fn(&str) -> bool {
    move |callee: &str| {
        let bare = PREFIXES
            .iter()
            .find_map(|p| callee.strip_prefix(p))
            .unwrap_or(callee);
        HOOKED
            .iter()
            .chain(HOOKED_CXX)
            .any(|&(n, h)| (n == bare || n == callee) && is_alloc(h) == is_alloc(hook))
    }
}

/// The probe on the failure path at `at` bytes into function `symbol`
/// (at `vaddr`), whose other calls go on to `call`. Not flagged as
/// single-stepped even where it is: it runs once per failed call only.
fn failure_point(
    file: &object::File,
    symbol: &str,
    vaddr: u64,
    at: u64,
    call: &Wrapped,
) -> Option<ProbePoint> {
    let function = file_offset(file, vaddr)?;
    Some(ProbePoint {
        symbol: symbol.to_string(),
        hook: Hook::FailurePath,
        file_offset: function,
        entry_offset: file_offset(file, vaddr + at)?,
        placement: format!(
            "+{at}: its failure path (each run is a failed call; the calls that pass its \
             checks go on to {} at +{}, whose probes see them)",
            call.callee, call.at
        ),
        stepped: false,
        argument_bits: 0,
        skip: Skip::Never,
        when: When::Always,
        pool_bits: 0,
    })
}

/// Whether `path` is GNU libstdc++ (`libstdc++.so.6...`), whose `operator
/// new` and `operator delete` only wrap malloc and free (libsupc++'s
/// new_op.cc, del_op.cc and their aligned, sized and nothrow kin).
fn is_libstdcxx(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("libstdc++.so"))
}

/// CPython's probe points in the file that defines its allocation API
/// (`python`: name → address): the public functions, with the frees in
/// pymalloc where they tail-call it ([`pymalloc::inner_free`]); or, where
/// the interpreter's own code has pymalloc inlined and calls none of them
/// ([`pymalloc::inlined_pools`]), the function that takes a new pool, and
/// no public function: the inlined frees would never be seen, so blocks
/// recorded by the public ones would read as leaks. Blocks over 512 bytes
/// come from malloc there too, seen by malloc's probes.
fn python_points(
    points: &mut Vec<ProbePoint>,
    data: &[u8],
    file: &object::File,
    python: &BTreeMap<&'static str, u64>,
) {
    let at = |name| python.get(name).copied();
    if let (Some(malloc), Some(free)) = (at("PyObject_Malloc"), at("PyObject_Free")) {
        if let Some(pools) = pymalloc::inlined_pools(file, data, malloc, free) {
            let hook = Hook::Alloc(AllocFn::NewPool);
            let point = (hook, Skip::Never, When::Always, pools.pool_bits);
            let name = PYMALLOC_NEW_POOL.to_string();
            push_point(points, data, file, name, point, pools.new_pool);
            return;
        }
    }
    let frees: Vec<u64> = ["PyObject_Free", "PyMem_Free"]
        .iter()
        .filter_map(|n| python.get(n).copied())
        .collect();
    let inner = match frees.len() {
        2 => pymalloc::inner_free(file, data, &frees),
        _ => None,
    };
    for &(name, hook) in HOOKED_PYTHON {
        if let Some(&vaddr) = python.get(name) {
            let when = match (hook, inner) {
                (Hook::Free, Some(_)) => When::ReplacedAllocator,
                _ => When::Always,
            };
            let point = (hook, Skip::Never, when, 0);
            push_point(points, data, file, name.to_string(), point, vaddr);
        }
    }
    if let Some(vaddr) = inner {
        let point = (Hook::FreeSecond, Skip::Never, When::DefaultAllocator, 0);
        push_point(points, data, file, PYMALLOC_FREE.to_string(), point, vaddr);
    }
}

/// Adds the probe point of function `symbol` at `vaddr` (unless an alias
/// of it is there already), with its hook, whether unsampled calls may
/// skip their return, and the processes it is for.
fn push_point(
    points: &mut Vec<ProbePoint>,
    data: &[u8],
    file: &object::File,
    symbol: String,
    (hook, skip, when, pool_bits): (Hook, Skip, When, u32),
    vaddr: u64,
) -> bool {
    let Some(file_offset) = file_offset(file, vaddr) else {
        return false;
    };
    if points.iter().any(|p| p.file_offset == file_offset) {
        return false; // alias of a function already probed
    }
    let start = file_offset as usize;
    let code = data
        .get(start..data.len().min(start + placement::CODE_BYTES))
        .unwrap_or(&[]);
    // Free reads its pointer from rdi (pymalloc's from rsi); an allocation function its
    // arguments, and its return probe needs the return address still on
    // top of the stack, which placement keeps (no instruction passed
    // touches rsp).
    let arguments = argument_registers(hook);
    let mut p = placement::place(code, arguments);
    let mut argument_bits = 0;
    for (i, (&abi, &at)) in arguments.iter().zip(&p.registers).enumerate() {
        if abi == at {
            continue;
        }
        // Where the probe reads it from (each register the placement may
        // choose is one of the cookie's).
        let name = format!("{at:?}").to_lowercase();
        match ARG_REGISTERS.iter().position(|r| *r == name) {
            Some(index) => {
                argument_bits |= (index as u64 + 1) << (COOKIE_ARGS_SHIFT + 4 * i as u64)
            }
            None => {
                p = placement::Placement {
                    offset: 0,
                    reason: format!("kept at +0: an argument moves to {name}"),
                    // (+0 is not emulated, or it would have been chosen.)
                    emulated: false,
                    registers: arguments.to_vec(),
                };
                argument_bits = 0;
                break;
            }
        }
    }
    let (entry_offset, placement, stepped) = (file_offset + p.offset, p.reason, !p.emulated);
    points.push(ProbePoint {
        symbol,
        hook,
        file_offset,
        entry_offset,
        placement,
        stepped,
        argument_bits,
        skip,
        when,
        pool_bits,
    });
    true
}

/// The registers a hooked function's probes read its arguments from.
fn argument_registers(hook: Hook) -> &'static [Register] {
    match hook {
        // The pool size is the cookie's; only the return value is read.
        Hook::Alloc(AllocFn::NewPool) | Hook::FailurePath => &[],
        Hook::Free | Hook::Alloc(AllocFn::Malloc) => &[Register::RDI],
        Hook::FreeSecond => &[Register::RSI],
        Hook::Alloc(AllocFn::Calloc | AllocFn::Realloc | AllocFn::AlignedAlloc) => {
            &[Register::RDI, Register::RSI]
        }
        Hook::Alloc(AllocFn::ReallocArray | AllocFn::PosixMemalign) => {
            &[Register::RDI, Register::RSI, Register::RDX]
        }
    }
}

/// Whether process `pid` was started with glibc's malloc tuned to map
/// memory for small requests (see [`tunes_malloc_mapping`]); false when
/// its environment cannot be read.
pub fn malloc_maps_small(pid: u32) -> bool {
    fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| tunes_malloc_mapping(&env))
}

/// Whether an environment block (`/proc/PID/environ`) sets glibc's mmap
/// threshold (`MALLOC_MMAP_THRESHOLD_`, or `glibc.malloc.mmap_threshold`
/// in `GLIBC_TUNABLES`) or its huge-page use (`glibc.malloc.hugetlb`):
/// then malloc may map a chunk of its own below the default 128 KiB, and
/// no unsampled call may skip its return (see `tracer_common::
/// COOKIE_MAY_SKIP`). A `mallopt` call in the program cannot be seen.
fn tunes_malloc_mapping(environ: &[u8]) -> bool {
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    environ.split(|&b| b == 0).any(|var| {
        var.starts_with(b"MALLOC_MMAP_THRESHOLD_=")
            || (var.starts_with(b"GLIBC_TUNABLES=")
                && (contains(var, b"mmap_threshold") || contains(var, b"hugetlb")))
    })
}

/// Whether the executable at `path` is a Go program: its heap grows by
/// mmap from the Go runtime, seen through the mmap tracepoints only.
pub fn is_go_executable(path: &Path) -> bool {
    let Ok(file) = fs::File::open(path) else {
        return false;
    };
    // SAFETY: mapped read-only and private; only its section headers are
    // read.
    let Ok(data) = (unsafe { memmap2::Mmap::map(&file) }) else {
        return false;
    };
    object::File::parse(&*data).is_ok_and(|f| super::golang::is_go(&f))
}

/// Translates a virtual address of the ELF into a file offset through the
/// loadable segment containing it.
pub(crate) fn file_offset(file: &object::File, vaddr: u64) -> Option<u64> {
    file.segments().find_map(|seg| {
        let (offset, size) = seg.file_range();
        (seg.address() <= vaddr && vaddr < seg.address() + size)
            .then(|| offset + (vaddr - seg.address()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn system_libc() -> &'static Path {
        Path::new("/lib/x86_64-linux-gnu/libc.so.6")
    }

    #[test]
    fn environment_that_tunes_malloc_mapping() {
        assert!(!tunes_malloc_mapping(b"PATH=/bin\0HOME=/root\0"));
        assert!(tunes_malloc_mapping(b"A=1\0MALLOC_MMAP_THRESHOLD_=4096\0"));
        assert!(tunes_malloc_mapping(
            b"GLIBC_TUNABLES=glibc.malloc.tcache_count=0:glibc.malloc.mmap_threshold=8192\0"
        ));
        assert!(tunes_malloc_mapping(
            b"GLIBC_TUNABLES=glibc.malloc.hugetlb=1"
        ));
        assert!(!tunes_malloc_mapping(
            b"GLIBC_TUNABLES=glibc.malloc.tcache_count=0\0"
        ));
        assert!(!tunes_malloc_mapping(b"X_MALLOC_MMAP_THRESHOLD_=1\0"));
    }

    #[test]
    fn finds_glibc_allocator_and_dedups_aliases() {
        let points = probe_points(system_libc(), &[]).unwrap();
        let names: Vec<&str> = points.iter().map(|p| p.symbol.as_str()).collect();
        for expected in [
            "malloc",
            "calloc",
            "realloc",
            "free",
            "posix_memalign",
            "aligned_alloc",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
        // glibc 2.36's free starts with `test rdi,rdi; je`: probed at the je.
        let free = points.iter().find(|p| p.symbol == "free").unwrap();
        assert_eq!(free.entry_offset, free.file_offset + 3, "{free:?}");
        // glibc's memalign is an alias of aligned_alloc: probed once.
        assert!(!names.contains(&"memalign"), "{names:?}");
        let mut offsets: Vec<_> = points.iter().map(|p| p.file_offset).collect();
        offsets.sort();
        offsets.dedup();
        assert_eq!(offsets.len(), points.len());
        // Only malloc and calloc may skip an unsampled call's return.
        let skippable: Vec<(&str, Skip)> = points
            .iter()
            .filter(|p| p.skip != Skip::Never)
            .map(|p| (p.symbol.as_str(), p.skip))
            .collect();
        assert_eq!(
            skippable,
            [("malloc", Skip::Glibc), ("calloc", Skip::Glibc)]
        );
        // No probe the kernel single-steps: reallocarray (`mov rax,rsi;
        // mul rdx; mov rsi,rax; jo +0x10; jmp realloc@plt`) is probed on
        // its overflow path only, its other calls seen by realloc's.
        let stepped: Vec<&str> = points
            .iter()
            .filter(|p| p.stepped)
            .map(|p| p.symbol.as_str())
            .collect();
        assert!(stepped.is_empty(), "{stepped:?}");
        let failure: Vec<&ProbePoint> = points
            .iter()
            .filter(|p| p.hook == Hook::FailurePath)
            .collect();
        assert!(
            matches!(failure.as_slice(), [p] if p.symbol == "reallocarray"),
            "{failure:?}"
        );
        let wrapped = file_probes(system_libc(), &[]).unwrap().wrappers;
        let checked = wrapped.iter().find(|(name, _)| name == "reallocarray");
        let (_, call) = checked.expect("reallocarray among the wrappers");
        assert_eq!((call.callee.as_str(), call.at), ("realloc", 11));
        // (As for every point: the function's offset, and the probe's.)
        assert_eq!(
            failure[0].entry_offset,
            failure[0].file_offset + 16,
            "{failure:?}"
        );
        assert!(
            failure[0].placement.starts_with("+16: its failure path"),
            "{failure:?}"
        );
    }

    #[test]
    fn allocators_in_libraries_of_their_own_skip_by_their_text() {
        // Debian's (installed by `cargo xtask test`): tcmalloc and mimalloc
        // also export __libc_malloc, yet are not glibc.
        for lib in [
            "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
            "/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4",
            "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2",
        ] {
            let points = probe_points(Path::new(lib), &[]).unwrap();
            let mut skippable: Vec<(&str, Skip)> = points
                .iter()
                .filter(|p| p.skip != Skip::Never)
                .map(|p| (p.symbol.as_str(), p.skip))
                .collect();
            skippable.sort();
            assert_eq!(
                skippable,
                [("calloc", Skip::OwnText), ("malloc", Skip::OwnText)],
                "{lib}"
            );
        }
    }

    #[test]
    fn libstdcxx_operators_are_left_to_malloc_and_free() {
        // Debian's libstdc++ (a dependency of g++): its operators only wrap
        // malloc and free, which are probed in libc.
        let lib = Path::new("/usr/lib/x86_64-linux-gnu/libstdc++.so.6");
        assert!(is_libstdcxx(&lib.canonicalize().unwrap()));
        assert_eq!(probe_points(lib, &[]).unwrap(), Vec::new());
        // tcmalloc's own operator new is hooked (its operator delete is
        // its free, at the same address: probed once, as free).
        let tcmalloc = Path::new("/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4");
        let points = probe_points(tcmalloc, &[]).unwrap();
        assert!(points
            .iter()
            .any(|p| p.symbol == "_Znwm" && p.hook == Hook::Alloc(AllocFn::Malloc)));
        // glibc's malloc starts with an emulated push: it stays at +0.
        let libc = probe_points(system_libc(), &[]).unwrap();
        let malloc = libc.iter().find(|p| p.symbol == "malloc").unwrap();
        assert_eq!(malloc.entry_offset, malloc.file_offset, "{malloc:?}");
    }

    #[test]
    fn ignores_files_without_an_allocator() {
        let exe = std::env::current_exe().unwrap();
        // The test binary imports malloc from libc but does not define it.
        assert!(probe_points(&exe, &[]).unwrap().is_empty());
    }
}
