//! pprof renderer (`--format pprof`, `-o FILE.pb.gz`): the report's stacks
//! as a gzip-compressed `profile.proto` (github.com/google/pprof,
//! `proto/profile.proto`) shaped like a Go heap profile, for `go tool pprof`
//! and the tools that read its format.
//!
//! This module owns the message definitions (prost derives with the field
//! numbers of profile.proto; no generated code), the mapping from the report
//! model to them, and the gzip framing:
//! - sample types `alloc_objects/count`, `alloc_space/bytes`,
//!   `inuse_objects/count`, `inuse_space/bytes` (the default), from each
//!   stack's allocations, allocated bytes, outstanding allocations and
//!   outstanding bytes (with `--min-age`: only allocations at least that
//!   old count as in use); and `peak_space/bytes`, each stack's outstanding
//!   bytes at its peak (as sampled); the default is the one `--weight`
//!   names (`inuse_space` unless told otherwise);
//! - one sample per report stack, leaf first, labelled with its `pid`,
//!   `verdict` and `kind`; a stack that was not captured gets one location,
//!   `[stack not captured]`, so its bytes still show up;
//! - one mapping per code mapping of a target's that its frames lie in
//!   (`TargetReport::mappings`: the real address range, file offset and GNU
//!   build id, so Parca, Pyroscope or `pprof` with a symbol server can
//!   symbolize again later), the executable's first; for reports without
//!   them, one mapping per module spanning the addresses seen in it;
//! - one location per frame address (and resolution): frames the compiler
//!   inlined are lines of the location of the frame they were inlined into
//!   (innermost first, as profile.proto has it); one function per (name,
//!   file), names from [`frame_name`];
//! - comments naming memtrace and its targets, `--min-age` and any losses.
//!
//! Every location carries its function already (memtrace symbolized it, or
//! named it `module+0xaddress`), so every mapping says `has_functions`: pprof
//! then never re-symbolizes with a mapping range that is not the real one.

use std::collections::HashMap;
use std::io::Write;

use anyhow::Context;
use flate2::{write::GzEncoder, Compression};
use prost::Message;

use crate::model::{
    frame_name, CodeMapping, Frame, Report, StackKind, StackReport, Verdict, Weight,
};

