//! `cargo xtask lint`: `cargo fmt --check` and `cargo clippy -D warnings`
//! over the whole workspace, plus a rustfmt check of the eBPF crate and of
//! the fuzz targets (both excluded from the workspace, so `cargo fmt
//! --all` does not see them), clippy on the eBPF crate (built for the BPF
//! target as tracer/build.rs builds it), and a check of how each crate's
//! modules import each other ([`check_imports`]).
//!
//! `cargo xtask lint --imports [DIR]` runs only the import check, on this
//! workspace or on the crates under DIR (to try it on another tree).

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::{cmd, prereqs};

/// Run the format checks, clippy and the import check. Clippy compiles
/// tracer/build.rs, which builds the eBPF object, so the eBPF
/// prerequisites are checked first unless the caller already did
/// (`check_prereqs: false`).
pub(crate) fn run(check_prereqs: bool) -> Result<()> {
    if check_prereqs {
        cmd::step("prerequisites");
        prereqs::ensure_all()?;
    }
    // Lints run on the active toolchain.
    prereqs::ensure_component(None, "rustfmt")?;
    prereqs::ensure_component(None, "clippy")?;

    cmd::step("rustfmt");
    cmd::run(cmd::cargo().args(["fmt", "--all", "--", "--check"]))?;
    // rustfmt follows `mod` declarations from the crate root. Edition as in
    // tracer-ebpf/Cargo.toml.
    cmd::run(
        Command::new("rustfmt")
            .args(["--check", "--edition", "2021", "tracer-ebpf/src/main.rs"])
            .args(fuzz_targets()?)
            .current_dir(cmd::workspace_root()),
    )?;

    cmd::step("clippy");
    cmd::run(cmd::cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;

    cmd::step("clippy (tracer-ebpf, bpfel-unknown-none)");
    cmd::run(&mut clippy_ebpf())?;

    cmd::step("import structure");
    imports(&cmd::workspace_root())
}

/// `cargo clippy` on tracer-ebpf, invoked the way aya-build 0.2 invokes
/// `cargo build` for it from tracer/build.rs: in the crate's own directory
/// (its own workspace), `--bins --release --target bpfel-unknown-none -Z
/// build-std=core` with RUSTC_BOOTSTRAP=1 on this (stable) toolchain, the
/// same encoded rustflags, RUSTC and RUSTC_WORKSPACE_WRAPPER unset, and a
/// target dir of its own (target/ebpf-clippy) so that it neither waits for
/// nor invalidates the outer build.
fn clippy_ebpf() -> Command {
    let mut clippy = cmd::cargo();
    clippy
        .current_dir(cmd::workspace_root().join("tracer-ebpf"))
        .args(["clippy", "--package", "tracer-ebpf", "--bins", "--release"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(cmd::target_dir().join("ebpf-clippy"))
        .args(["--", "-D", "warnings"])
        .env("RUSTC_BOOTSTRAP", "1")
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            [
                &format!("--cfg=bpf_target_arch=\"{}\"", std::env::consts::ARCH),
                "-Cdebuginfo=2",
                "-Clink-arg=--btf",
            ]
            .join("\x1f"),
        )
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    clippy
}

/// The fuzz targets' sources (each is a crate root), relative to the
/// workspace root.
fn fuzz_targets() -> Result<Vec<std::path::PathBuf>> {
    let dir = cmd::workspace_root().join("fuzz/fuzz_targets");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

// ---------------------------------------------------------------------------
// Import structure
// ---------------------------------------------------------------------------

/// Layers of the userspace tracer (tracer/src), top to bottom: a module may
/// import modules of its own layer or of any layer below, never above.
/// Every top-level module of tracer/src must be in it.
pub(crate) const TRACER_LAYERS: &[&[&str]] = &[
    &["cli"],
    &["agent", "offline", "trace"],
    &["output", "bpf", "symbolize", "accounting"],
    &["discover"],
    &["config"],
];

/// Layers of the eBPF programs (tracer-ebpf/src): the programs, what they
/// account with, and what every program uses.
pub(crate) const EBPF_LAYERS: &[&[&str]] = &[
    &["alloc", "mapping", "process"],
    &["live", "pools", "python", "sample", "stack", "targets"],
    &["events", "stats", "task_storage"],
];

/// Modules of memtrace-report (report/src) that import no other module of
/// the crate: the report model everything else reads.
pub(crate) const REPORT_LEAVES: &[&str] = &["model"];

/// How one crate's modules may import each other. Cycles between its
/// top-level modules are never allowed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ImportRules {
    /// The crate's source directory, relative to the workspace root.
    pub src: &'static str,
    /// Its layers, top to bottom, if it has a declared stack (then every
    /// top-level module must be in one).
    pub layers: Option<&'static [&'static [&'static str]]>,
    /// Modules that must import no other module of the crate.
    pub leaves: &'static [&'static str],
}

/// The crates checked; a crate whose directory is missing is skipped.
pub(crate) const IMPORT_RULES: &[ImportRules] = &[
    ImportRules {
        src: "tracer/src",
        layers: Some(TRACER_LAYERS),
        leaves: &[],
    },
    ImportRules {
        src: "tracer-ebpf/src",
        layers: Some(EBPF_LAYERS),
        leaves: &[],
    },
    ImportRules {
        src: "report/src",
        layers: None,
        leaves: REPORT_LEAVES,
    },
];

/// Runs [`check_imports`] on every crate of [`IMPORT_RULES`] under `root`;
/// prints one line per problem and fails if there is any.
/// `cargo xtask lint --imports [DIR]`: only the import check.
pub(crate) fn run_imports(root: Option<&Path>) -> Result<()> {
    cmd::step("import structure");
    imports(root.unwrap_or(&cmd::workspace_root()))
}

fn imports(root: &Path) -> Result<()> {
    let mut problems = Vec::new();
    for rules in IMPORT_RULES {
        let src = root.join(rules.src);
        if !src.is_dir() {
            eprintln!("    {}: not there, skipped", rules.src);
            continue;
        }
        let mut files = Vec::new();
        read_sources(&src, &src, &mut files)?;
        let found = check_imports(rules, &files);
        eprintln!(
            "    {}: {} files, {}",
            rules.src,
            files.len(),
            match found.len() {
                0 => "ok".to_string(),
                1 => "1 problem".to_string(),
                n => format!("{n} problems"),
            }
        );
        problems.extend(found);
    }
    for p in &problems {
        eprintln!("{p}");
    }
    if !problems.is_empty() {
        bail!(
            "import structure: {} (listed above; the layer tables are in xtask/src/lint.rs)",
            match problems.len() {
                1 => "1 problem".to_string(),
                n => format!("{n} problems"),
            }
        );
    }
    Ok(())
}

/// Every .rs file under `dir`, as (path relative to `src`, text), sorted.
fn read_sources(src: &Path, dir: &Path, out: &mut Vec<(String, String)>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            read_sources(src, &path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let rel = path.strip_prefix(src).expect("under src");
            out.push((rel.to_string_lossy().replace('\\', "/"), text));
        }
    }
    Ok(())
}

/// One `crate::module` reference: where it is and what it reaches.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Edge {
    from: String,
    to: String,
    /// The file, relative to the crate's src/, and its 1-based line.
    file: String,
    line: usize,
}

