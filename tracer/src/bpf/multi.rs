//! Uprobe session programs and uprobe_multi links, which aya 0.14 cannot
//! make: the one place memtrace calls bpf(2) itself ([`bpf`]; drain.rs's
//! batched map reads use it too).
//!
//! A uprobe session program (kernels 6.13+) is a kprobe-type program loaded
//! with the expected attach type `BPF_TRACE_UPROBE_SESSION` and attached
//! through a uprobe_multi link of the same attach type: the kernel runs it
//! at each probed function's entry and, only when that run returned 0, at
//! the function's return. aya's `UProbe::load` never sets an expected
//! attach type, and nothing in aya creates uprobe_multi links, so:
//!
//! - [`MultiProgram::load`] parses the same eBPF object with aya-obj (the
//!   crate aya itself loads it with), points its map references at the maps
//!   aya already created (the settings in `.rodata` included, so both see
//!   one configuration), links its calls (the stack walk's `bpf_loop`
//!   callback is a subprogram) and loads the program with the BTF aya
//!   loaded for the object (the kernel wants BTF function info for a
//!   callback: without it the verifier says "missing btf func_info");
//! - [`MultiProgram::attach`] makes one uprobe_multi link for every
//!   allocation function of a file (an attach cookie per function), or
//!   every free function, for one process or all. A multi link also
//!   detaches in one go: the kernel waits for its probes' handlers once
//!   (~80 ms here) rather than once per probe.
//!
//! `free_enter` is loaded the same way as a plain uprobe_multi program
//! (`BPF_TRACE_UPROBE_MULTI`, entry only) alongside the session program,
//! for the single detach.
//!
//! The attribute layouts are aya-obj's bindings of the kernel's `union
//! bpf_attr` (`BPF_PROG_LOAD`, `BPF_LINK_CREATE`'s `uprobe_multi`,
//! `BPF_BTF_GET_FD_BY_ID`, `BPF_OBJ_GET_INFO_BY_FD`); only the attach type's value is ours (the
//! bindings predate it).

use std::{
    collections::HashSet,
    ffi::CString,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
    path::Path,
};

use anyhow::{bail, Context, Result};
use aya::{maps::Map, Ebpf};
use aya_obj::generated::{bpf_attach_type, bpf_attr, bpf_cmd, bpf_prog_info, bpf_prog_type};

/// `BPF_TRACE_UPROBE_SESSION` of the kernel's `enum bpf_attach_type` (6.13+).
const BPF_TRACE_UPROBE_SESSION: u32 = 57;
/// `BPF_TRACE_UPROBE_MULTI` (6.6+).
const BPF_TRACE_UPROBE_MULTI: u32 = bpf_attach_type::BPF_TRACE_UPROBE_MULTI as u32;

/// How a multi-uprobe program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// At the entry, and at the return when the entry run returned 0.
    Session,
    /// At the entry only.
    Entry,
}

impl Kind {
    fn attach_type(self) -> u32 {
        match self {
            Kind::Session => BPF_TRACE_UPROBE_SESSION,
            Kind::Entry => BPF_TRACE_UPROBE_MULTI,
        }
    }
}

/// A loaded uprobe_multi program.
pub struct MultiProgram {
    fd: OwnedFd,
    kind: Kind,
}

