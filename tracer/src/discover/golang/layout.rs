//! Where the fields memtrace reads lie in the Go runtime's structures: a
//! profile bucket (its header, stack and `memRecord`) and a goroutine (`g`).
//! Read from the binary's DWARF (the `runtime` compilation unit's struct
//! types) when it has DWARF; else from a table per Go minor version, each
//! row checked against that version's DWARF (tests/integration/golang.rs
//! builds a program with every toolchain it has and compares). A binary
//! without DWARF of a version the table lacks is refused, never guessed.

use std::{borrow::Cow, collections::HashMap};

use anyhow::{bail, Context, Result};
use object::{Object, ObjectSection};

/// Byte offsets and sizes of what is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Layout {
    /// `runtime.bucket`: its size (the stack of PCs follows it, then the
    /// `memRecord`), and its fields.
    pub bucket_size: u64,
    pub bucket_allnext: u64,
    /// Its objects' size (what a cycle's counts are multiplied by where the
    /// cycle keeps no byte counts: Go 1.27).
    pub bucket_object_size: u64,
    pub bucket_typ: u64,
    pub bucket_nstk: u64,
    /// `runtime.memRecord`: its size, its published cycle (`active`) and
    /// the cycles still being counted (`future`, `futures` of them).
    pub record_size: u64,
    pub record_active: u64,
    pub record_future: u64,
    pub futures: u64,
    /// `runtime.memRecordCycle`: its size and its counters (the byte
    /// counts None where bytes are counts times the bucket's object size).
    pub cycle_size: u64,
    pub cycle_allocs: u64,
    pub cycle_frees: u64,
    pub cycle_alloc_bytes: Option<u64>,
    pub cycle_free_bytes: Option<u64>,
    /// `runtime.g`: its size, and where its stack bounds, id, status
    /// (4 bytes), wait reason (1 byte), creating `go` statement's PC and
    /// start function's PC are.
    pub g_size: u64,
    pub g_stack_lo: u64,
    pub g_stack_hi: u64,
    pub g_goid: u64,
    pub g_status: u64,
    pub g_waitreason: u64,
    pub g_gopc: u64,
    pub g_startpc: u64,
}

/// Where a layout came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Dwarf,
    /// The table's row for this Go minor version.
    Table(u32),
}

impl Source {
    pub fn describe(self) -> String {
        match self {
            Source::Dwarf => "its DWARF".into(),
            Source::Table(minor) => format!("memtrace's table for Go 1.{minor} (no DWARF)"),
        }
    }
}

/// The minor versions the table has a row for (and the oldest read).
pub const OLDEST_MINOR: u32 = 19;
pub const NEWEST_MINOR: u32 = 27;

/// The struct types read, by DWARF name.
const STRUCTS: [&str; 5] = [
    "runtime.bucket",
    "runtime.memRecord",
    "runtime.memRecordCycle",
    "runtime.g",
    "runtime.stack",
];

/// A struct type's size and its members' offsets.
#[derive(Default, Debug)]
struct Struct {
    size: Option<u64>,
    members: HashMap<String, u64>,
}

impl Layout {
    /// The layout of a Go binary: from its DWARF if it has some, else the
    /// table's row for `minor`.
    pub fn of(obj: &object::File, minor: u32) -> Result<(Layout, Source)> {
        if obj.section_by_name(".debug_info").is_some() {
            return Ok((Layout::from_dwarf(obj)?, Source::Dwarf));
        }
        match table_row(minor) {
            Some(layout) => Ok((layout, Source::Table(minor))),
            None => bail!(
                "built by Go 1.{minor} without DWARF, a version memtrace has no checked layout \
                 for (1.{OLDEST_MINOR} to 1.{NEWEST_MINOR} have one)"
            ),
        }
    }