/// Checks how the top-level modules of one crate import each other, from
/// its source files as (path relative to src/, text) pairs; returns one
/// line per problem, naming the file and the edge, or nothing when the
/// structure is sound.
///
/// A top-level module is the first component of a path under src/
/// (`foo.rs` or `foo/`); `main.rs` and `lib.rs` are the crate root and
/// `bin/` holds other crates, so neither is checked. An edge is every
/// `crate::foo` path in code (comments and strings left out), whether in a
/// `use` (including `use crate::{a::b, c::{d, e}}` groups over several
/// lines) or inline; a name that is not a top-level module (an item of the
/// crate root, such as `crate::note`) is no edge. Problems:
/// - an edge between modules of a cycle (a module that reaches itself
///   through others), with one such cycle;
/// - with `layers`: a module in no layer, and an edge to a layer above;
/// - an edge out of one of the `leaves`.
pub(crate) fn check_imports(rules: &ImportRules, files: &[(String, String)]) -> Vec<String> {
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|(path, _)| top_module(path))
        .collect();
    // Every edge, once per file (at its first line there).
    let mut edges: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for (path, text) in files {
        let Some(from) = top_module(path) else {
            continue;
        };
        for (line, to) in crate_references(text) {
            if to != from && modules.contains(&to) {
                edges
                    .entry((from.clone(), to, path.clone()))
                    .or_insert(line);
            }
        }
    }
    let edges: Vec<Edge> = edges
        .into_iter()
        .map(|((from, to, file), line)| Edge {
            from,
            to,
            file,
            line,
        })
        .collect();
    let at = |e: &Edge| format!("{}/{}:{}", rules.src, e.file, e.line);
    let mut problems = Vec::new();

    if let Some(layers) = rules.layers {
        let layer_of = |m: &str| layers.iter().position(|layer| layer.contains(&m));
        for m in &modules {
            if layer_of(m).is_none() {
                let file = files
                    .iter()
                    .map(|(p, _)| p)
                    .find(|p| top_module(p).as_deref() == Some(m.as_str()))
                    .expect("a module comes from a file");
                problems.push(format!(
                    "{}/{}: module `{m}` is in no layer: add it to the layer table of {} in \
                     xtask/src/lint.rs",
                    rules.src,
                    module_path(file),
                    rules.src
                ));
            }
        }
        for e in &edges {
            if let (Some(from), Some(to)) = (layer_of(&e.from), layer_of(&e.to)) {
                if to < from {
                    problems.push(format!(
                        "{}: {} -> {} points up the layers ({} is in layer {from}, {} in \
                         layer {to})",
                        at(e),
                        e.from,
                        e.to,
                        e.from,
                        e.to
                    ));
                }
            }
        }
    }

    for e in &edges {
        if rules.leaves.contains(&e.from.as_str()) {
            problems.push(format!(
                "{}: {} -> {}, but {} must import no other module of the crate",
                at(e),
                e.from,
                e.to,
                e.from
            ));
        }
    }

    let graph: BTreeMap<&str, BTreeSet<&str>> = edges.iter().fold(BTreeMap::new(), |mut g, e| {
        g.entry(e.from.as_str()).or_default().insert(e.to.as_str());
        g
    });
    for e in &edges {
        // The edge is in a cycle when its target leads back to its source.
        if let Some(back) = path_between(&graph, &e.to, &e.from) {
            let cycle: Vec<&str> = std::iter::once(e.from.as_str()).chain(back).collect();
            problems.push(format!(
                "{}: {} -> {} is in an import cycle: {}",
                at(e),
                e.from,
                e.to,
                cycle.join(" -> ")
            ));
        }
    }
    problems
}

