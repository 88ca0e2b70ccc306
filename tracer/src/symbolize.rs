//! Symbolization: addresses → function, file:line, module. Each target's
//! mappings are snapshotted while it lives (so stacks of a process that has
//! exited still resolve), addresses become (file, file offset), and
//! blazesym resolves those from the ELF symbols and DWARF, caching every
//! binary it parsed. Results are cached per (file, offset).

use std::{collections::HashMap, path::PathBuf};

use blazesym::symbolize::{
    source::{Elf, Source},
    Input, Symbolized, Symbolizer as Blaze,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::target::{self, Mapping};

/// One resolved frame. Unknown parts are None, never invented.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    #[serde(serialize_with = "hex", deserialize_with = "from_hex")]
    pub address: u64,
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub module: Option<String>,
}

fn hex<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#x}"))
}

fn from_hex<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let text = String::deserialize(d)?;
    let digits = text.strip_prefix("0x").unwrap_or(&text);
    u64::from_str_radix(digits, 16)
        .map_err(|_| serde::de::Error::custom(format!("not a hex address: {text:?}")))
}

#[derive(Clone, Default)]
struct Resolved {
    function: Option<String>,
    file: Option<String>,
    line: Option<u32>,
}

pub struct Symbolizer {
    blaze: Blaze,
    maps: HashMap<u32, Vec<Mapping>>,
    cache: HashMap<(PathBuf, u64), Resolved>,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbolizer {
    pub fn new() -> Self {
        Symbolizer {
            blaze: Blaze::builder()
                .enable_code_info(true)
                .enable_demangling(true)
                .enable_inlined_fns(false)
                .build(),
            maps: HashMap::new(),
            cache: HashMap::new(),
        }
    }

    /// Re-reads `pid`'s mappings. Mappings that disappeared (a library
    /// unloaded) are kept unless something new overlaps them, so older
    /// stacks still resolve. A process that is gone keeps its last snapshot.
    pub fn refresh(&mut self, pid: u32) {
        let Ok(fresh) = target::read_maps(pid) else {
            return;
        };
        // /proc/PID/maps is sorted by address; the overlap test is a binary
        // search, so a process with 100k mappings stays cheap.
        let old = self.maps.remove(&pid).unwrap_or_default();
        let overlaps_fresh = |o: &Mapping| {
            let i = fresh.partition_point(|n| n.end <= o.start);
            fresh.get(i).is_some_and(|n| n.start < o.end)
        };
        let kept: Vec<Mapping> = old.into_iter().filter(|o| !overlaps_fresh(o)).collect();
        let mut merged = fresh;
        merged.extend(kept);
        merged.sort_by_key(|m| m.start);
        self.maps.insert(pid, merged);
    }

    /// Drops `pid`'s mappings (its address space was replaced by exec).
    pub fn forget(&mut self, pid: u32) {
        self.maps.remove(&pid);
    }

    /// The mapping of `pid` containing `addr`, if known.
    pub fn mapping(&self, pid: u32, addr: u64) -> Option<&Mapping> {
        let maps = self.maps.get(&pid)?;
        let i = maps.partition_point(|m| m.start <= addr);
        maps[..i].last().filter(|m| m.contains(addr))
    }

    /// Resolves a stack of return addresses (innermost first). A
    /// frame-pointer walk that strays into code without frame pointers reads
    /// data as return addresses: the stack ends at the first address outside
    /// any executable mapping (frame 0 is kept, as unknown, even then).
    pub fn frames(&mut self, pid: u32, addrs: &[u64]) -> Vec<Frame> {
        let in_code = |s: &Self, a: u64| {
            s.mapping(pid, a.saturating_sub(1))
                .is_some_and(|m| m.executable)
        };
        let keep = addrs
            .iter()
            .enumerate()
            .take_while(|&(i, &a)| i == 0 || in_code(self, a))
            .count();
        addrs[..keep].iter().map(|&a| self.frame(pid, a)).collect()
    }

    fn frame(&mut self, pid: u32, address: u64) -> Frame {
        // Return addresses point after the call; the call itself is one
        // byte earlier, which is what file:line should describe.
        let lookup = address.saturating_sub(1);
        let Some(mapping) = self.mapping(pid, lookup).cloned() else {
            return Frame {
                address,
                function: None,
                file: None,
                line: None,
                module: None,
            };
        };
        let resolved = match target::mapped_file_path(pid, &mapping) {
            Some(file) => {
                let offset = lookup - mapping.start + mapping.offset;
                self.resolve(file, offset)
            }
            None => Resolved::default(),
        };
        Frame {
            address,
            function: resolved.function,
            file: resolved.file,
            line: resolved.line,
            module: mapping.path,
        }
    }

    fn resolve(&mut self, file: PathBuf, offset: u64) -> Resolved {
        let key = (file, offset);
        if let Some(r) = self.cache.get(&key) {
            return r.clone();
        }
        let src = Source::Elf(Elf::new(&key.0));
        let resolved = match self.blaze.symbolize_single(&src, Input::FileOffset(offset)) {
            Ok(Symbolized::Sym(sym)) => Resolved {
                function: Some(sym.name.to_string()),
                file: sym
                    .code_info
                    .as_ref()
                    .map(|c| c.to_path().to_string_lossy().into_owned()),
                line: sym.code_info.as_ref().and_then(|c| c.line),
            },
            _ => Resolved::default(),
        };
        self.cache.insert(key, resolved.clone());
        resolved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn marker_function_for_symbolizer_test() -> u64 {
        marker_function_for_symbolizer_test as *const () as u64
    }

    #[test]
    fn resolves_own_function_and_unknowns_stay_null() {
        let mut sym = Symbolizer::new();
        let pid = std::process::id();
        sym.refresh(pid);
        // +1: frames are return addresses; the symbolizer looks one byte back.
        let addr = marker_function_for_symbolizer_test() + 1;
        let f = sym.frames(pid, &[addr, 0x10, addr]);
        let name = f[0].function.as_deref().unwrap_or_default();
        assert!(
            name.contains("marker_function_for_symbolizer_test"),
            "{f:?}"
        );
        assert!(f[0].module.as_deref().is_some_and(|m| m.starts_with('/')));
        // 0x10 is no code: the stack ends there.
        assert_eq!(f.len(), 1, "{f:?}");
        let f = sym.frames(pid, &[0x10]);
        assert_eq!((f[0].function.clone(), f[0].module.clone()), (None, None));
    }
}
