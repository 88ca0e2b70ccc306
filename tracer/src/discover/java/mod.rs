//! HotSpot JVMs, driven from outside through their attach mechanism
//! (`attach`): which processes are JVMs and whether they may be attached
//! to, a JFR recording of the memory events only (the leak profiler's old
//! object samples with their allocation stacks, allocation samples, heap
//! summaries) started in the JVM, dumped every interval into its temp
//! directory, read (`jfr`) and removed, and stopped at the end.

pub mod attach;
pub mod jfr;

use std::{
    io::Read,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use self::{attach::Attach, jfr::Value};

/// The JFR settings memtrace records with: the leak profiler's samples
/// with their stacks and, at each dump, their paths to GC roots (the JVM
/// walks its heap from the roots, stopped, for at most `cutoff`: see
/// [`WALK_CUTOFF`]); the allocations that refill a thread's allocation
/// buffer or bypass it, without stacks (the leak profiler samples at
/// exactly these: their sizes weigh its samples); and the heap after each
/// collection. Nothing else is recorded.
const SETTINGS: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<configuration version="2.0" label="memtrace" description="memtrace: memory events only" provider="memtrace">
  <event name="jdk.OldObjectSample">
    <setting name="enabled">true</setting>
    <setting name="stackTrace">true</setting>
    <setting name="cutoff">1 s</setting>
  </event>
  <event name="jdk.ObjectAllocationInNewTLAB">
    <setting name="enabled">true</setting>
    <setting name="stackTrace">false</setting>
  </event>
  <event name="jdk.ObjectAllocationOutsideTLAB">
    <setting name="enabled">true</setting>
    <setting name="stackTrace">false</setting>
  </event>
  <event name="jdk.GCHeapSummary">
    <setting name="enabled">true</setting>
  </event>
</configuration>
"#;

/// The longest the JVM walks its heap for paths to GC roots at a dump
/// (the settings' `cutoff`): a walk cut there leaves samples it did not
/// reach without a root, so its reachability is not used.
pub const WALK_CUTOFF: Duration = Duration::from_secs(1);

/// The largest dump read (a dump holds the chunks of the last
/// `maxage`: a few hundred KiB each).
const MAX_DUMP: u64 = 64 << 20;

/// Whether `pid` runs a HotSpot JVM: it maps `libjvm.so` (not OpenJ9's,
/// whose attach mechanism differs).
pub fn is_jvm(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .is_ok_and(|m| m.lines().any(|l| l.ends_with("/libjvm.so")) && !m.contains("/libj9vm"))
}

/// Whether `pid`'s options disable the attach mechanism
/// (`-XX:+DisableAttachMechanism` on its command line or in
/// `JAVA_TOOL_OPTIONS`, `JDK_JAVA_OPTIONS`, `_JAVA_OPTIONS`; the last one
/// given wins). SIGQUIT would then print a thread dump to its standard
/// output: it is never sent.
pub fn attach_disabled(pid: u32) -> bool {
    let (args, env) = crate::discover::target::args_and_environ(pid);
    let from_env = ["JAVA_TOOL_OPTIONS=", "JDK_JAVA_OPTIONS=", "_JAVA_OPTIONS="]
        .iter()
        .filter_map(|k| env.iter().find_map(|v| v.strip_prefix(k)))
        .flat_map(|v| v.split_whitespace().map(str::to_string))
        .collect::<Vec<_>>();
    // The JVM's options end at the main class or -jar.
    let options = args
        .iter()
        .skip(1)
        .take_while(|a| a.starts_with('-') && *a != "-jar")
        .cloned();
    disabled_by(from_env.into_iter().chain(options))
}

fn disabled_by(options: impl Iterator<Item = String>) -> bool {
    options.fold(false, |disabled, o| match o.as_str() {
        "-XX:+DisableAttachMechanism" => true,
        "-XX:-DisableAttachMechanism" => false,
        _ => disabled,
    })
}

/// A JFR recording memtrace runs in one JVM.
pub struct Recording {
    pub attach: Attach,
    pid: u32,
    pub name: String,
    /// The settings and dump files, as the JVM names them and as memtrace
    /// reaches them.
    settings: (String, PathBuf),
    dump: (String, PathBuf),
}

/// The events read from a dump.
const WANTED: [&str; 4] = [
    "jdk.OldObjectSample",
    "jdk.GCHeapSummary",
    "jdk.ObjectAllocationInNewTLAB",
    "jdk.ObjectAllocationOutsideTLAB",
];

/// How long a JFR command may take (a dump with the path to GC roots walks
/// the heap).
pub const COMMAND_WAIT: Duration = Duration::from_secs(30);

impl Recording {
    /// Starts the recording (`maxage`: the data a dump holds).
    pub fn start(pid: u32, attach: Attach, maxage: Duration) -> Result<Recording> {
        let me = std::process::id();
        let dir = attach::temp_dir(pid);
        let named = |file: String| (format!("/tmp/{file}"), dir.join(file));
        let rec = Recording {
            attach,
            pid,
            name: format!("memtrace-{me}"),
            settings: named(format!("memtrace-{me}-{pid}.jfc")),
            dump: named(format!("memtrace-{me}-{pid}.jfr")),
        };
        write_new(&rec.settings.1, SETTINGS.as_bytes())?;
        let started = rec.attach.jcmd(
            &format!(
                "JFR.start name={} settings={} maxage={}s",
                rec.name,
                rec.settings.0,
                maxage.as_secs().max(1)
            ),
            COMMAND_WAIT,
        );
        let _ = std::fs::remove_file(&rec.settings.1);
        let out = started.context("JFR.start")?;
        if !out.contains("Started recording") {
            // A runtime built without the jdk.jfr module answers "Module
            // jdk.jfr not found."
            let said = out.split_whitespace().collect::<Vec<_>>().join(" ");
            match said.contains("jdk.jfr not found") {
                true => bail!("its runtime has no JFR ({said})"),
                false => bail!("JFR.start: {said}"),
            }
        }
        Ok(rec)
    }

    /// Dumps the recording and reads it: its chunks, with the old object
    /// samples (and their paths to GC roots, found by the JVM at this
    /// dump) and heap summaries.
    pub fn dump(&self) -> Result<(Vec<jfr::Chunk>, u64)> {
        let _ = std::fs::remove_file(&self.dump.1);
        let line = format!("JFR.dump name={} filename={}", self.name, self.dump.0);
        self.attach.jcmd(&line, COMMAND_WAIT).context("JFR.dump")?;
        let bytes = read_dump(&self.dump.1, self.pid);
        let _ = std::fs::remove_file(&self.dump.1);
        let bytes = bytes?;
        let chunks = jfr::read(&bytes, &WANTED).context("reading the JFR dump")?;
        Ok((chunks, bytes.len() as u64))
    }

    /// Stops and closes the recording (the JVM deletes its data) and
    /// removes memtrace's files.
    pub fn stop(&self) -> Result<()> {
        let _ = std::fs::remove_file(&self.dump.1);
        let _ = std::fs::remove_file(&self.settings.1);
        self.attach
            .jcmd(&format!("JFR.stop name={}", self.name), COMMAND_WAIT)
            .context("JFR.stop")?;
        Ok(())
    }
}

/// Creates `path` anew (anything there removed first, nothing followed).
fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}