/// The shortest import path from `from` to `to` (both included), if any.
fn path_between<'a>(
    graph: &BTreeMap<&'a str, BTreeSet<&'a str>>,
    from: &'a str,
    to: &'a str,
) -> Option<Vec<&'a str>> {
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([from]);
    while let Some(m) = queue.pop_front() {
        if m == to {
            let mut path = vec![to];
            while let Some(&prev) = came_from.get(path.last().expect("not empty")) {
                path.push(prev);
            }
            path.reverse();
            return Some(path);
        }
        for &next in graph.get(m).into_iter().flatten() {
            if next != from && !came_from.contains_key(next) {
                came_from.insert(next, m);
                queue.push_back(next);
            }
        }
    }
    None
}

/// The top-level module a file under src/ belongs to; None for the crate
/// root (`main.rs`, `lib.rs`) and for other crates (`bin/`).
fn top_module(path: &str) -> Option<String> {
    let (first, rest) = match path.split_once('/') {
        Some((dir, rest)) => (dir, Some(rest)),
        None => (path, None),
    };
    match rest {
        Some(_) if first == "bin" => None,
        Some(_) => Some(first.to_string()),
        None => {
            let name = first.strip_suffix(".rs")?;
            (name != "main" && name != "lib").then(|| name.to_string())
        }
    }
}

/// How a module is named in messages: its file, or its directory.
fn module_path(file: &str) -> String {
    match file.split_once('/') {
        Some((dir, _)) => format!("{dir}/"),
        None => file.to_string(),
    }
}