/// The messages of profile.proto this renderer writes (field numbers as
/// there; fields it never sets are left out).
mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Profile {
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        #[prost(message, repeated, tag = "3")]
        pub mapping: Vec<Mapping>,
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        /// `string_table[0]` is always "".
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        #[prost(int64, tag = "7")]
        pub drop_frames: i64,
        #[prost(int64, tag = "8")]
        pub keep_frames: i64,
        #[prost(int64, tag = "9")]
        pub time_nanos: i64,
        #[prost(int64, tag = "10")]
        pub duration_nanos: i64,
        #[prost(message, optional, tag = "11")]
        pub period_type: Option<ValueType>,
        #[prost(int64, tag = "12")]
        pub period: i64,
        /// Indices into the string table.
        #[prost(int64, repeated, tag = "13")]
        pub comment: Vec<i64>,
        /// Index into the string table of the preferred sample type.
        #[prost(int64, tag = "14")]
        pub default_sample_type: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct ValueType {
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Sample {
        /// Leaf first.
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
        #[prost(message, repeated, tag = "3")]
        pub label: Vec<Label>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Label {
        #[prost(int64, tag = "1")]
        pub key: i64,
        #[prost(int64, tag = "2")]
        pub str: i64,
        #[prost(int64, tag = "3")]
        pub num: i64,
        #[prost(int64, tag = "4")]
        pub num_unit: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Mapping {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub memory_start: u64,
        #[prost(uint64, tag = "3")]
        pub memory_limit: u64,
        #[prost(uint64, tag = "4")]
        pub file_offset: u64,
        #[prost(int64, tag = "5")]
        pub filename: i64,
        #[prost(int64, tag = "6")]
        pub build_id: i64,
        #[prost(bool, tag = "7")]
        pub has_functions: bool,
        #[prost(bool, tag = "8")]
        pub has_filenames: bool,
        #[prost(bool, tag = "9")]
        pub has_line_numbers: bool,
        #[prost(bool, tag = "10")]
        pub has_inline_frames: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Location {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        /// 0: no mapping (the frame's module is unknown).
        #[prost(uint64, tag = "2")]
        pub mapping_id: u64,
        #[prost(uint64, tag = "3")]
        pub address: u64,
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
        #[prost(bool, tag = "5")]
        pub is_folded: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Line {
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
        #[prost(int64, tag = "2")]
        pub line: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Function {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(int64, tag = "2")]
        pub name: i64,
        #[prost(int64, tag = "3")]
        pub system_name: i64,
        #[prost(int64, tag = "4")]
        pub filename: i64,
        #[prost(int64, tag = "5")]
        pub start_line: i64,
    }
}

use proto::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};

/// `(type, unit)` of each sample value, in order.
const SAMPLE_TYPES: [(&str, &str); 5] = [
    ("alloc_objects", "count"),
    ("alloc_space", "bytes"),
    ("inuse_objects", "count"),
    ("inuse_space", "bytes"),
    ("peak_space", "bytes"),
];

/// The sample type pprof shows unless told otherwise: the one `--weight`
/// names (`inuse_space` for growth, which has none).
fn default_sample_type(weight: Weight) -> &'static str {
    match weight {
        Weight::Outstanding | Weight::Growth => "inuse_space",
        Weight::Allocated => "alloc_space",
        Weight::Count => "inuse_objects",
        Weight::Peak => "peak_space",
    }
}

/// The function of a stack that was not captured.
const STACK_NOT_CAPTURED: &str = "[stack not captured]";

/// The report as a gzip-compressed profile.proto, shown by `weight` first.
pub fn render(report: &Report, weight: Weight) -> anyhow::Result<Vec<u8>> {
    let profile = build(report, weight);
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&profile.encode_to_vec())
        .context("compressing the pprof profile")?;
    gz.finish().context("compressing the pprof profile")
}

/// The report as a profile.proto message.
fn build(report: &Report, weight: Weight) -> Profile {
    let mut b = Builder::new(report);
    let sample_type = SAMPLE_TYPES
        .iter()
        .map(|(t, u)| ValueType {
            r#type: b.string(t),
            unit: b.string(u),
        })
        .collect();
    let sample = report.stacks.iter().map(|s| b.sample(s)).collect();
    let mut comment = vec![b.string(&targets_comment(report))];
    if let Some(age) = report.min_age_secs {
        comment.push(b.string(&format!(
            "memtrace: inuse counts only allocations at least {age} s old (--min-age)"
        )));
    }
    let losses = report.losses.nonzero();
    if !losses.is_empty() {
        let list: Vec<String> = losses.iter().map(|(k, v)| format!("{k}={v}")).collect();
        comment.push(b.string(&format!(
            "memtrace: incomplete, events lost: {}",
            list.join(", ")
        )));
    }
    let period_type = Some(ValueType {
        r#type: b.string("space"),
        unit: b.string("bytes"),
    });
    let default_sample_type = b.string(default_sample_type(weight));
    Profile {
        sample_type,
        sample,
        mapping: b.mappings,
        location: b.locations,
        function: b.functions,
        string_table: b.strings,
        drop_frames: 0,
        keep_frames: 0,
        time_nanos: 0,
        duration_nanos: (report.duration_secs * 1e9).round() as i64,
        period_type,
        period: 1,
        comment,
        default_sample_type,
    }
}

/// `memtrace: pid 123 (demo_leak), pid 456 (worker, exited)`.
fn targets_comment(report: &Report) -> String {
    let targets: Vec<String> = report
        .targets
        .iter()
        .map(|t| {
            let exited = if t.exited { ", exited" } else { "" };
            format!("pid {} ({}{exited})", t.pid, t.comm)
        })
        .collect();
    if targets.is_empty() {
        "memtrace".to_string()
    } else {
        format!("memtrace: {}", targets.join(", "))
    }
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Leak => "leak",
        Verdict::Growing => "growing",
        Verdict::Plateau => "plateau",
        Verdict::Stable => "stable",
    }
}

fn kind_name(k: StackKind) -> &'static str {
    match k {
        StackKind::Heap => "heap",
        StackKind::Mmap => "mmap",
        StackKind::GoHeap => "go-heap",
        StackKind::JsHeap => "js-heap",
        StackKind::JavaHeap => "java-heap",
    }
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Interns strings, functions and locations; mappings are made up front.
struct Builder {
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    mappings: Vec<Mapping>,
    mapping_ids: HashMap<String, u64>,
    /// (pid, its code mapping, the mapping id).
    code_mappings: Vec<(u32, CodeMapping, u64)>,
    functions: Vec<Function>,
    function_ids: HashMap<(String, Option<String>), u64>,
    locations: Vec<Location>,
    location_ids: HashMap<LocationKey, u64>,
}

/// A location's identity: (address, mapping id, (function id, line) of
/// each line, innermost first).
type LocationKey = (u64, u64, Vec<(u64, i64)>);

impl Builder {
    fn new(report: &Report) -> Builder {
        let mut b = Builder {
            strings: vec![String::new()],
            string_ids: HashMap::from([(String::new(), 0)]),
            mappings: Vec::new(),
            mapping_ids: HashMap::new(),
            code_mappings: Vec::new(),
            functions: Vec::new(),
            function_ids: HashMap::new(),
            locations: Vec::new(),
            location_ids: HashMap::new(),
        };
        // The targets' own code mappings (real ranges, file offsets and
        // build ids), each target's executable first: pprof takes
        // mapping[0] for the main binary.
        for t in &report.targets {
            for m in &t.mappings {
                let id = match b.code_mappings.iter().find(|(_, c, _)| c == m) {
                    Some(&(_, _, id)) => id,
                    None => {
                        let id = b.mappings.len() as u64 + 1;
                        let filename = b.string(&m.path);
                        let build_id = m.build_id.as_deref().map_or(0, |id| b.string(id));
                        b.mappings.push(Mapping {
                            id,
                            memory_start: m.start,
                            memory_limit: m.end,
                            file_offset: m.file_offset,
                            filename,
                            build_id,
                            has_functions: true,
                            ..Mapping::default()
                        });
                        id
                    }
                };
                b.code_mappings.push((t.pid, m.clone(), id));
            }
        }
        // Frames no code mapping covers (reports from before them): one
        // mapping per module, in order of first appearance, a target's
        // executable first, spanning the addresses seen in it.
        let mut modules: Vec<(&str, Vec<&Frame>)> = Vec::new();
        for s in &report.stacks {
            for f in &s.frames {
                let Some(module) = f.module.as_deref() else {
                    continue;
                };
                if b.code_mapping(s.pid, f.address).is_some() {
                    continue;
                }
                match modules.iter_mut().find(|(m, _)| *m == module) {
                    Some((_, frames)) => frames.push(f),
                    None => modules.push((module, vec![f])),
                }
            }
        }
        let is_exe = |m: &str| report.targets.iter().any(|t| t.exe.as_deref() == Some(m));
        if let Some(i) = modules.iter().position(|(m, _)| is_exe(m)) {
            let main = modules.remove(i);
            modules.insert(0, main);
        }
        for (module, frames) in modules {
            let id = b.mappings.len() as u64 + 1;
            let filename = b.string(module);
            b.mappings.push(Mapping {
                id,
                memory_start: frames.iter().map(|f| f.address).min().unwrap_or(0),
                memory_limit: frames
                    .iter()
                    .map(|f| f.address)
                    .max()
                    .unwrap_or(0)
                    .saturating_add(1),
                file_offset: 0,
                filename,
                build_id: 0,
                has_functions: true,
                ..Mapping::default()
            });
            b.mapping_ids.insert(module.to_string(), id);
        }
        // What the frames in each mapping carry.
        for s in &report.stacks {
            for f in &s.frames {
                let id = b.mapping_of(s.pid, f);
                if let Some(m) = id
                    .checked_sub(1)
                    .and_then(|i| b.mappings.get_mut(i as usize))
                {
                    m.has_filenames |= f.file.is_some();
                    m.has_line_numbers |= f.line.is_some();
                    m.has_inline_frames |= f.inlined;
                }
            }
        }
        b
    }

    /// The id of `pid`'s code mapping holding the return address `address`.
    fn code_mapping(&self, pid: u32, address: u64) -> Option<u64> {
        let code = address.saturating_sub(1);
        self.code_mappings
            .iter()
            .find(|(p, m, _)| *p == pid && m.contains(code))
            .map(|&(_, _, id)| id)
    }

    /// The mapping id of a frame of `pid` (0: none).
    fn mapping_of(&self, pid: u32, f: &Frame) -> u64 {
        self.code_mapping(pid, f.address)
            .or_else(|| {
                f.module
                    .as_ref()
                    .and_then(|m| self.mapping_ids.get(m).copied())
            })
            .unwrap_or(0)
    }

    fn string(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.string_ids.get(s) {
            return i;
        }
        let i = self.strings.len() as i64;
        self.strings.push(s.to_string());
        self.string_ids.insert(s.to_string(), i);
        i
    }

    fn function(&mut self, name: String, file: Option<&str>) -> u64 {
        let key = (name, file.map(str::to_string));
        if let Some(&id) = self.function_ids.get(&key) {
            return id;
        }
        let id = self.functions.len() as u64 + 1;
        let function = Function {
            id,
            name: self.string(&key.0),
            system_name: 0,
            filename: file.map_or(0, |f| self.string(f)),
            start_line: 0,
        };
        self.functions.push(function);
        self.function_ids.insert(key, id);
        id
    }

    /// The location of `lines` (innermost first: inlined functions, then
    /// the function they were inlined into) at `address`.
    fn location(&mut self, address: u64, mapping_id: u64, lines: Vec<Line>) -> u64 {
        let key: LocationKey = (
            address,
            mapping_id,
            lines.iter().map(|l| (l.function_id, l.line)).collect(),
        );
        if let Some(&id) = self.location_ids.get(&key) {
            return id;
        }
        let id = self.locations.len() as u64 + 1;
        self.locations.push(Location {
            id,
            mapping_id,
            address,
            line: lines,
            is_folded: false,
        });
        self.location_ids.insert(key, id);
        id
    }

    /// The locations of a stack's frames, leaf first: frames inlined into
    /// the next one share its location, as its first lines.
    fn locations(&mut self, pid: u32, frames: &[Frame]) -> Vec<u64> {
        let mut ids = Vec::new();
        let mut lines = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            let function_id = self.function(frame_name(f), f.file.as_deref());
            lines.push(Line {
                function_id,
                line: f.line.map_or(0, i64::from),
            });
            let next_same = frames.get(i + 1).is_some_and(|n| n.address == f.address);
            if f.inlined && next_same {
                continue;
            }
            let mapping_id = self.mapping_of(pid, f);
            ids.push(self.location(f.address, mapping_id, std::mem::take(&mut lines)));
        }
        ids
    }

    fn sample(&mut self, s: &StackReport) -> Sample {
        let location_id = if s.frames.is_empty() {
            let function_id = self.function(STACK_NOT_CAPTURED.to_string(), None);
            vec![self.location(
                0,
                0,
                vec![Line {
                    function_id,
                    line: 0,
                }],
            )]
        } else {
            self.locations(s.pid, &s.frames)
        };
        let label = vec![
            Label {
                key: self.string("pid"),
                num: i64::from(s.pid),
                ..Label::default()
            },
            Label {
                key: self.string("verdict"),
                str: self.string(verdict_name(s.verdict)),
                ..Label::default()
            },
            Label {
                key: self.string("kind"),
                str: self.string(kind_name(s.kind)),
                ..Label::default()
            },
        ];
        Sample {
            location_id,
            value: vec![
                int(s.allocations),
                int(s.allocated_bytes),
                int(s.outstanding_allocations),
                int(s.outstanding_bytes),
                int(s.peak.map_or(0, |p| p.bytes)),
            ],
            label,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::model::fixtures::{report, stack, target};

    fn frame(address: u64, function: Option<&str>, line: Option<u32>, module: &str) -> Frame {
        Frame {
            address,
            function: function.map(str::to_string),
            file: line.map(|_| "/src/app.c".to_string()),
            line,
            module: Some(module.to_string()),
            inlined: false,
            language: None,
            column: None,
        }
    }

    fn decode(bytes: &[u8]) -> Profile {
        assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzip magic");
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut raw)
            .expect("gunzip");
        Profile::decode(&raw[..]).expect("profile.proto decodes")
    }

    fn s(p: &Profile, i: i64) -> &str {
        &p.string_table[usize::try_from(i).expect("string index")]
    }

    fn function_of(p: &Profile, location_id: u64) -> (&str, &str, i64) {
        let l = &p.location[location_id as usize - 1];
        assert_eq!(l.id, location_id);
        assert_eq!(l.line.len(), 1, "one line per location");
        let f = &p.function[l.line[0].function_id as usize - 1];
        assert_eq!(f.id, l.line[0].function_id);
        (s(p, f.name), s(p, f.filename), l.line[0].line)
    }

    /// Two stacks of one process: a leak through a resolved app frame into
    /// main, and a plateau whose leaf is unresolved in libfoo; both end in
    /// the same `main` frame.
    fn sample_report() -> Report {
        let mut leak = stack("leaky", Verdict::Leak, &[0, 4096, 8192]);
        leak.allocations = 5;
        leak.allocated_bytes = 20480;
        leak.outstanding_allocations = 2;
        leak.frames = vec![
            frame(0x5000_1234, Some("leaky"), Some(12), "/usr/bin/app"),
            frame(0x5000_2000, Some("main"), Some(40), "/usr/bin/app"),
        ];
        let mut cache = stack("cached", Verdict::Plateau, &[0, 100, 100]);
        cache.kind = StackKind::Mmap;
        cache.allocations = 9;
        cache.allocated_bytes = 900;
        cache.outstanding_allocations = 1;
        cache.peak = Some(crate::model::Peak {
            bytes: 300,
            allocations: 3,
            t: 1.0,
            bound_bytes: 300,
        });
        cache.frames = vec![
            frame(0x7f00_0010, None, None, "/lib/libfoo.so"),
            frame(0x5000_2000, Some("main"), Some(40), "/usr/bin/app"),
        ];
        let mut r = report(vec![cache, leak]);
        let mut app = target(7, "app");
        app.exe = Some("/usr/bin/app".to_string());
        r.targets = vec![app];
        r
    }

    #[test]
    fn heap_profile_sample_types_values_and_labels() {
        let p = decode(&render(&sample_report(), Weight::Outstanding).unwrap());
        assert_eq!(p.string_table[0], "");
        let types: Vec<(&str, &str)> = p
            .sample_type
            .iter()
            .map(|t| (s(&p, t.r#type), s(&p, t.unit)))
            .collect();
        assert_eq!(
            types,
            [
                ("alloc_objects", "count"),
                ("alloc_space", "bytes"),
                ("inuse_objects", "count"),
                ("inuse_space", "bytes"),
                ("peak_space", "bytes")
            ]
        );
        assert_eq!(s(&p, p.default_sample_type), "inuse_space");
        for (weight, default) in [
            (Weight::Growth, "inuse_space"),
            (Weight::Allocated, "alloc_space"),
            (Weight::Count, "inuse_objects"),
            (Weight::Peak, "peak_space"),
        ] {
            let p = decode(&render(&sample_report(), weight).unwrap());
            assert_eq!(s(&p, p.default_sample_type), default, "{weight:?}");
        }
        let period = p.period_type.as_ref().unwrap();
        assert_eq!(
            (s(&p, period.r#type), s(&p, period.unit)),
            ("space", "bytes")
        );
        assert_eq!(p.duration_nanos, 12_000_000_000);
        let comments: Vec<&str> = p.comment.iter().map(|&c| s(&p, c)).collect();
        assert_eq!(comments, ["memtrace: pid 7 (app)"]);

        // Report order kept: the plateau first, then the leak.
        let values: Vec<&[i64]> = p.sample.iter().map(|x| &x.value[..]).collect();
        assert_eq!(
            values,
            [&[9, 900, 1, 100, 300][..], &[5, 20480, 2, 8192, 0][..]]
        );
        let labels = |x: &Sample| -> Vec<(String, String, i64)> {
            x.label
                .iter()
                .map(|l| (s(&p, l.key).into(), s(&p, l.str).into(), l.num))
                .collect()
        };
        assert_eq!(
            labels(&p.sample[0]),
            [
                ("pid".into(), "".into(), 7),
                ("verdict".into(), "plateau".into(), 0),
                ("kind".into(), "mmap".into(), 0)
            ]
        );
        assert_eq!(
            labels(&p.sample[1]),
            [
                ("pid".into(), "".into(), 7),
                ("verdict".into(), "leak".into(), 0),
                ("kind".into(), "heap".into(), 0)
            ]
        );
    }

    #[test]
    fn locations_functions_and_mappings() {
        let p = decode(&render(&sample_report(), Weight::Outstanding).unwrap());
        // Leaf first; the shared main frame is one location.
        let stacks: Vec<Vec<(&str, &str, i64)>> = p
            .sample
            .iter()
            .map(|x| x.location_id.iter().map(|&l| function_of(&p, l)).collect())
            .collect();
        assert_eq!(
            stacks,
            [
                vec![("libfoo.so+0x7f000010", "", 0), ("main", "/src/app.c", 40)],
                vec![("leaky", "/src/app.c", 12), ("main", "/src/app.c", 40)],
            ]
        );
        assert_eq!(p.sample[0].location_id[1], p.sample[1].location_id[1]);
        assert_eq!(p.location.len(), 3);
        assert_eq!(p.function.len(), 3);
        for (i, f) in p.function.iter().enumerate() {
            assert_eq!(f.id, i as u64 + 1);
        }

        // The executable's mapping first, spanning the addresses seen in it.
        let maps: Vec<(u64, &str, u64, u64, bool, bool, bool)> = p
            .mapping
            .iter()
            .map(|m| {
                (
                    m.id,
                    s(&p, m.filename),
                    m.memory_start,
                    m.memory_limit,
                    m.has_functions,
                    m.has_filenames,
                    m.has_line_numbers,
                )
            })
            .collect();
        assert_eq!(
            maps,
            [
                (
                    1,
                    "/usr/bin/app",
                    0x5000_1234,
                    0x5000_2001,
                    true,
                    true,
                    true
                ),
                (
                    2,
                    "/lib/libfoo.so",
                    0x7f00_0010,
                    0x7f00_0011,
                    true,
                    false,
                    false
                ),
            ]
        );
        let locations: Vec<(u64, u64)> = p
            .location
            .iter()
            .map(|l| (l.address, l.mapping_id))
            .collect();
        assert_eq!(
            locations,
            [(0x7f00_0010, 2), (0x5000_2000, 1), (0x5000_1234, 1)]
        );
        for l in &p.location {
            let m = &p.mapping[l.mapping_id as usize - 1];
            assert!((m.memory_start..m.memory_limit).contains(&l.address));
        }
    }

    /// An inlined call is a line of its caller's location (innermost
    /// first), and a target's code mappings become the profile's mappings
    /// with their real range, file offset and build id.
    #[test]
    fn inlined_lines_and_code_mappings_with_build_ids() {
        let mut r = sample_report();
        let leak = r
            .stacks
            .iter_mut()
            .find(|s| s.verdict == Verdict::Leak)
            .unwrap();
        let mut inlined = frame(0x5000_1234, Some("extend_table"), Some(7), "/usr/bin/app");
        inlined.inlined = true;
        leak.frames.insert(0, inlined);
        r.targets[0].mappings = vec![
            CodeMapping {
                start: 0x5000_0000,
                end: 0x5001_0000,
                file_offset: 0x1000,
                path: "/usr/bin/app".into(),
                build_id: Some("93ac61ec5a8eb1396f9fbd350e3169a558528a40".into()),
            },
            CodeMapping {
                start: 0x7f00_0000,
                end: 0x7f10_0000,
                file_offset: 0x2000,
                path: "/lib/libfoo.so".into(),
                build_id: None,
            },
        ];
        let p = decode(&render(&r, Weight::Outstanding).unwrap());
        let name = |id: u64| {
            let f = p.function.iter().find(|f| f.id == id).unwrap();
            s(&p, f.name).to_string()
        };
        let leak = p.sample.iter().find(|x| x.value[3] == 8192).unwrap();
        assert_eq!(leak.location_id.len(), 2, "{p:?}");
        let loc = p
            .location
            .iter()
            .find(|l| l.id == leak.location_id[0])
            .unwrap();
        assert_eq!(loc.address, 0x5000_1234);
        let lines: Vec<(String, i64)> = loc
            .line
            .iter()
            .map(|l| (name(l.function_id), l.line))
            .collect();
        assert_eq!(
            lines,
            [("extend_table".to_string(), 7), ("leaky".to_string(), 12)]
        );
        assert_eq!(p.mapping.len(), 2, "{:?}", p.mapping);
        let app = &p.mapping[0];
        assert_eq!(
            (app.memory_start, app.memory_limit, app.file_offset),
            (0x5000_0000, 0x5001_0000, 0x1000)
        );
        assert_eq!(s(&p, app.filename), "/usr/bin/app");
        assert_eq!(
            s(&p, app.build_id),
            "93ac61ec5a8eb1396f9fbd350e3169a558528a40"
        );
        assert!(app.has_inline_frames && app.has_line_numbers);
        assert_eq!(loc.mapping_id, app.id);
        let foo = &p.mapping[1];
        assert_eq!((s(&p, foo.filename), foo.build_id), ("/lib/libfoo.so", 0));
        assert_eq!((foo.memory_start, foo.file_offset), (0x7f00_0000, 0x2000));
        assert!(!foo.has_inline_frames);
    }

    #[test]
    fn frames_without_module_and_lost_stacks() {
        // The fixture's frames have no module: locations without mapping.
        let mut lost = stack("", Verdict::Stable, &[64]);
        lost.pid = 9;
        let mut r = report(vec![stack("leaky", Verdict::Leak, &[1024]), lost]);
        r.min_age_secs = Some(30.0);
        r.losses.stack_lost = 4;
        let p = decode(&render(&r, Weight::Outstanding).unwrap());
        assert!(p.mapping.is_empty());
        let names: Vec<Vec<(&str, &str, i64)>> = p
            .sample
            .iter()
            .map(|x| x.location_id.iter().map(|&l| function_of(&p, l)).collect())
            .collect();
        assert_eq!(
            names,
            [
                vec![("leaky", "", 0), ("main", "", 0)],
                vec![("[stack not captured]", "", 0)],
            ]
        );
        assert!(p.location.iter().all(|l| l.mapping_id == 0));
        assert_eq!(p.sample[1].value, [3, 0, 3, 64, 0]);
        assert_eq!(p.sample[1].label[0].num, 9);
        let comments: Vec<&str> = p.comment.iter().map(|&c| s(&p, c)).collect();
        assert_eq!(
            comments,
            [
                "memtrace",
                "memtrace: inuse counts only allocations at least 30 s old (--min-age)",
                "memtrace: incomplete, events lost: stack_lost=4",
            ]
        );
    }

    #[test]
    fn string_table_is_deduplicated() {
        let p = decode(&render(&sample_report(), Weight::Outstanding).unwrap());
        let mut seen = std::collections::HashSet::new();
        for x in &p.string_table {
            assert!(seen.insert(x), "{x:?} twice in the string table");
        }
    }

    /// The wire bytes pin every field number to profile.proto's (a field
    /// N varint is key N << 3, length-delimited N << 3 | 2): a decode with
    /// these same structs could not catch a wrong number.
    #[test]
    fn field_numbers_match_profile_proto() {
        let mapping = Mapping {
            id: 1,
            memory_start: 2,
            memory_limit: 3,
            file_offset: 4,
            filename: 5,
            build_id: 6,
            has_functions: true,
            has_filenames: true,
            has_line_numbers: true,
            has_inline_frames: true,
        };
        assert_eq!(
            mapping.encode_to_vec(),
            [8, 1, 16, 2, 24, 3, 32, 4, 40, 5, 48, 6, 56, 1, 64, 1, 72, 1, 80, 1]
        );
        let location = Location {
            id: 1,
            mapping_id: 2,
            address: 3,
            line: vec![Line {
                function_id: 4,
                line: 5,
            }],
            is_folded: true,
        };
        assert_eq!(
            location.encode_to_vec(),
            [8, 1, 16, 2, 24, 3, 34, 4, 8, 4, 16, 5, 40, 1]
        );
        let function = Function {
            id: 1,
            name: 2,
            system_name: 3,
            filename: 4,
            start_line: 5,
        };
        assert_eq!(function.encode_to_vec(), [8, 1, 16, 2, 24, 3, 32, 4, 40, 5]);
        let label = Label {
            key: 1,
            str: 2,
            num: 3,
            num_unit: 4,
        };
        assert_eq!(label.encode_to_vec(), [8, 1, 16, 2, 24, 3, 32, 4]);
        let sample = Sample {
            location_id: vec![7],
            value: vec![9],
            label: vec![Label {
                key: 1,
                ..Label::default()
            }],
        };
        // Repeated scalars packed (proto3): key, length, values.
        assert_eq!(sample.encode_to_vec(), [10, 1, 7, 18, 1, 9, 26, 2, 8, 1]);
        let value_type = ValueType { r#type: 1, unit: 2 };
        assert_eq!(value_type.encode_to_vec(), [8, 1, 16, 2]);
        let profile = Profile {
            sample_type: vec![ValueType::default()],
            sample: vec![Sample::default()],
            mapping: vec![Mapping::default()],
            location: vec![Location::default()],
            function: vec![Function::default()],
            string_table: vec![String::new()],
            drop_frames: 7,
            keep_frames: 8,
            time_nanos: 9,
            duration_nanos: 10,
            period_type: Some(ValueType::default()),
            period: 12,
            comment: vec![13],
            default_sample_type: 14,
        };
        assert_eq!(
            profile.encode_to_vec(),
            [
                10, 0, 18, 0, 26, 0, 34, 0, 42, 0, 50, 0, 56, 7, 64, 8, 72, 9, 80, 10, 90, 0, 96,
                12, 106, 1, 13, 112, 14
            ]
        );
    }
}
