//! A reader of JFR recordings for just what memtrace takes from them: the
//! chunks' metadata (the event and constant types, described in the file
//! itself), their constant pools, and the values of the events asked for,
//! as a small tree whose constant references resolve on access. Written
//! here rather than taken from a crate because the file is the traced
//! JVM's: every count and length is checked against the bytes left, the
//! values made are capped and nesting is bounded, so a damaged or hostile
//! file costs memtrace an error, never its memory or a crash.
//!
//! The format (JDK 11+, JFR 2.x): chunks, each a 68-byte big-endian header
//! (magic `FLR\0`, version, size, offsets of its last constant pool and of
//! its metadata, start time and ticks, ticks per second, features: bit 0
//! "integers are LEB128") and events: size, type id, fields in the order
//! the metadata gives. Type 0 is the metadata (a string table and an
//! element tree of classes and fields), type 1 a constant pool.

use std::collections::HashMap;

use anyhow::{bail, ensure, Context, Result};

const MAGIC: &[u8; 4] = b"FLR\0";
const HEADER: usize = 68;
const METADATA: i64 = 0;
const CONSTANT_POOL: i64 = 1;
/// Values made per file at most (each takes tens of bytes).
const MAX_VALUES: usize = 4 << 20;
/// Nesting of values inside values (a constant's fields) at most.
const MAX_DEPTH: u32 = 32;
/// References followed in a row at most (a pool's constant naming itself).
const MAX_HOPS: u32 = 8;

/// A decoded value. Constants are `Ref`s until looked up.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Object(i64, Vec<Value>),
    Array(Vec<Value>),
    Ref(i64, i64),
}

#[derive(Debug, Default)]
struct Field {
    name: String,
    class: i64,
    pooled: bool,
    array: bool,
}

#[derive(Debug, Default)]
struct Class {
    name: String,
    fields: Vec<Field>,
}

/// One chunk: its types, constants and the events asked for.
pub struct Chunk {
    classes: HashMap<i64, Class>,
    pool: HashMap<(i64, i64), Value>,
    /// Events of the types asked for: (type name, value).
    pub events: Vec<(String, Value)>,
    pub start_nanos: i64,
    pub start_ticks: i64,
    pub ticks_per_second: i64,
}

/// Reads every chunk of a recording, keeping the events whose type is in
/// `wanted`.
pub fn read(bytes: &[u8], wanted: &[&str]) -> Result<Vec<Chunk>> {
    let mut chunks = Vec::new();
    let mut at = 0;
    let mut budget = MAX_VALUES;
    while at < bytes.len() {
        let rest = &bytes[at..];
        ensure!(
            rest.len() >= HEADER && &rest[..4] == MAGIC,
            "no chunk at byte {at}"
        );
        let size = be_i64(&rest[8..16]);
        ensure!(
            size >= HEADER as i64 && size as u64 <= rest.len() as u64,
            "chunk at byte {at} claims {size} bytes, {} are left",
            rest.len()
        );
        let chunk = read_chunk(&rest[..size as usize], wanted, &mut budget)
            .with_context(|| format!("chunk at byte {at}"))?;
        chunks.push(chunk);
        at += size as usize;
    }
    Ok(chunks)
}

fn be_i64(b: &[u8]) -> i64 {
    i64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
}