/// Every `crate::name` in the code of `text` (comments and literals left
/// out), as (line, name): for a group, `crate::{a::b, c::{d, e}}`, each of
/// its first names (a, c). `$crate::` (macros) and `crate::*` are not
/// references to a module.
fn crate_references(text: &str) -> Vec<(usize, String)> {
    let code: Vec<char> = code_only(text).chars().collect();
    let line_at = |i: usize| 1 + code[..i].iter().filter(|&&c| c == '\n').count();
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut found = Vec::new();
    let mut i = 0;
    while i + 5 <= code.len() {
        let starts_word = i == 0 || !(is_ident(code[i - 1]) || code[i - 1] == '$');
        if !(starts_word && code[i..i + 5].iter().copied().eq("crate".chars())) {
            i += 1;
            continue;
        }
        let mut j = skip_space(&code, i + 5);
        if code.get(j) != Some(&':') || code.get(j + 1) != Some(&':') {
            i += 5;
            continue;
        }
        j = skip_space(&code, j + 2);
        let mut names = Vec::new();
        let end = match code.get(j) {
            Some('{') => group_heads(&code, j, &mut names),
            _ => {
                let (name, end) = ident(&code, j);
                names.extend(name);
                end
            }
        };
        found.extend(names.into_iter().map(|(at, name)| (line_at(at), name)));
        i = end.max(i + 5);
    }
    found
}

