//! What the symbolizer reads of a mapped ELF file once: its build id and
//! debug link (to find separate debug information), whether it has symbols
//! and line tables of its own, its loadable segments (file offset to
//! virtual address, for a separate debug file), and the names it exports
//! (`.dynsym`), which name a function by its public name when its symbol
//! table calls it by an internal alias (glibc's `__GI_setlocale`,
//! `__GI___strdup`, `_IO_new_file_overflow`).

use std::{collections::HashMap, fs::File, path::Path};

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol, SymbolKind};

/// One mapped file's facts.
#[derive(Debug, Default)]
pub struct ElfInfo {
    /// The GNU build id (`.note.gnu.build-id`).
    pub build_id: Option<Vec<u8>>,
    /// `.gnu_debuglink`: the debug file's name and CRC32.
    pub debuglink: Option<(String, u32)>,
    /// The file has DWARF line tables (`.debug_line`) of its own.
    pub has_lines: bool,
    /// The file has a full symbol table (`.symtab`), not only `.dynsym`.
    pub has_symtab: bool,
    /// Loadable segments: (file offset, virtual address, size in the file).
    loads: Vec<(u64, u64, u64)>,
    /// The public name of each exported function, by address.
    exported: HashMap<u64, String>,
}

impl ElfInfo {
    /// Reads `path`; None when it cannot be read or is no object file.
    pub fn read(path: &Path) -> Option<ElfInfo> {
        let file = File::open(path).ok()?;
        // SAFETY: mapped read-only and private; a file truncated under us
        // can fault, as with every symbolizer (blazesym maps it too).
        let data = unsafe { memmap2::Mmap::map(&file) }.ok()?;
        let obj = object::File::parse(&*data).ok()?;
        let has = |name: &str| {
            obj.section_by_name(name)
                .is_some_and(|s| s.kind() != object::SectionKind::UninitializedData && s.size() > 0)
        };
        let mut by_address: HashMap<u64, Vec<(String, bool)>> = HashMap::new();
        for sym in obj.dynamic_symbols() {
            if sym.kind() != SymbolKind::Text || !sym.is_definition() || sym.address() == 0 {
                continue;
            }
            if let Ok(name) = sym.name() {
                by_address
                    .entry(sym.address())
                    .or_default()
                    .push((name.to_string(), sym.is_weak()));
            }
        }
        let exported = by_address
            .into_iter()
            .filter_map(|(addr, names)| Some((addr, public_name(&names)?)))
            .collect();
        Some(ElfInfo {
            build_id: obj.build_id().ok().flatten().map(<[u8]>::to_vec),
            debuglink: obj
                .gnu_debuglink()
                .ok()
                .flatten()
                .map(|(name, crc)| (String::from_utf8_lossy(name).into_owned(), crc)),
            has_lines: has(".debug_line"),
            has_symtab: obj.symbol_table().is_some() && has(".symtab"),
            loads: obj
                .segments()
                .map(|s| {
                    let (offset, size) = s.file_range();
                    (offset, s.address(), size)
                })
                .collect(),
            exported,
        })
    }

    /// The build id in lowercase hex.
    pub fn build_id_hex(&self) -> Option<String> {
        self.build_id.as_deref().map(hex)
    }

    /// The virtual address of file offset `offset` (in a loadable segment).
    pub fn vaddr(&self, offset: u64) -> Option<u64> {
        self.loads
            .iter()
            .find(|&&(start, _, size)| offset >= start && offset - start < size)
            .map(|&(start, vaddr, _)| vaddr + (offset - start))
    }

    /// The public name of the function starting at `addr`, when the file
    /// exports it under a name other than `name` (an internal alias): C
    /// names only, since a mangled export would replace a demangled name.
    pub fn public_name(&self, addr: u64, name: &str) -> Option<&str> {
        let public = self.exported.get(&addr)?;
        (public != name && !public.starts_with("_Z") && !public.starts_with("_R"))
            .then_some(public.as_str())
    }
}

/// The name users call a function by, among the names a file exports at
/// its address: the fewest leading underscores (`strdup` before
/// `__strdup`), then global before weak, then the shortest, then by name.
fn public_name(names: &[(String, bool)]) -> Option<String> {
    names
        .iter()
        .min_by_key(|(name, weak)| {
            let underscores = name.bytes().take_while(|&b| b == b'_').count();
            (underscores, *weak, name.len(), name.clone())
        })
        .map(|(name, _)| name.clone())
}

/// Bytes in lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_names_prefer_fewer_underscores_then_global() {
        let n = |v: &[(&str, bool)]| {
            public_name(
                &v.iter()
                    .map(|(s, w)| (s.to_string(), *w))
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            n(&[("__strdup", false), ("strdup", true)]).as_deref(),
            Some("strdup")
        );
        assert_eq!(
            n(&[("_IO_file_overflow", false)]).as_deref(),
            Some("_IO_file_overflow")
        );
        assert_eq!(
            n(&[("malloc", true), ("malloc", false)]).as_deref(),
            Some("malloc")
        );
        assert_eq!(n(&[]), None);
    }

    #[test]
    fn reads_own_executable() {
        let info = ElfInfo::read(&std::env::current_exe().unwrap()).unwrap();
        assert!(info.build_id.as_ref().is_some_and(|b| b.len() >= 8));
        assert!(info.has_symtab);
        // The first loadable segment maps file offset 0.
        assert!(info.vaddr(0).is_some());
    }
}