fn read_chunk(bytes: &[u8], wanted: &[&str], budget: &mut usize) -> Result<Chunk> {
    let major = u16::from_be_bytes([bytes[4], bytes[5]]);
    ensure!(major == 2, "JFR version {major}.x (2.x is read)");
    let metadata_at = be_i64(&bytes[24..32]);
    let compressed = i32::from_be_bytes(bytes[64..68].try_into().expect("4 bytes")) & 1 == 1;
    let mut chunk = Chunk {
        classes: HashMap::new(),
        pool: HashMap::new(),
        events: Vec::new(),
        start_nanos: be_i64(&bytes[32..40]),
        start_ticks: be_i64(&bytes[48..56]),
        ticks_per_second: be_i64(&bytes[56..64]),
    };
    ensure!(chunk.ticks_per_second > 0, "no tick rate");
    ensure!(
        metadata_at >= HEADER as i64 && (metadata_at as u64) < bytes.len() as u64,
        "its metadata offset {metadata_at} is outside it"
    );
    let mut r = Reader {
        bytes,
        at: metadata_at as usize,
        compressed,
        budget,
    };
    read_metadata(&mut r, &mut chunk.classes)?;
    // Events of interest are decoded once every pool is read (a pool
    // usually follows the events that use it).
    let ids: HashMap<i64, String> = chunk
        .classes
        .iter()
        .filter(|(_, c)| wanted.contains(&c.name.as_str()))
        .map(|(&id, c)| (id, c.name.clone()))
        .collect();
    let mut later = Vec::new();
    r.at = HEADER;
    while r.at < bytes.len() {
        let start = r.at;
        let size = r.int()?;
        ensure!(
            size > 0 && size as u64 <= (bytes.len() - start) as u64,
            "event at byte {start} claims {size} bytes"
        );
        let end = start + size as usize;
        let kind = r.long()?;
        match kind {
            CONSTANT_POOL => read_pool(&mut r, &chunk.classes, &mut chunk.pool)?,
            _ if ids.contains_key(&kind) => later.push((r.at, end, kind)),
            _ => {}
        }
        r.at = end;
    }
    for (at, end, kind) in later {
        r.at = at;
        let value = r.object(&chunk.classes, kind, 0)?;
        ensure!(r.at <= end, "an event read past its end");
        chunk.events.push((ids[&kind].clone(), value));
    }
    Ok(chunk)
}

fn read_metadata(r: &mut Reader, classes: &mut HashMap<i64, Class>) -> Result<()> {
    let _size = r.int()?;
    ensure!(r.long()? == METADATA, "no metadata event at its offset");
    let (_start, _duration, _id) = (r.long()?, r.long()?, r.long()?);
    let count = r.count()?;
    let mut strings = Vec::with_capacity(count);
    for _ in 0..count {
        strings.push(r.string_value()?.unwrap_or_default());
    }
    let string = |i: i64| -> Result<&str> {
        strings
            .get(usize::try_from(i).unwrap_or(usize::MAX))
            .map(String::as_str)
            .context("a metadata string index out of range")
    };
    // The element tree, walked with an explicit stack: (depth, in class).
    // Elements: root > metadata > class > field (and annotations,
    // settings, regions, which are skipped).
    let mut pending: Vec<(u32, Option<i64>)> = vec![(0, None)];
    while let Some((depth, class)) = pending.pop() {
        ensure!(depth <= MAX_DEPTH, "metadata nested too deep");
        let name = string(r.int()?)?.to_string();
        let mut attributes = HashMap::new();
        for _ in 0..r.count()? {
            let (k, v) = (string(r.int()?)?, string(r.int()?)?);
            attributes.insert(k, v);
        }
        let attr = |k: &str| attributes.get(k).copied();
        let mut this_class = None;
        match name.as_str() {
            "class" => {
                let id: i64 = attr("id")
                    .and_then(|v| v.parse().ok())
                    .context("a class id")?;
                classes.insert(
                    id,
                    Class {
                        name: attr("name").unwrap_or("").to_string(),
                        fields: Vec::new(),
                    },
                );
                this_class = Some(id);
            }
            "field" => {
                if let Some(c) = class.and_then(|c| classes.get_mut(&c)) {
                    c.fields.push(Field {
                        name: attr("name").unwrap_or("").to_string(),
                        class: attr("class")
                            .and_then(|v| v.parse().ok())
                            .context("a field type")?,
                        pooled: attr("constantPool") == Some("true"),
                        array: attr("dimension").is_some_and(|d| d != "0"),
                    });
                }
            }
            _ => {}
        }
        let children = r.count()?;
        // The tree is written depth first: each entry popped reads the
        // next element where the reader is, so a stack of "elements still
        // to read" (with their class) is all the walk needs.
        for _ in 0..children {
            pending.push((depth + 1, this_class.or(class)));
        }
    }
    Ok(())
}

fn read_pool(
    r: &mut Reader,
    classes: &HashMap<i64, Class>,
    pool: &mut HashMap<(i64, i64), Value>,
) -> Result<()> {
    let (_start, _duration, _delta) = (r.long()?, r.long()?, r.long()?);
    let _kind = r.byte()?;
    for _ in 0..r.count()? {
        let class = r.long()?;
        for _ in 0..r.count()? {
            let key = r.long()?;
            let value = r.value(classes, class, false, 0)?;
            pool.insert((class, key), value);
        }
    }
    Ok(())
}