    /// Reads the layout from the `runtime` unit's struct types.
    pub fn from_dwarf(obj: &object::File) -> Result<Layout> {
        let structs = runtime_structs(obj).context("reading the Go runtime's DWARF")?;
        let get = |ty: &str, member: Option<&str>| -> Result<u64> {
            let s = structs
                .get(ty)
                .with_context(|| format!("no {ty} in the binary's DWARF"))?;
            match member {
                None => s.size.with_context(|| format!("{ty} has no size in DWARF")),
                Some(m) => s
                    .members
                    .get(m)
                    .copied()
                    .with_context(|| format!("{ty} has no field {m} in DWARF")),
            }
        };
        let bucket = |m| get("runtime.bucket", Some(m));
        let record = |m| get("runtime.memRecord", Some(m));
        let cycle = |m| get("runtime.memRecordCycle", Some(m));
        let bytes = |m: &str| {
            structs
                .get("runtime.memRecordCycle")?
                .members
                .get(m)
                .copied()
        };
        let g = |m| get("runtime.g", Some(m));
        let stack = g("stack")?;
        let record_size = get("runtime.memRecord", None)?;
        let record_future = record("future")?;
        let cycle_size = get("runtime.memRecordCycle", None)?;
        if cycle_size == 0 || record_future >= record_size {
            bail!("runtime.memRecord reads as {record_size} bytes with its future cycles at {record_future}");
        }
        let layout = Layout {
            bucket_size: get("runtime.bucket", None)?,
            bucket_allnext: bucket("allnext")?,
            bucket_object_size: bucket("size")?,
            bucket_typ: bucket("typ")?,
            bucket_nstk: bucket("nstk")?,
            record_size,
            record_active: record("active")?,
            record_future,
            futures: (record_size - record_future) / cycle_size,
            cycle_size,
            cycle_allocs: cycle("allocs")?,
            cycle_frees: cycle("frees")?,
            cycle_alloc_bytes: bytes("alloc_bytes"),
            cycle_free_bytes: bytes("free_bytes"),
            g_size: get("runtime.g", None)?,
            g_stack_lo: stack + get("runtime.stack", Some("lo"))?,
            g_stack_hi: stack + get("runtime.stack", Some("hi"))?,
            g_goid: g("goid")?,
            g_status: g("atomicstatus")?,
            g_waitreason: g("waitreason")?,
            g_gopc: g("gopc")?,
            g_startpc: g("startpc")?,
        };
        layout.check()?;
        Ok(layout)
    }

    /// What every Go version's layout satisfies: the fields lie inside
    /// their structs, the counters are words.
    fn check(&self) -> Result<()> {
        let inside = |what: &str, at: u64, len: u64, size: u64| -> Result<()> {
            if at + len > size {
                bail!("{what} at {at} lies outside its {size}-byte struct");
            }
            Ok(())
        };
        for (what, at) in [
            ("bucket.allnext", self.bucket_allnext),
            ("bucket.size", self.bucket_object_size),
            ("bucket.typ", self.bucket_typ),
            ("bucket.nstk", self.bucket_nstk),
        ] {
            inside(what, at, 8, self.bucket_size)?;
        }
        inside(
            "memRecord.active",
            self.record_active,
            self.cycle_size,
            self.record_size,
        )?;
        if self.cycle_alloc_bytes.is_some() != self.cycle_free_bytes.is_some() {
            bail!("memRecordCycle counts allocated bytes or freed bytes, not both");
        }
        for (what, at) in [
            ("memRecordCycle.allocs", Some(self.cycle_allocs)),
            ("memRecordCycle.frees", Some(self.cycle_frees)),
            ("memRecordCycle.alloc_bytes", self.cycle_alloc_bytes),
            ("memRecordCycle.free_bytes", self.cycle_free_bytes),
        ] {
            if let Some(at) = at {
                inside(what, at, 8, self.cycle_size)?;
            }
        }
        for (what, at, len) in [
            ("g.stack.lo", self.g_stack_lo, 8),
            ("g.stack.hi", self.g_stack_hi, 8),
            ("g.goid", self.g_goid, 8),
            ("g.atomicstatus", self.g_status, 4),
            ("g.waitreason", self.g_waitreason, 1),
            ("g.gopc", self.g_gopc, 8),
            ("g.startpc", self.g_startpc, 8),
        ] {
            inside(what, at, len, self.g_size)?;
        }
        if self.futures == 0 {
            bail!("memRecord has no future cycles");
        }
        Ok(())
    }
}

