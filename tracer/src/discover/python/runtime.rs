//! Which CPython a process runs: the mapped file that holds the runtime
//! (`libpython3.X.so` for a shared build, the executable itself for a
//! static one such as Debian's `/usr/bin/python3.11`), its version, and
//! where its `_PyRuntime` and the type objects the walk checks against
//! (`PyCode_Type`, `PyFrame_Type`, `PyUnicode_Type`, `PyBytes_Type`) are in
//! the process. Everything is found by exported symbol (`.dynsym`, which a
//! stripped interpreter keeps), then `.symtab` if there is one.

use std::{
    fs::File,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use object::{Object, ObjectSection, ObjectSymbol};

use crate::discover::{
    image::{load_bias, symbols},
    memory::Memory,
    target::{self, Mapping},
};

/// The oldest and newest minor versions of CPython 3 the walk reads.
pub const OLDEST_MINOR: u32 = 8;
pub const NEWEST_MINOR: u32 = 13;

/// A CPython runtime found in a process.
#[derive(Clone, Debug)]
pub struct Runtime {
    pub pid: u32,
    /// The mapped file holding the runtime, as the process maps it.
    pub file: String,
    /// `PY_VERSION_HEX`-style: 0x030B07F0 for 3.11.7 final. Without
    /// `Py_Version` (before 3.11), the micro version comes from the
    /// `PY_VERSION` string in the file, 0 when it is not found.
    pub version: u32,
    /// Where `_PyRuntime` is in the process.
    pub runtime: u64,
    /// Where the type objects are in the process (`PyFrame_Type` only
    /// before 3.11, when frames are objects).
    pub code_type: u64,
    pub frame_type: Option<u64>,
    pub unicode_type: u64,
    pub bytes_type: u64,
    /// Where `_PyEval_EvalFrameDefault` is (start, end) in the process: a
    /// native frame there runs Python frames.
    pub eval_frame: Option<(u64, u64)>,
}

impl Runtime {
    pub fn minor(&self) -> u32 {
        (self.version >> 16) & 0xff
    }

    /// `CPython 3.11.7 (libpython3.11.so.1.0)`.
    pub fn describe(&self) -> String {
        let name = Path::new(&self.file)
            .file_name()
            .map_or(self.file.clone(), |n| n.to_string_lossy().into_owned());
        format!("CPython {} ({name})", version_string(self.version))
    }
}

/// `3.11.7`, `3.13.0rc2`.
pub fn version_string(hex: u32) -> String {
    let (major, minor, micro) = (hex >> 24, (hex >> 16) & 0xff, (hex >> 8) & 0xff);
    let level = match (hex >> 4) & 0xf {
        0xa => "a",
        0xb => "b",
        0xc => "rc",
        _ => "",
    };
    let serial = match level {
        "" => String::new(),
        _ => (hex & 0xf).to_string(),
    };
    format!("{major}.{minor}.{micro}{level}{serial}")
}

/// What a file name says of the runtime it holds: `libpython3.11.so.1.0`
/// → (11, free-threaded: false); `libpython3.13t.so.1.0`, `python3.13t` →
/// (13, true); None for anything else.
pub fn version_from_name(name: &str) -> Option<(u32, bool)> {
    let rest = name
        .strip_prefix("libpython3.")
        .or_else(|| name.strip_prefix("python3."))?;
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    let minor = rest[..digits].parse().ok()?;
    let after = &rest[digits..];
    // ABI flags: t (free-threaded), d (debug), m (pymalloc, before 3.8).
    let flags: String = after
        .chars()
        .take_while(|c| c.is_ascii_lowercase())
        .collect();
    let tail = &after[flags.len()..];
    let shared = name.starts_with("lib");
    if (shared && !tail.starts_with(".so")) || (!shared && !tail.is_empty()) {
        return None;
    }
    Some((minor, flags.contains('t')))
}

/// Where CPython process `pid` ends while its code objects still live
/// (`runtime_file`: the file holding its runtime, as the process maps
/// it): `Py_FinalizeEx` there, which a normal end runs before it frees
/// the modules, and libc's `_exit`, which `os._exit` calls without
/// finalizing. Each as (the file through the process's root, file
/// offset); a point not found is left out.
pub fn end_points(pid: u32, runtime_file: &str) -> Vec<(PathBuf, u64)> {
    let maps = target::read_maps(pid).unwrap_or_default();
    let libc = mapped_named(&maps, "libc.so");
    [(Some(runtime_file), "Py_FinalizeEx"), (libc, "_exit")]
        .into_iter()
        .filter_map(|(file, symbol)| {
            let path = PathBuf::from(format!("/proc/{pid}/root{}", file?));
            let offset = exported_offset(&path, symbol)?;
            Some((path, offset))
        })
        .collect()
}

/// Where CPython process `pid`, stopped at its entry point, is about to
/// run its main program, its interpreter initialized: `Py_RunMain` (3.8+),
/// in its libpython or else its executable, as (the file through the
/// process's root, file offset). None for a process that maps no
/// libpython and whose executable exports no `Py_RunMain`.
pub fn start_point(pid: u32) -> Option<(PathBuf, u64)> {
    let maps = target::read_maps(pid).ok()?;
    let lib = mapped_named(&maps, "libpython");
    let path = match lib {
        Some(lib) => PathBuf::from(format!("/proc/{pid}/root{lib}")),
        None => PathBuf::from(format!("/proc/{pid}/exe")),
    };
    let offset = exported_offset(&path, "Py_RunMain")?;
    Some((path, offset))
}

/// The first mapped file whose name starts with `prefix`, as the process
/// maps it.
fn mapped_named<'a>(maps: &'a [Mapping], prefix: &str) -> Option<&'a str> {
    maps.iter().filter_map(|m| m.path.as_deref()).find(|p| {
        Path::new(p)
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
    })
}