struct Reader<'a, 'b> {
    bytes: &'a [u8],
    at: usize,
    compressed: bool,
    budget: &'b mut usize,
}

impl Reader<'_, '_> {
    fn byte(&mut self) -> Result<u8> {
        let b = *self.bytes.get(self.at).context("the chunk ends early")?;
        self.at += 1;
        Ok(b)
    }

    fn raw(&mut self, n: usize) -> Result<u64> {
        let mut v = 0u64;
        for _ in 0..n {
            v = v << 8 | u64::from(self.byte()?);
        }
        Ok(v)
    }

    /// A LEB128 long (at most 9 bytes, the ninth whole) when compressed,
    /// else `n` big-endian bytes.
    fn varint(&mut self, n: usize) -> Result<i64> {
        if !self.compressed {
            let v = self.raw(n)?;
            // Sign-extended from its width.
            let shift = 64 - 8 * n as u32;
            return Ok(((v << shift) as i64) >> shift);
        }
        let mut v = 0u64;
        for i in 0..8 {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v as i64);
            }
        }
        Ok((v | u64::from(self.byte()?) << 56) as i64)
    }

    fn long(&mut self) -> Result<i64> {
        self.varint(8)
    }

    fn int(&mut self) -> Result<i64> {
        Ok(self.varint(4)? as i32 as i64)
    }

    /// A count of things still to read: each takes a byte at least, so
    /// more than the bytes left is an error, not an allocation.
    fn count(&mut self) -> Result<usize> {
        let n = self.int()?;
        let left = self.bytes.len() - self.at;
        ensure!(
            n >= 0 && n as u64 <= left as u64,
            "a count of {n} with {left} bytes left"
        );
        Ok(n as usize)
    }

    fn spend(&mut self) -> Result<()> {
        ensure!(*self.budget > 0, "more than {MAX_VALUES} values");
        *self.budget -= 1;
        Ok(())
    }

    /// A string: null, empty, a constant (pool of `java.lang.String`'s
    /// id, which the caller gives), UTF-8, chars or Latin-1.
    fn string(&mut self, string_class: i64) -> Result<Value> {
        Ok(match self.byte()? {
            0 => Value::Null,
            1 => Value::Str(String::new()),
            2 => Value::Ref(string_class, self.long()?),
            e @ (3 | 5) => {
                let latin1 = e == 5;
                let n = self.count()?;
                let b = &self.bytes[self.at..self.at + n];
                self.at += n;
                Value::Str(match latin1 {
                    true => b.iter().map(|&c| c as char).collect(),
                    false => String::from_utf8_lossy(b).into_owned(),
                })
            }
            4 => {
                let n = self.count()?;
                let mut s = String::new();
                for _ in 0..n {
                    let c = self.varint(2)? as u32;
                    s.push(char::from_u32(c).unwrap_or('\u{fffd}'));
                }
                Value::Str(s)
            }
            e => bail!("a string of unknown encoding {e}"),
        })
    }

    /// A metadata string (no pool there).
    fn string_value(&mut self) -> Result<Option<String>> {
        match self.string(-1)? {
            Value::Str(s) => Ok(Some(s)),
            Value::Null => Ok(None),
            _ => bail!("a pooled string in the metadata"),
        }
    }

    fn value(
        &mut self,
        classes: &HashMap<i64, Class>,
        class: i64,
        pooled: bool,
        depth: u32,
    ) -> Result<Value> {
        self.spend()?;
        if pooled {
            return Ok(Value::Ref(class, self.long()?));
        }
        let c = classes
            .get(&class)
            .context("a value of an undeclared type")?;
        Ok(match c.name.as_str() {
            "long" => Value::Int(self.long()?),
            "int" => Value::Int(self.int()?),
            "short" => Value::Int(self.varint(2)? as i16 as i64),
            "char" => Value::Int(self.varint(2)? as u16 as i64),
            "byte" => Value::Int(self.byte()? as i8 as i64),
            "boolean" => Value::Bool(self.byte()? != 0),
            "float" => Value::Float(f32::from_bits(self.raw(4)? as u32) as f64),
            "double" => Value::Float(f64::from_bits(self.raw(8)?)),
            "java.lang.String" => self.string(class)?,
            _ => self.object(classes, class, depth + 1)?,
        })
    }

    fn object(&mut self, classes: &HashMap<i64, Class>, class: i64, depth: u32) -> Result<Value> {
        ensure!(depth <= MAX_DEPTH, "values nested too deep");
        let c = classes
            .get(&class)
            .context("an object of an undeclared type")?;
        let mut fields = Vec::with_capacity(c.fields.len());
        for f in &c.fields {
            let v = match f.array {
                true => {
                    let n = self.count()?;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.value(classes, f.class, f.pooled, depth)?);
                    }
                    Value::Array(items)
                }
                false => self.value(classes, f.class, f.pooled, depth)?,
            };
            fields.push(v);
        }
        Ok(Value::Object(class, fields))
    }
}