/// The struct types of [`STRUCTS`] in the `runtime` compilation unit.
fn runtime_structs(obj: &object::File) -> Result<HashMap<String, Struct>> {
    let load = |id: gimli::SectionId| -> Result<Cow<'_, [u8]>, gimli::Error> {
        Ok(obj
            .section_by_name(id.name())
            .and_then(|s| s.uncompressed_data().ok())
            .unwrap_or(Cow::Borrowed(&[])))
    };
    let sections = gimli::DwarfSections::load(load)?;
    let dwarf = sections.borrow(|s| gimli::EndianSlice::new(s, gimli::LittleEndian));
    let mut found: HashMap<String, Struct> = HashMap::new();
    let mut units = dwarf.units();
    while let Some(header) = units.next()? {
        let unit = dwarf.unit(header)?;
        let name = |e: &gimli::DebuggingInformationEntry<_>| -> Option<String> {
            let v = e.attr_value(gimli::DW_AT_name)?;
            let s = dwarf.attr_string(&unit, v).ok()?;
            Some(String::from_utf8_lossy(s.slice()).into_owned())
        };
        let mut cursor = unit.entries();
        let Some(root) = cursor.next_dfs()? else {
            continue;
        };
        // Go writes units per package, named by its import path (several
        // for the runtime; its types are in one of them).
        if name(root).as_deref() != Some("runtime") {
            continue;
        }
        // The struct being read and its depth.
        let mut current: Option<(String, isize)> = None;
        while let Some(entry) = cursor.next_dfs()? {
            let depth = entry.depth();
            if current.as_ref().is_some_and(|(_, d)| depth <= *d) {
                current = None;
            }
            match (entry.tag(), &current) {
                (gimli::DW_TAG_structure_type, None) => {
                    let Some(n) = name(entry).filter(|n| STRUCTS.contains(&n.as_str())) else {
                        continue;
                    };
                    let s = found.entry(n.clone()).or_default();
                    s.size = entry
                        .attr_value(gimli::DW_AT_byte_size)
                        .and_then(|v| v.udata_value());
                    current = Some((n, depth));
                }
                (gimli::DW_TAG_member, Some((ty, d))) if depth == d + 1 => {
                    let (Some(member), Some(at)) = (
                        name(entry),
                        entry
                            .attr_value(gimli::DW_AT_data_member_location)
                            .and_then(|v| v.udata_value()),
                    ) else {
                        continue;
                    };
                    let ty = ty.clone();
                    found.entry(ty).or_default().members.insert(member, at);
                }
                _ => {}
            }
        }
        if STRUCTS
            .iter()
            .all(|s| found.get(*s).is_some_and(|s| !s.members.is_empty()))
        {
            break;
        }
    }
    Ok(found)
}

/// The layout of Go 1.`minor` on amd64, for binaries without DWARF: each
/// row as that version's DWARF has it (`memtrace go-layout` shows a row
/// next to a binary's DWARF; tests/integration/golang.rs compares them for
/// every toolchain it can build with).
pub fn table_row(minor: u32) -> Option<Layout> {
    // runtime.g: its size, atomicstatus, goid, waitreason, gopc, startpc
    // (its stack's bounds are its first two words in every version).
    let (g_size, g_status, g_goid, g_waitreason, g_gopc, g_startpc) = match minor {
        19 | 20 => (392, 144, 152, 176, 296, 312),
        21 => (408, 144, 152, 176, 280, 296),
        22 => (424, 144, 152, 176, 280, 296),
        23 => (432, 152, 160, 184, 288, 304),
        24 => (440, 152, 160, 184, 288, 304),
        25 => (440, 144, 152, 176, 280, 296),
        26 | 27 => (456, 144, 152, 176, 288, 304),
        _ => return None,
    };
    // memRecordCycle: allocs, frees and (before 1.27) their bytes.
    let (cycle_size, cycle_alloc_bytes, cycle_free_bytes) = match minor {
        ..=26 => (32, Some(16), Some(24)),
        _ => (16, None, None),
    };
    Some(Layout {
        bucket_size: 48,
        bucket_allnext: 8,
        bucket_object_size: 32,
        bucket_typ: 16,
        bucket_nstk: 40,
        record_size: 4 * cycle_size,
        record_active: 0,
        record_future: cycle_size,
        futures: 3,
        cycle_size,
        cycle_allocs: 0,
        cycle_frees: 8,
        cycle_alloc_bytes,
        cycle_free_bytes,
        g_size,
        g_stack_lo: 0,
        g_stack_hi: 8,
        g_goid,
        g_status,
        g_waitreason,
        g_gopc,
        g_startpc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_rows_hold_together() {
        for minor in OLDEST_MINOR..=NEWEST_MINOR {
            let row = table_row(minor).unwrap();
            row.check().unwrap();
            assert_eq!(row.futures, 3);
        }
        assert!(table_row(OLDEST_MINOR - 1).is_none());
        assert!(table_row(NEWEST_MINOR + 1).is_none());
    }
}