/// The first name of each item of the `{...}` group opening at `open`,
/// with its position (items that are groups themselves give theirs);
/// returns the position after the group.
fn group_heads(code: &[char], open: usize, names: &mut Vec<(usize, String)>) -> usize {
    let mut i = skip_space(code, open + 1);
    let mut item_start = true;
    let mut depth = 0usize;
    while i < code.len() {
        match code[i] {
            '}' if depth == 0 => return i + 1,
            '{' if item_start => {
                i = group_heads(code, i, names);
                item_start = false;
                continue;
            }
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => item_start = true,
            c if c.is_whitespace() => {}
            _ if item_start => {
                let (name, end) = ident(code, i);
                names.extend(name);
                item_start = false;
                i = end.max(i + 1);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    i
}

/// The identifier at `i` (a raw `r#name` without its prefix; `self`,
/// `super` and `*` are not module names), and the position after it.
fn ident(code: &[char], i: usize) -> (Option<(usize, String)>, usize) {
    let start = if code.get(i) == Some(&'r') && code.get(i + 1) == Some(&'#') {
        i + 2
    } else {
        i
    };
    let mut end = start;
    while end < code.len() && (code[end].is_alphanumeric() || code[end] == '_') {
        end += 1;
    }
    let name: String = code[start..end].iter().collect();
    let keep = !name.is_empty() && name != "self" && name != "super";
    (keep.then_some((i, name)), end)
}

fn skip_space(code: &[char], mut i: usize) -> usize {
    while i < code.len() && code[i].is_whitespace() {
        i += 1;
    }
    i
}

/// `text` with comments and string, byte-string and char literals blanked
/// out (newlines kept, so lines still count).
fn code_only(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, s: &[char]| {
        out.extend(s.iter().map(|&ch| if ch == '\n' { '\n' } else { ' ' }));
    };
    let mut i = 0;
    while i < c.len() {
        let prev_ident = i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_');
        let end = if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            // Line comment (doc comments too).
            c[i..]
                .iter()
                .position(|&ch| ch == '\n')
                .map_or(c.len(), |n| i + n)
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            // Block comment; they nest.
            let (mut j, mut depth) = (i + 2, 1);
            while j < c.len() && depth > 0 {
                if c[j] == '/' && c.get(j + 1) == Some(&'*') {
                    depth += 1;
                    j += 2;
                } else if c[j] == '*' && c.get(j + 1) == Some(&'/') {
                    depth -= 1;
                    j += 2;
                } else {
                    j += 1;
                }
            }
            j
        } else if let Some(end) = raw_string_end(&c, i).filter(|_| !prev_ident) {
            end
        } else if c[i] == '"' || (c[i] == 'b' && c.get(i + 1) == Some(&'"') && !prev_ident) {
            let mut j = if c[i] == 'b' { i + 2 } else { i + 1 };
            while j < c.len() && c[j] != '"' {
                j += if c[j] == '\\' { 2 } else { 1 };
            }
            j + 1
        } else if c[i] == '\'' {
            // A char literal ('x', '\n', '\u{..}'), or else a lifetime or
            // label, which is code.
            if c.get(i + 1) == Some(&'\\') {
                let mut j = i + 2;
                while j < c.len() && c[j] != '\'' {
                    j += 1;
                }
                j + 1
            } else if c.get(i + 2) == Some(&'\'') {
                i + 3
            } else {
                i
            }
        } else {
            i
        };
        if end > i {
            blank(&mut out, &c[i..end.min(c.len())]);
            i = end;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// The end of a raw (byte) string literal starting at `i` (`r"…"`,
/// `r#"…"#`, `br"…"`), if one does.
fn raw_string_end(c: &[char], i: usize) -> Option<usize> {
    let mut j = i;
    if c.get(j) == Some(&'b') {
        j += 1;
    }
    if c.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let hashes = c[j..].iter().take_while(|&&ch| ch == '#').count();
    j += hashes;
    if c.get(j) != Some(&'"') {
        return None;
    }
    j += 1;
    while j < c.len() {
        if c[j] == '"'
            && c[j + 1..]
                .iter()
                .take(hashes)
                .filter(|&&ch| ch == '#')
                .count()
                == hashes
        {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    Some(c.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAYERED: ImportRules = ImportRules {
        src: "tracer/src",
        layers: Some(TRACER_LAYERS),
        leaves: &[],
    };

    const CYCLES_ONLY: ImportRules = ImportRules {
        src: "report/src",
        layers: None,
        leaves: REPORT_LEAVES,
    };

    fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect()
    }

    /// A tree laid out as TRACER_LAYERS says, each module importing below.
    fn clean_tree() -> Vec<(String, String)> {
        files(&[
            ("main.rs", "use memtrace::cli;\nfn main() { cli::run() }\n"),
            (
                "lib.rs",
                "pub mod cli;\npub mod agent;\npub fn note(_: &str) {}\n",
            ),
            (
                "cli.rs",
                "use crate::{agent, offline::render, trace};\npub fn run() {}\n",
            ),
            (
                "agent/mod.rs",
                "mod http;\nuse crate::output::json;\nuse crate::trace::Session;\n",
            ),
            (
                "agent/http.rs",
                "use crate::config::Config;\nfn f() { crate::note(\"x\") }\n",
            ),
            ("offline.rs", "use crate::output;\nuse crate::symbolize;\n"),
            (
                "trace/mod.rs",
                "use crate::{\n    bpf::Loader,\n    accounting::{Totals, Series},\n};\n",
            ),
            ("output/mod.rs", "use crate::symbolize::Frame;\n"),
            ("output/json.rs", "use crate::accounting::Totals;\n"),
            ("bpf.rs", "use crate::discover::Target;\n"),
            ("symbolize.rs", "use crate::config;\n"),
            ("accounting.rs", "use crate::discover;\n"),
            ("discover.rs", "use crate::config::Config;\n"),
            ("config.rs", "pub struct Config;\n"),
        ])
    }

    fn with(mut tree: Vec<(String, String)>, path: &str, text: &str) -> Vec<(String, String)> {
        match tree.iter_mut().find(|(p, _)| p == path) {
            Some(file) => file.1.push_str(text),
            None => tree.push((path.to_string(), text.to_string())),
        }
        tree
    }

    #[test]
    fn a_clean_tree_passes() {
        assert_eq!(check_imports(&LAYERED, &clean_tree()), Vec::<String>::new());
    }

    #[test]
    fn an_upward_edge_is_found() {
        let tree = with(clean_tree(), "config.rs", "use crate::cli::Args;\n");
        let problems = check_imports(&LAYERED, &tree);
        assert!(
            problems.contains(
                &"tracer/src/config.rs:2: config -> cli points up the layers (config is in \
                  layer 4, cli in layer 0)"
                    .to_string()
            ),
            "{problems:#?}"
        );
    }

    #[test]
    fn a_cycle_is_found_with_every_edge_and_file() {
        // discover -> bpf -> discover: bpf is above discover, so the edge
        // up is reported too; the cycle is reported on both edges.
        let tree = with(
            clean_tree(),
            "discover.rs",
            "fn f() { crate::bpf::load() }\n",
        );
        let problems = check_imports(&LAYERED, &tree);
        assert_eq!(
            problems,
            vec![
                "tracer/src/discover.rs:2: discover -> bpf points up the layers (discover is in \
                 layer 3, bpf in layer 2)",
                "tracer/src/bpf.rs:1: bpf -> discover is in an import cycle: bpf -> discover \
                 -> bpf",
                "tracer/src/discover.rs:2: discover -> bpf is in an import cycle: discover -> \
                 bpf -> discover",
            ]
        );
    }

    #[test]
    fn a_cycle_through_three_modules_is_found_without_layers() {
        let tree = files(&[
            ("lib.rs", "mod model; mod render; mod diff;\n"),
            ("model.rs", "pub struct Report;\n"),
            (
                "render/mod.rs",
                "use crate::model::Report;\nuse crate::diff;\n",
            ),
            ("render/text.rs", "use crate::model;\n"),
            ("diff.rs", "use crate::{model, oom};\n"),
            ("oom.rs", "use crate::render::text;\n"),
        ]);
        assert_eq!(
            check_imports(&CYCLES_ONLY, &tree),
            vec![
                "report/src/diff.rs:1: diff -> oom is in an import cycle: diff -> oom -> render \
                 -> diff",
                "report/src/oom.rs:1: oom -> render is in an import cycle: oom -> render -> diff \
                 -> oom",
                "report/src/render/mod.rs:2: render -> diff is in an import cycle: render -> \
                 diff -> oom -> render",
            ]
        );
    }

    #[test]
    fn a_leaf_that_imports_is_found() {
        let tree = files(&[
            ("model.rs", "use crate::units::Bytes;\n"),
            ("units.rs", "pub struct Bytes;\n"),
        ]);
        assert_eq!(
            check_imports(&CYCLES_ONLY, &tree),
            vec![
                "report/src/model.rs:1: model -> units, but model must import no other module \
                 of the crate"
            ]
        );
    }

    #[test]
    fn a_module_missing_from_the_layers_is_an_error() {
        let tree = with(clean_tree(), "oom/mod.rs", "use crate::config;\n");
        assert_eq!(
            check_imports(&LAYERED, &tree),
            vec![
                "tracer/src/oom/: module `oom` is in no layer: add it to the layer table of \
                 tracer/src in xtask/src/lint.rs"
            ]
        );
    }

    #[test]
    fn multi_line_groups_are_parsed() {
        let text = "use crate::{\n    a::b,\n    c::{d, e},\n    self,\n    r#f::g,\n};\n\
                    pub(crate) use crate::{{h, i}, j};\nfn f() { crate::k::l(); crate :: m(); }\n";
        let refs = crate_references(text);
        assert_eq!(
            refs,
            [
                (2, "a"),
                (3, "c"),
                (5, "f"),
                (7, "h"),
                (7, "i"),
                (7, "j"),
                (8, "k"),
                (8, "m")
            ]
            .map(|(l, n)| (l, n.to_string()))
        );
    }

    #[test]
    fn comments_strings_and_macros_are_not_references() {
        let text = "//! See [`crate::a`].\n/* crate::b /* nested crate::c */ crate::d */\n\
                    let s = \"crate::e\"; let r = r#\"crate::f\"#; let c = '\"';\n\
                    macro_rules! m { () => { $crate::g() } }\nfn f<'a>(x: &'a u8) { crate::h() }\n";
        assert_eq!(crate_references(text), vec![(5, "h".to_string())]);
    }

    #[test]
    fn root_items_are_not_modules() {
        // `crate::note` is a function of lib.rs: no edge, so no cycle with
        // the crate root and nothing upward.
        let tree = with(
            clean_tree(),
            "config.rs",
            "fn f() { crate::note(\"x\"); }\n",
        );
        assert_eq!(check_imports(&LAYERED, &tree), Vec::<String>::new());
    }

    #[test]
    fn test_modules_inside_files_count() {
        let tree = with(
            clean_tree(),
            "config.rs",
            "#[cfg(test)]\nmod tests {\n    use super::*;\n    use crate::output::json;\n}\n",
        );
        let problems = check_imports(&LAYERED, &tree);
        assert!(
            problems.contains(
                &"tracer/src/config.rs:5: config -> output points up the layers (config is in \
                  layer 4, output in layer 2)"
                    .to_string()
            ),
            "{problems:#?}"
        );
    }

    #[test]
    fn top_modules() {
        assert_eq!(top_module("cli.rs").as_deref(), Some("cli"));
        assert_eq!(top_module("agent/http.rs").as_deref(), Some("agent"));
        assert_eq!(top_module("agent/mod.rs").as_deref(), Some("agent"));
        assert_eq!(top_module("main.rs"), None);
        assert_eq!(top_module("lib.rs"), None);
        assert_eq!(top_module("bin/tool.rs"), None);
    }

    #[test]
    fn the_ebpf_crate_follows_its_layers() {
        let src = cmd::workspace_root().join("tracer-ebpf/src");
        let mut files = Vec::new();
        read_sources(&src, &src, &mut files).unwrap();
        let rules = IMPORT_RULES[1];
        assert_eq!(rules.src, "tracer-ebpf/src");
        assert_eq!(check_imports(&rules, &files), Vec::<String>::new());
    }
}