impl MultiProgram {
    /// Loads program `name` of the eBPF object `object` as a uprobe_multi
    /// program of `kind`, against the maps of `bpf` (which loaded the same
    /// object) and the object's BTF as loaded by the kernel (id `btf_id`,
    /// from a program aya loaded). Errors when this kernel has no such
    /// programs, which the caller takes as "use uprobes and uretprobes".
    pub fn load(
        bpf: &Ebpf,
        object: &[u8],
        name: &str,
        btf_id: u32,
        kind: Kind,
    ) -> Result<MultiProgram> {
        let mut obj = aya_obj::Object::parse(object).context("parsing the eBPF object")?;
        if obj.has_btf_relocations() {
            // aya resolves CO-RE relocations against the kernel's BTF; this
            // loader does not, and memtrace's programs have none.
            bail!("the eBPF object has CO-RE relocations");
        }
        let text_sections: HashSet<usize> = obj.functions.keys().map(|&(s, _)| s).collect();
        let defs = obj.maps.clone();
        let mut maps = Vec::new();
        for (map_name, def) in &defs {
            let map = bpf
                .map(map_name)
                .with_context(|| format!("map {map_name} not created"))?;
            maps.push((map_name.as_str(), map_fd(map).as_raw_fd(), def));
        }
        obj.relocate_maps(maps.into_iter(), &text_sections)
            .context("relocating map references")?;
        obj.relocate_calls(&text_sections)
            .context("relocating calls")?;
        let program = obj
            .programs
            .get(name)
            .with_context(|| format!("program {name} missing from the eBPF object"))?;
        let function = obj
            .functions
            .get(&program.function_key())
            .with_context(|| format!("function of program {name} missing"))?;
        let btf = btf_fd_by_id(btf_id)?;
        let func_info = function.func_info.func_info_bytes();
        let line_info = function.line_info.line_info_bytes();
        let license = CString::new("GPL").expect("no NUL");
        // SAFETY: bpf_attr is a plain C union; all-zero is its default.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        // SAFETY: writing the BPF_PROG_LOAD member of the zeroed union.
        let load = unsafe { &mut attr.__bindgen_anon_3 };
        load.prog_type = bpf_prog_type::BPF_PROG_TYPE_KPROBE as u32;
        load.expected_attach_type = kind.attach_type();
        load.insns = function.instructions.as_ptr() as u64;
        load.insn_cnt = function.instructions.len() as u32;
        load.license = license.as_ptr() as u64;
        for (dst, &src) in load
            .prog_name
            .iter_mut()
            .zip(name.as_bytes().iter().take(15))
        {
            *dst = src as std::ffi::c_char;
        }
        load.prog_btf_fd = btf.as_raw_fd() as u32;
        if function.func_info_rec_size > 0 {
            load.func_info = func_info.as_ptr() as u64;
            load.func_info_cnt = function.func_info.len() as u32;
            load.func_info_rec_size = function.func_info_rec_size as u32;
        }
        if function.line_info_rec_size > 0 {
            load.line_info = line_info.as_ptr() as u64;
            load.line_info_cnt = function.line_info.len() as u32;
            load.line_info_rec_size = function.line_info_rec_size as u32;
        }
        // SAFETY: every pointer in `attr` (instructions, license, BTF info)
        // points into a live local for the duration of the call.
        let fd = unsafe { sys_bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr) };
        match fd {
            Ok(fd) => Ok(MultiProgram { fd, kind }),
            Err(e) => {
                // Again with the verifier's log, for the error (a log that
                // does not fit fails the load with ENOSPC: so not the
                // first time).
                let mut log = vec![0u8; 16 << 20];
                // SAFETY: as above; plus the log, a live local.
                unsafe {
                    let load = &mut attr.__bindgen_anon_3;
                    load.log_level = 1;
                    load.log_buf = log.as_mut_ptr() as u64;
                    load.log_size = log.len() as u32;
                    let _ = sys_bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr);
                }
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                let log = String::from_utf8_lossy(&log[..end]);
                let tail: Vec<&str> = log.lines().rev().take(3).collect();
                bail!(
                    "loading {name} as a {kind:?} uprobe_multi program: {e} ({})",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
                )
            }
        }
    }

    /// Whether this kernel attaches such programs: a link to a path that
    /// does not exist fails with ENOENT where it does (the path is looked
    /// up after the attach type is accepted) and with EINVAL where it does
    /// not (6.6–6.12 know uprobe_multi links, not sessions).
    pub fn attaches(&self) -> Result<()> {
        match self.link(Path::new("/memtrace-no-such-file"), &[0], &[0], None) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            Err(e) => bail!("creating a {:?} uprobe_multi link: {e}", self.kind),
            Ok(_) => bail!("a uprobe_multi link to no file was accepted"),
        }
    }

    /// Attaches the program at file offsets `offsets` of `path`, each with
    /// its attach cookie, for process `pid` only or every process. The
    /// probes go in one system call and are removed together when the
    /// returned link is closed.
    pub fn attach(
        &self,
        path: &Path,
        offsets: &[u64],
        cookies: &[u64],
        pid: Option<u32>,
    ) -> Result<OwnedFd> {
        self.link(path, offsets, cookies, pid).with_context(|| {
            format!(
                "creating a {:?} uprobe_multi link on {}",
                self.kind,
                path.display()
            )
        })
    }

    /// How many times the kernel ran the program, and for how long in all
    /// (ns; counted while BPF statistics are enabled). A session program
    /// runs at entries and at the returns not skipped.
    pub fn run_stats(&self) -> (u64, u64) {
        // SAFETY: bpf_prog_info is plain C data; all-zero is valid.
        let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
        // SAFETY: bpf_attr is a plain C union; all-zero is its default.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        attr.info.bpf_fd = self.fd.as_raw_fd() as u32;
        attr.info.info_len = std::mem::size_of::<bpf_prog_info>() as u32;
        attr.info.info = std::ptr::from_mut(&mut info) as u64;
        // SAFETY: `info` is live and as long as `info_len` says.
        match unsafe { bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr) } {
            Ok(_) => (info.run_cnt, info.run_time_ns),
            Err(_) => (0, 0),
        }
    }

    fn link(
        &self,
        path: &Path,
        offsets: &[u64],
        cookies: &[u64],
        pid: Option<u32>,
    ) -> std::io::Result<OwnedFd> {
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(offsets.len(), cookies.len());
        let path = CString::new(path.as_os_str().as_bytes())?;
        // SAFETY: bpf_attr is a plain C union; all-zero is its default.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        // SAFETY: writing the BPF_LINK_CREATE member of the zeroed union.
        let create = unsafe { &mut attr.link_create };
        create.__bindgen_anon_1.prog_fd = self.fd.as_raw_fd() as u32;
        create.attach_type = self.kind.attach_type();
        // SAFETY: writing the uprobe_multi member of the zeroed union.
        let multi = unsafe { &mut create.__bindgen_anon_3.uprobe_multi };
        multi.path = path.as_ptr() as u64;
        multi.offsets = offsets.as_ptr() as u64;
        multi.cookies = cookies.as_ptr() as u64;
        multi.cnt = offsets.len() as u32;
        multi.pid = pid.unwrap_or(0);
        // SAFETY: path, offsets and cookies outlive the call; the kernel
        // copies them.
        unsafe { sys_bpf(bpf_cmd::BPF_LINK_CREATE, &mut attr) }
    }
}