impl Chunk {
    /// `v` with its constant references followed.
    pub fn resolve<'a>(&'a self, mut v: &'a Value) -> &'a Value {
        for _ in 0..MAX_HOPS {
            match v {
                Value::Ref(class, key) => match self.pool.get(&(*class, *key)) {
                    Some(next) => v = next,
                    None => return &Value::Null,
                },
                _ => return v,
            }
        }
        &Value::Null
    }

    /// Field `name` of object `v` (resolved), resolved.
    pub fn field<'a>(&'a self, v: &'a Value, name: &str) -> &'a Value {
        let Value::Object(class, fields) = self.resolve(v) else {
            return &Value::Null;
        };
        let Some(c) = self.classes.get(class) else {
            return &Value::Null;
        };
        c.fields
            .iter()
            .position(|f| f.name == name)
            .and_then(|i| fields.get(i))
            .map_or(&Value::Null, |f| self.resolve(f))
    }

    /// A path of fields, resolved at each step.
    pub fn path<'a>(&'a self, v: &'a Value, names: &[&str]) -> &'a Value {
        names.iter().fold(v, |v, n| self.field(v, n))
    }

    /// A string field along `names`; a constant that wraps one string
    /// (`Symbol`, `GCWhen`, `OldObjectRootType`) gives that string.
    pub fn text(&self, v: &Value, names: &[&str]) -> Option<String> {
        match self.path(v, names) {
            Value::Str(s) => Some(s.clone()),
            Value::Object(_, fields) if fields.len() == 1 => match self.resolve(&fields[0]) {
                Value::Str(s) => Some(s.clone()),
                _ => None,
            },
            _ => None,
        }
    }

    pub fn int(&self, v: &Value, names: &[&str]) -> Option<i64> {
        match self.path(v, names) {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// A tick count as nanoseconds since the epoch.
    pub fn nanos(&self, ticks: i64) -> i64 {
        let dt = (ticks - self.start_ticks) as i128 * 1_000_000_000 / self.ticks_per_second as i128;
        self.start_nanos + dt as i64
    }

    /// A tick span as nanoseconds.
    pub fn span_nanos(&self, ticks: i64) -> i64 {
        (ticks as i128 * 1_000_000_000 / self.ticks_per_second as i128) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damaged_recordings_are_errors() {
        assert!(read(b"", &[]).unwrap().is_empty());
        assert!(read(b"FLR\0", &[]).is_err());
        let mut header = vec![0u8; HEADER];
        header[..4].copy_from_slice(MAGIC);
        header[4..6].copy_from_slice(&2u16.to_be_bytes());
        // A size past the file's end.
        header[8..16].copy_from_slice(&(1i64 << 40).to_be_bytes());
        assert!(read(&header, &[]).is_err());
        // A size that fits, a metadata offset that does not.
        header[8..16].copy_from_slice(&(HEADER as i64).to_be_bytes());
        header[56..64].copy_from_slice(&1_000_000_000i64.to_be_bytes());
        assert!(read(&header, &[]).is_err());
    }

    #[test]
    fn integers_read_as_leb128_and_big_endian() {
        let mut budget = 10;
        let bytes = [
            0xac, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ];
        let mut r = Reader {
            bytes: &bytes,
            at: 0,
            compressed: true,
            budget: &mut budget,
        };
        assert_eq!(r.long().unwrap(), 300);
        assert_eq!(r.long().unwrap(), -1);
        let mut r = Reader {
            bytes: &[0xff, 0xfe],
            at: 0,
            compressed: false,
            budget: &mut budget,
        };
        assert_eq!(r.varint(2).unwrap(), -2);
    }
}