/// Reads a dump the JVM wrote: a regular file of the JVM's user, at most
/// [`MAX_DUMP`] bytes.
fn read_dump(path: &Path, pid: u32) -> Result<Vec<u8>> {
    let (_, uid) = crate::discover::target::namespace_pid_and_uid(pid).context("its status")?;
    let (file, meta) = crate::discover::target::open_checked(path, uid)
        .with_context(|| format!("no dump at {}", path.display()))?;
    if meta.len() > MAX_DUMP {
        bail!(
            "its dump holds {} bytes, more than the {MAX_DUMP} read",
            meta.len()
        );
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_DUMP).read_to_end(&mut bytes)?;
    Ok(bytes)
}

impl OldSample {
    /// Whether memtrace's own attaching made it: allocated by the thread
    /// that runs attach commands, or by JFR's own threads.
    pub fn is_recordings_own(&self) -> bool {
        self.thread
            .as_deref()
            .is_some_and(|t| t == "Attach Listener" || t.starts_with("JFR "))
    }
}

/// One Java frame of an allocation stack.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct JavaFrame {
    /// The class's binary name (`com.example.Cache$Entry`).
    pub class: String,
    pub method: String,
    pub line: Option<u32>,
}

/// A live object the leak profiler sampled.
#[derive(Clone, Debug, PartialEq)]
pub struct OldSample {
    /// Innermost first.
    pub frames: Vec<JavaFrame>,
    /// Its class (`byte[]`, `java.util.HashMap$Node`).
    pub class: Option<String>,
    /// The Java thread that allocated it: name and id.
    pub thread: Option<String>,
    pub thread_id: i64,
    /// When it was allocated: the JVM's ticks (the same in every chunk: a
    /// sample's key), and ns since the epoch.
    pub allocated_ticks: i64,
    pub allocated_nanos: i64,
    /// How long the JVM took to emit the samples (its walk for paths to
    /// GC roots).
    pub emit_ns: u64,
    /// When the JVM last collected, its heap's bytes in use after it.
    pub heap_used: u64,
    /// Its path to a GC root, referrer by referrer (when asked for).
    pub path: Vec<String>,
    pub root: Option<String>,
}

