//! A mapped ELF file seen from the process that maps it: the virtual
//! addresses of named symbols in the file, and the load bias that turns
//! them into the process's addresses (runtimes read from outside find
//! their variables this way: CPython's `_PyRuntime`, Go's profile
//! buckets).

use std::collections::HashMap;

use object::{Object, ObjectSegment, ObjectSymbol};

use crate::discover::target::Mapping;

/// The virtual addresses of `wanted` symbols: exported ones first, then
/// the full symbol table.
pub fn symbols(obj: &object::File, wanted: &[&str]) -> HashMap<String, u64> {
    let mut found = HashMap::new();
    for sym in obj.dynamic_symbols().chain(obj.symbols()) {
        if !sym.is_definition() || sym.address() == 0 {
            continue;
        }
        if let Ok(name) = sym.name() {
            if wanted.contains(&name) && !found.contains_key(name) {
                found.insert(name.to_string(), sym.address());
            }
        }
    }
    found
}

/// What to add to the file's virtual addresses to get the process's: from
/// the first mapping of the file and the loadable segment it maps.
pub fn load_bias(obj: &object::File, maps: &[Mapping], holder: &Mapping) -> Option<u64> {
    let first = maps
        .iter()
        .filter(|m| m.dev == holder.dev && m.inode == holder.inode)
        .min_by_key(|m| m.offset)?;
    let seg = obj.segments().find(|s| {
        let (off, size) = s.file_range();
        off & !0xfff <= first.offset && first.offset < off + size.max(1)
    })?;
    let (seg_off, _) = seg.file_range();
    // File offset `first.offset` is at `first.start`; the segment maps
    // file offset seg_off at vaddr seg.address().
    Some(
        first
            .start
            .wrapping_sub(seg.address())
            .wrapping_add(seg_off)
            .wrapping_sub(first.offset),
    )
}