/// A file descriptor for the BTF object of id `id`.
fn btf_fd_by_id(id: u32) -> Result<OwnedFd> {
    // SAFETY: bpf_attr is a plain C union; all-zero is its default.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // The btf_id member of BPF_BTF_GET_FD_BY_ID's attributes.
    attr.__bindgen_anon_6.__bindgen_anon_1.btf_id = id;
    // SAFETY: no pointers in `attr`.
    unsafe { sys_bpf(bpf_cmd::BPF_BTF_GET_FD_BY_ID, &mut attr) }
        .with_context(|| format!("opening the eBPF object's BTF (id {id})"))
}

/// The file descriptor of an aya map.
fn map_fd(map: &Map) -> BorrowedFd<'_> {
    let data = match map {
        Map::Array(d)
        | Map::ArrayOfMaps(d)
        | Map::BloomFilter(d)
        | Map::CgroupArray(d)
        | Map::CgroupStorage(d)
        | Map::CgrpStorage(d)
        | Map::CpuMap(d)
        | Map::DevMap(d)
        | Map::DevMapHash(d)
        | Map::HashMap(d)
        | Map::HashOfMaps(d)
        | Map::InodeStorage(d)
        | Map::LpmTrie(d)
        | Map::LruHashMap(d)
        | Map::PerCpuArray(d)
        | Map::PerCpuCgroupStorage(d)
        | Map::PerCpuHashMap(d)
        | Map::PerCpuLruHashMap(d)
        | Map::PerfEventArray(d)
        | Map::ProgramArray(d)
        | Map::Queue(d)
        | Map::ReusePortSockArray(d)
        | Map::RingBuf(d)
        | Map::SockHash(d)
        | Map::SockMap(d)
        | Map::SkStorage(d)
        | Map::Stack(d)
        | Map::StackTraceMap(d)
        | Map::Unsupported(d)
        | Map::XskMap(d) => d,
    };
    data.fd().as_fd()
}

/// bpf(2) with `cmd`, for the commands that return a new file descriptor.
///
/// # Safety
/// As [`bpf`].
#[deny(unsafe_op_in_unsafe_fn)]
unsafe fn sys_bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> std::io::Result<OwnedFd> {
    // SAFETY: the caller's promise.
    let fd = unsafe { bpf(cmd, attr) }?;
    // SAFETY: on success these commands return a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// bpf(2) with `cmd`: its non-negative result, or the error.
///
/// # Safety
/// Every pointer in `attr` must be valid for the kernel to read (or, for
/// the log buffer and info, write) during the call.
#[deny(unsafe_op_in_unsafe_fn)]
pub(crate) unsafe fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> std::io::Result<libc::c_long> {
    // SAFETY: the caller vouches for the pointers; the size is the
    // union's, which the kernel accepts (it zero-checks any tail it does
    // not know).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            std::ptr::from_mut(attr),
            std::mem::size_of::<bpf_attr>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rc)
}