/// The heap in use after a collection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapAfterGc {
    pub nanos: i64,
    pub gc_id: i64,
    pub used: u64,
}

/// A point where the leak profiler may take a sample: an allocation that
/// refilled its thread's allocation buffer (weight: the buffer's size, the
/// allocation it stands for) or bypassed it (weight: its own size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refill {
    pub thread_id: i64,
    /// The JVM's ticks, and the same as nanoseconds since the epoch.
    pub ticks: i64,
    pub nanos: i64,
    pub weight: u64,
    /// Allocated outside the buffer (then `weight` is its own size).
    pub outside: bool,
}

/// What one dump tells: the samples live at its end (the last chunk's:
/// earlier chunks hold earlier dumps' samples), the heap after every
/// collection it covers, the refills, and the JVM's ticks per second.
pub fn samples(chunks: &[jfr::Chunk]) -> (Vec<OldSample>, Vec<HeapAfterGc>, Vec<Refill>, i64) {
    let mut heap = Vec::new();
    let mut refills = Vec::new();
    for c in chunks {
        for (name, v) in &c.events {
            let weight = match name.as_str() {
                "jdk.GCHeapSummary" => {
                    if c.text(v, &["when"]).as_deref() == Some("After GC") {
                        heap.push(HeapAfterGc {
                            nanos: c.nanos(c.int(v, &["startTime"]).unwrap_or(0)),
                            gc_id: c.int(v, &["gcId"]).unwrap_or(-1),
                            used: c.int(v, &["heapUsed"]).unwrap_or(0).max(0) as u64,
                        });
                    }
                    continue;
                }
                "jdk.ObjectAllocationInNewTLAB" => c.int(v, &["tlabSize"]),
                "jdk.ObjectAllocationOutsideTLAB" => c.int(v, &["allocationSize"]),
                _ => continue,
            };
            let ticks = c.int(v, &["startTime"]).unwrap_or(0);
            refills.push(Refill {
                thread_id: c.int(v, &["eventThread", "javaThreadId"]).unwrap_or(-1),
                ticks,
                nanos: c.nanos(ticks),
                weight: weight.unwrap_or(0).max(0) as u64,
                outside: name == "jdk.ObjectAllocationOutsideTLAB",
            });
        }
    }
    let old = chunks
        .last()
        .map(|c| {
            c.events
                .iter()
                .filter(|(name, _)| name == "jdk.OldObjectSample")
                .map(|(_, v)| old_sample(c, v))
                .collect()
        })
        .unwrap_or_default();
    let ticks_per_second = chunks.last().map_or(1, |c| c.ticks_per_second);
    (old, heap, refills, ticks_per_second)
}