/// The file offset of the function `symbol` that the ELF file at `path`
/// exports.
fn exported_offset(path: &Path, symbol: &str) -> Option<u64> {
    let file = File::open(path).ok()?;
    // SAFETY: a read-only private mapping, only parsed.
    let data = unsafe { memmap2::Mmap::map(&file) }.ok()?;
    let elf = object::File::parse(&*data).ok()?;
    let vaddr = elf
        .dynamic_symbols()
        .find(|s| s.is_definition() && s.name().is_ok_and(|n| n == symbol))?
        .address();
    crate::discover::allocator::file_offset(&elf, vaddr)
}

/// Finds the CPython runtime `pid` runs, or says in one line why there is
/// none the walk can read.
pub fn find(pid: u32, mem: &Memory) -> Result<Runtime> {
    let maps = target::read_maps(pid)?;
    let base = |m: &Mapping| {
        m.path
            .as_deref()
            .and_then(|p| Path::new(p).file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    // libpython3.X.so; any other libpython (2.7, the stable-ABI
    // libpython3.so alone) to say it is not one memtrace reads.
    let is_lib = |m: &&Mapping| m.is_file() && base(m).starts_with("libpython");
    let lib = maps
        .iter()
        .filter(is_lib)
        .find(|m| version_from_name(&base(m)).is_some())
        .or_else(|| maps.iter().find(is_lib));
    let exe_path = std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| {
            p.to_string_lossy()
                .trim_end_matches(" (deleted)")
                .to_string()
        });
    let holder = match lib {
        Some(m) => m,
        None => maps
            .iter()
            .find(|m| m.is_file() && m.path.is_some() && m.path == exe_path)
            .with_context(|| format!("pid {pid}: its executable is not mapped"))?,
    };
    let name = base(holder);
    let named = version_from_name(&name);
    if lib.is_some() && named.is_none() {
        bail!("pid {pid}: {name} is not a CPython 3 runtime memtrace reads (3.{OLDEST_MINOR} to 3.{NEWEST_MINOR} are)");
    }
    if let Some((minor, _)) = named.filter(|(m, _)| !(OLDEST_MINOR..=NEWEST_MINOR).contains(m)) {
        bail!("pid {pid}: CPython 3.{minor} ({name}) is not supported (3.{OLDEST_MINOR} to 3.{NEWEST_MINOR} are)");
    }
    if let Some((minor, true)) = named {
        bail!("pid {pid}: free-threaded CPython 3.{minor}t ({name}) is not supported yet");
    }
    let path = target::mapped_file_path(pid, holder)
        .with_context(|| format!("pid {pid}: no path to {name}"))?;
    let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: mapped read-only and private; a file truncated under us can
    // fault, as with every reader of mapped files (blazesym maps it too).
    let data = unsafe { memmap2::Mmap::map(&file) }
        .with_context(|| format!("mapping {}", path.display()))?;
    let obj = object::File::parse(&*data).with_context(|| format!("{name}: not an ELF file"))?;
    let symbols = symbols(
        &obj,
        &[
            "_PyRuntime",
            "Py_Version",
            "PyCode_Type",
            "PyFrame_Type",
            "PyUnicode_Type",
            "PyBytes_Type",
        ],
    );
    let Some(&runtime_vaddr) = symbols.get("_PyRuntime") else {
        match lib {
            Some(_) => bail!("pid {pid}: {name} has no _PyRuntime symbol"),
            None => bail!(
                "pid {pid}: not a CPython 3 process (no libpython mapped, no _PyRuntime in {name})"
            ),
        }
    };
    let bias = load_bias(&obj, &maps, holder)
        .with_context(|| format!("pid {pid}: where {name} is loaded"))?;
    let at = |sym: &str| symbols.get(sym).map(|&v| v.wrapping_add(bias));
    let version = match at("Py_Version") {
        Some(addr) => mem
            .u32(addr)
            .with_context(|| format!("pid {pid}: reading Py_Version"))?,
        None => {
            let minor = named
                .map(|(m, _)| m)
                .with_context(|| format!("pid {pid}: {name} says no CPython version (no Py_Version, no version in its name)"))?;
            let micro = micro_from_rodata(&obj, minor).unwrap_or(0);
            0x0300_00f0 | (minor << 16) | (micro << 8)
        }
    };
    let minor = (version >> 16) & 0xff;
    if version >> 24 != 3 || named.is_some_and(|(m, _)| m != minor) {
        bail!(
            "pid {pid}: {name} says version {}, not what its name says",
            version_string(version)
        );
    }
    if !(OLDEST_MINOR..=NEWEST_MINOR).contains(&minor) {
        bail!(
            "pid {pid}: CPython {} is not supported (3.{OLDEST_MINOR} to 3.{NEWEST_MINOR} are)",
            version_string(version)
        );
    }
    let need = |sym: &str| at(sym).with_context(|| format!("pid {pid}: {name} has no {sym}"));
    let eval_frame = obj
        .dynamic_symbols()
        .chain(obj.symbols())
        .find(|s| s.is_definition() && s.name() == Ok("_PyEval_EvalFrameDefault") && s.size() > 0)
        .map(|s| {
            let start = s.address().wrapping_add(bias);
            (start, start + s.size())
        });
    Ok(Runtime {
        pid,
        file: holder.path.clone().unwrap_or_default(),
        version,
        runtime: runtime_vaddr.wrapping_add(bias),
        code_type: need("PyCode_Type")?,
        frame_type: match minor {
            ..=10 => Some(need("PyFrame_Type")?),
            _ => None,
        },
        unicode_type: need("PyUnicode_Type")?,
        bytes_type: need("PyBytes_Type")?,
        eval_frame,
    })
}

/// The micro version from the `PY_VERSION` string ("3.9.18") in the
/// file's read-only data, for builds without `Py_Version` (before 3.11).
fn micro_from_rodata(obj: &object::File, minor: u32) -> Option<u32> {
    let data = obj.section_by_name(".rodata")?.data().ok()?;
    // The linker merges a string into the tail of a longer one that ends
    // with it ("/root/.pyenv/versions/3.9.18"), so the string may not
    // start after a NUL: it is "3.9." after no digit or dot, then the
    // micro version, an optional pre-release tag ("rc1", "+") and a NUL.
    let prefix = format!("3.{minor}.");
    let mut from = 0;
    while let Some(i) = find_bytes(&data[from..], prefix.as_bytes()) {
        let at = from + i;
        let start = at + prefix.len();
        from = start;
        if at > 0 && (data[at - 1].is_ascii_digit() || data[at - 1] == b'.') {
            continue;
        }
        let digits = data[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let end = start + digits;
        let tail = data[end..].iter().take_while(|&&b| b != 0).count();
        let tag = &data[end..end + tail];
        if (1..=2).contains(&digits)
            && tail <= 3
            && tag.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'+')
        {
            return std::str::from_utf8(&data[start..end]).ok()?.parse().ok();
        }
    }
    None
}

fn find_bytes(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(version_from_name("libpython3.11.so.1.0"), Some((11, false)));
        assert_eq!(version_from_name("libpython3.8.so"), Some((8, false)));
        assert_eq!(version_from_name("libpython3.13t.so.1.0"), Some((13, true)));
        assert_eq!(version_from_name("python3.13t"), Some((13, true)));
        assert_eq!(version_from_name("python3.11"), Some((11, false)));
        assert_eq!(version_from_name("libpython3.7m.so.1.0"), Some((7, false)));
        assert_eq!(version_from_name("libpython3.so"), None);
        assert_eq!(version_from_name("python3"), None);
        assert_eq!(version_from_name("python3.11-config"), None);
    }

    #[test]
    fn versions() {
        assert_eq!(version_string(0x030b_07f0), "3.11.7");
        assert_eq!(version_string(0x030d_00c2), "3.13.0rc2");
    }
}