fn old_sample(c: &jfr::Chunk, v: &Value) -> OldSample {
    let frames = match c.path(v, &["stackTrace", "frames"]) {
        Value::Array(frames) => frames.iter().map(|f| frame(c, f)).collect(),
        _ => Vec::new(),
    };
    let object = c.field(v, "object");
    let mut path = Vec::new();
    let mut reference = c.field(object, "referrer");
    while path.len() < 64 && !matches!(reference, Value::Null) {
        let holder = c.field(reference, "object");
        let holder_class = c.text(holder, &["type", "name"]).map(|n| class_name(&n));
        let step = match (
            c.text(reference, &["field", "name"]),
            c.int(reference, &["array", "index"]),
        ) {
            (Some(field), _) => {
                let modifiers = c.int(reference, &["field", "modifiers"]).unwrap_or(0);
                // A static field's holder is the class's mirror: named by
                // its description ("Class Name: Leaks").
                match modifiers & 0x8 != 0 {
                    true => format!(
                        "{}.{field} (static)",
                        c.text(holder, &["description"])
                            .and_then(|d| d.strip_prefix("Class Name: ").map(str::to_string))
                            .unwrap_or_else(|| holder_class.clone().unwrap_or_default())
                    ),
                    false => format!("{}.{field}", holder_class.unwrap_or_default()),
                }
            }
            (None, Some(i)) => format!("{}[{i}]", holder_class.unwrap_or_default()),
            (None, None) => holder_class.unwrap_or_default(),
        };
        path.push(step);
        reference = c.field(holder, "referrer");
    }
    let root = match c.field(v, "root") {
        Value::Null => None,
        r => {
            let parts: Vec<String> = ["system", "type", "description"]
                .iter()
                .filter_map(|k| c.text(r, &[k]))
                .filter(|s| !s.is_empty())
                .collect();
            (!parts.is_empty()).then(|| parts.join(": "))
        }
    };
    OldSample {
        frames,
        class: c.text(object, &["type", "name"]).map(|n| class_name(&n)),
        thread: c.text(v, &["eventThread", "javaName"]),
        thread_id: c.int(v, &["eventThread", "javaThreadId"]).unwrap_or(-1),
        allocated_ticks: c.int(v, &["allocationTime"]).unwrap_or(0),
        allocated_nanos: c.nanos(c.int(v, &["allocationTime"]).unwrap_or(0)),
        emit_ns: c.span_nanos(c.int(v, &["duration"]).unwrap_or(0)).max(0) as u64,
        heap_used: c.int(v, &["lastKnownHeapUsage"]).unwrap_or(0).max(0) as u64,
        path,
        root,
    }
}

fn frame(c: &jfr::Chunk, f: &Value) -> JavaFrame {
    JavaFrame {
        class: c
            .text(f, &["method", "type", "name"])
            .map(|n| class_name(&n))
            .unwrap_or_else(|| "?".into()),
        method: c.text(f, &["method", "name"]).unwrap_or_else(|| "?".into()),
        line: c
            .int(f, &["lineNumber"])
            .and_then(|l| u32::try_from(l).ok())
            .filter(|&l| l > 0),
    }
}

/// A class name as Java writes it: `java/util/HashMap$Node` →
/// `java.util.HashMap$Node`, `[B` → `byte[]`, `[Ljava/lang/Object;` →
/// `java.lang.Object[]`.
pub fn class_name(internal: &str) -> String {
    let dims = internal.chars().take_while(|&c| c == '[').count();
    let base = &internal[dims..];
    let base = match (dims, base) {
        (0, b) => b.replace('/', "."),
        (_, "B") => "byte".into(),
        (_, "C") => "char".into(),
        (_, "D") => "double".into(),
        (_, "F") => "float".into(),
        (_, "I") => "int".into(),
        (_, "J") => "long".into(),
        (_, "S") => "short".into(),
        (_, "Z") => "boolean".into(),
        (_, b) => b
            .strip_prefix('L')
            .and_then(|b| b.strip_suffix(';'))
            .unwrap_or(b)
            .replace('/', "."),
    };
    base + &"[]".repeat(dims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_read_as_java_writes_them() {
        assert_eq!(class_name("[B"), "byte[]");
        assert_eq!(class_name("[[Ljava/lang/Object;"), "java.lang.Object[][]");
        assert_eq!(
            class_name("java/util/HashMap$Node"),
            "java.util.HashMap$Node"
        );
        assert_eq!(class_name("Leaks"), "Leaks");
    }

    #[test]
    fn the_last_attach_option_wins() {
        let o = |v: &[&str]| disabled_by(v.iter().map(|s| s.to_string()));
        assert!(o(&["-Xmx1g", "-XX:+DisableAttachMechanism"]));
        assert!(!o(&[
            "-XX:+DisableAttachMechanism",
            "-XX:-DisableAttachMechanism"
        ]));
        assert!(!o(&["-Xrs"]));
    }
}
