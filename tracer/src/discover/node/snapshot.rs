//! V8 heap snapshots (`HeapProfiler.takeHeapSnapshot`), parsed as V8
//! streams them: its JSON text is read chunk by chunk into flat arrays of
//! nodes and edges (never held whole as text), then each object's
//! retained size is found from the dominator tree of the heap graph (what
//! would be freed with it, as DevTools' "Retained Size"), and its distance
//! from the roots (which of its retainers is the nearest). What is kept of
//! a snapshot to compare with a later one is a [`Summary`].

use std::{collections::HashMap, io::Read};

use anyhow::{bail, Context, Result};
use serde::{
    de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor},
    Deserialize, Deserializer,
};

/// Longest string kept of the snapshot's string table (names of
/// constructors, properties and variables are short; string contents are
/// cut).
const MAX_STRING: usize = 200;

/// A parsed snapshot: nodes and edges as flat arrays.
#[derive(Default)]
pub struct Snapshot {
    /// Per node: its kind (an index in `node_kinds`), name (in `strings`),
    /// V8's id (stable across snapshots of one process), own size, and
    /// its first edge (`first_edge[n]..first_edge[n + 1]`).
    kind: Vec<u8>,
    name: Vec<u32>,
    pub id: Vec<u32>,
    pub self_size: Vec<u32>,
    first_edge: Vec<u32>,
    /// Per edge: its kind (in `edge_kinds`), name (a string, or an index
    /// for elements) and the node it points to.
    edge_kind: Vec<u8>,
    edge_name: Vec<u32>,
    edge_to: Vec<u32>,
    strings: Vec<Box<str>>,
    node_kinds: Vec<String>,
    edge_kinds: Vec<String>,
    /// Closures' source positions: node, script id, line, column
    /// (0-based).
    locations: HashMap<u32, (u32, u32, u32)>,
}

/// What a graph walk found: each node's retained size, immediate
/// dominator and distance from the root (u32::MAX: unreachable).
pub struct Graph {
    pub retained: Vec<u64>,
    pub idom: Vec<u32>,
    pub distance: Vec<u32>,
}

/// What is kept of a snapshot to compare with a later one: per object id
/// its retained size; per constructor its objects and their own bytes.
pub struct Summary {
    pub retained: HashMap<u32, u64>,
    /// Maps' and Sets' entries, by object id.
    pub entries: HashMap<u32, u64>,
    pub constructors: HashMap<String, (u64, u64)>,
    pub objects: u64,
    pub bytes: u64,
}

#[derive(Deserialize)]
struct Head {
    meta: Meta,
}

#[derive(Deserialize)]
struct Meta {
    node_fields: Vec<String>,
    node_types: Vec<serde_json::Value>,
    edge_fields: Vec<String>,
    edge_types: Vec<serde_json::Value>,
    #[serde(default)]
    location_fields: Vec<String>,
}

/// Field positions, from the snapshot's own description of its layout.
struct Layout {
    node_stride: usize,
    node: [usize; 5],
    edge_stride: usize,
    edge: [usize; 3],
    location_stride: usize,
}

fn position(fields: &[String], name: &str) -> Result<usize> {
    fields
        .iter()
        .position(|f| f == name)
        .with_context(|| format!("a heap snapshot without the field {name}"))
}

fn names(types: &[serde_json::Value]) -> Vec<String> {
    types
        .first()
        .and_then(|t| t.as_array())
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default()
}

impl Snapshot {
    /// Parses a snapshot's text as it is read.
    pub fn read(text: impl Read) -> Result<Snapshot> {
        let mut de = serde_json::Deserializer::from_reader(std::io::BufReader::new(text));
        let mut snapshot = Snapshot::default();
        Top(&mut snapshot).deserialize(&mut de)?;
        snapshot.check()?;
        Ok(snapshot)
    }

    pub fn nodes(&self) -> usize {
        self.id.len()
    }

    fn edges(&self, n: usize) -> std::ops::Range<usize> {
        self.first_edge[n] as usize..self.first_edge[n + 1] as usize
    }

    fn string(&self, i: u32) -> &str {
        self.strings.get(i as usize).map_or("?", |s| s)
    }

    fn node_kind(&self, n: usize) -> &str {
        self.node_kinds
            .get(self.kind[n] as usize)
            .map_or("?", |s| s)
    }

    fn edge_kind(&self, e: usize) -> &str {
        self.edge_kinds
            .get(self.edge_kind[e] as usize)
            .map_or("?", |s| s)
    }

    /// A node's name as V8 gives it (a constructor's, a function's).
    pub fn name(&self, n: usize) -> &str {
        self.string(self.name[n])
    }

    /// What DevTools' summary groups a node under: its constructor for
    /// objects, a kind in parentheses for the rest.
    pub fn constructor(&self, n: usize) -> String {
        match self.node_kind(n) {
            "object" | "native" => self.name(n).to_string(),
            "closure" => "(closure)".into(),
            "string" | "concatenated string" | "sliced string" => "(string)".into(),
            "array" => "(array)".into(),
            "code" => "(compiled code)".into(),
            "hidden" | "synthetic" | "object shape" => "(system)".into(),
            other => format!("({other})"),
        }
    }

    /// Whether a node is an object of the program's (not V8's own
    /// structures): one a user would recognize as held.
    pub fn is_program_object(&self, n: usize) -> bool {
        match self.node_kind(n) {
            "object" => !self.name(n).starts_with("system /"),
            "closure" | "regexp" => true,
            _ => false,
        }
    }

    /// An edge's name: a property, variable or internal field's name, or
    /// an element's index.
    pub fn edge_label(&self, e: usize) -> (String, String) {
        let kind = self.edge_kind(e).to_string();
        let name = match kind.as_str() {
            "element" | "hidden" => format!("[{}]", self.edge_name[e]),
            _ => self.string(self.edge_name[e]).to_string(),
        };
        (kind, name)
    }

    /// A closure's source position: script id, line and column
    /// (0-based).
    pub fn location(&self, n: usize) -> Option<(u32, u32, u32)> {
        self.locations.get(&(n as u32)).copied()
    }

    /// Edges that hold what they point to, as DevTools counts them: weak
    /// ones do not; shortcuts only from the root.
    fn holds(&self, from: usize, e: usize) -> bool {
        match self.edge_kind(e) {
            "weak" => false,
            "shortcut" => from == 0,
            _ => true,
        }
    }

    fn check(&self) -> Result<()> {
        let n = self.nodes() as u32;
        if n == 0 || self.first_edge.len() != self.nodes() + 1 {
            bail!("a heap snapshot without nodes");
        }
        if self.first_edge[self.nodes()] as usize != self.edge_to.len() {
            bail!("a heap snapshot whose edges are not its nodes' edges");
        }
        if self.edge_to.iter().any(|&t| t >= n) {
            bail!("a heap snapshot with an edge to no node");
        }
        Ok(())
    }

    /// Each node's retainers that hold it: (node, edge), in one array
    /// indexed like the nodes (`starts[n]..starts[n + 1]`).
    pub fn retainers(&self) -> (Vec<u32>, Vec<(u32, u32)>) {
        let nodes = self.nodes();
        let mut starts = vec![0u32; nodes + 1];
        for from in 0..nodes {
            for e in self.edges(from) {
                if self.holds(from, e) {
                    starts[self.edge_to[e] as usize + 1] += 1;
                }
            }
        }
        for i in 0..nodes {
            starts[i + 1] += starts[i];
        }
        let mut fill = starts.clone();
        let mut list = vec![(0u32, 0u32); starts[nodes] as usize];
        for from in 0..nodes {
            for e in self.edges(from) {
                if self.holds(from, e) {
                    let to = self.edge_to[e] as usize;
                    list[fill[to] as usize] = (from as u32, e as u32);
                    fill[to] += 1;
                }
            }
        }
        (starts, list)
    }

    /// Retained sizes, dominators and distances from the root (node 0),
    /// by the iterative algorithm of Cooper, Harvey and Kennedy ("A
    /// Simple, Fast Dominance Algorithm") over a depth-first postorder.
    pub fn graph(&self, retainers: &(Vec<u32>, Vec<(u32, u32)>)) -> Graph {
        let nodes = self.nodes();
        const NONE: u32 = u32::MAX;
        // Postorder numbers, without recursion.
        let mut post = vec![NONE; nodes];
        let mut order: Vec<u32> = Vec::with_capacity(nodes);
        let mut seen = vec![false; nodes];
        let mut stack: Vec<(u32, usize)> = vec![(0, self.first_edge[0] as usize)];
        seen[0] = true;
        while let Some(&mut (n, ref mut next)) = stack.last_mut() {
            let end = self.first_edge[n as usize + 1] as usize;
            let mut pushed = None;
            while *next < end {
                let e = *next;
                *next += 1;
                let to = self.edge_to[e];
                if self.holds(n as usize, e) && !seen[to as usize] {
                    seen[to as usize] = true;
                    pushed = Some(to);
                    break;
                }
            }
            match pushed {
                Some(to) => stack.push((to, self.first_edge[to as usize] as usize)),
                None => {
                    post[n as usize] = order.len() as u32;
                    order.push(n);
                    stack.pop();
                }
            }
        }
        let (starts, list) = retainers;
        let mut idom = vec![NONE; nodes];
        idom[0] = 0;
        let intersect = |idom: &[u32], mut a: u32, mut b: u32| {
            while a != b {
                while post[a as usize] < post[b as usize] {
                    a = idom[a as usize];
                }
                while post[b as usize] < post[a as usize] {
                    b = idom[b as usize];
                }
            }
            a
        };
        let mut changed = true;
        while changed {
            changed = false;
            for &n in order.iter().rev().skip(1) {
                let n = n as usize;
                let mut new = NONE;
                for &(p, _) in &list[starts[n] as usize..starts[n + 1] as usize] {
                    if idom[p as usize] == NONE || post[p as usize] == NONE {
                        continue;
                    }
                    new = match new {
                        NONE => p,
                        d => intersect(&idom, p, d),
                    };
                }
                if new != NONE && idom[n] != new {
                    idom[n] = new;
                    changed = true;
                }
            }
        }
        // A node comes after all it dominates in postorder.
        let mut retained: Vec<u64> = self.self_size.iter().map(|&s| s as u64).collect();
        for &n in &order {
            let n = n as usize;
            if n != 0 && idom[n] != NONE {
                retained[idom[n] as usize] += retained[n];
            }
        }
        for n in 0..nodes {
            if post[n] == NONE {
                retained[n] = self.self_size[n] as u64;
            }
        }
        // Distances: breadth first from the root.
        let mut distance = vec![NONE; nodes];
        distance[0] = 0;
        let mut queue = std::collections::VecDeque::from([0u32]);
        while let Some(n) = queue.pop_front() {
            let n = n as usize;
            for e in self.edges(n) {
                let to = self.edge_to[e] as usize;
                if self.holds(n, e) && distance[to] == NONE {
                    distance[to] = distance[n] + 1;
                    queue.push_back(to as u32);
                }
            }
        }
        Graph {
            retained,
            idom,
            distance,
        }
    }

    /// What is kept to compare with a later snapshot.
    pub fn summary(&self, graph: &Graph) -> Summary {
        let mut constructors: HashMap<String, (u64, u64)> = HashMap::new();
        let mut bytes = 0;
        for n in 0..self.nodes() {
            let c = constructors.entry(self.constructor(n)).or_default();
            c.0 += 1;
            c.1 += self.self_size[n] as u64;
            bytes += self.self_size[n] as u64;
        }
        Summary {
            retained: (0..self.nodes())
                .filter(|&n| self.is_program_object(n))
                .map(|n| (self.id[n], graph.retained[n]))
                .collect(),
            entries: (0..self.nodes())
                .filter_map(|n| Some((self.id[n], self.entries(n)?)))
                .collect(),
            constructors,
            objects: self.nodes() as u64,
            bytes,
        }
    }

    /// The entries of a Map or Set: the elements of its hash table (its
    /// `table` edge), each entry's key and value in neighbouring slots
    /// (keys that are small integers have no edge).
    pub fn entries(&self, n: usize) -> Option<u64> {
        if !matches!(self.name(n), "Map" | "Set" | "WeakMap" | "WeakSet") {
            return None;
        }
        let table = self.edges(n).find(|&e| {
            self.edge_kind(e) == "internal" && self.string(self.edge_name[e]) == "table"
        })?;
        let table = self.edge_to[table] as usize;
        let slots: Vec<u64> = self
            .edges(table)
            .filter_map(|e| self.string(self.edge_name[e]).parse::<u64>().ok())
            .collect();
        let base = *slots.iter().min()?;
        // An entry is 3 slots (key, value, chain): count the distinct
        // entries the slots with an edge belong to.
        let mut entries: Vec<u64> = slots.iter().map(|s| (s - base) / 3).collect();
        entries.sort_unstable();
        entries.dedup();
        Some(entries.len() as u64)
    }
}

/// The snapshot's top-level object, its arrays read into `Snapshot` as
/// they come (V8 writes the layout first).
struct Top<'a>(&'a mut Snapshot);

impl<'de> DeserializeSeed<'de> for Top<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Top<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a V8 heap snapshot")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        use serde::de::Error;
        let s = self.0;
        let mut layout: Option<Layout> = None;
        while let Some(key) = map.next_key::<String>()? {
            match (key.as_str(), &layout) {
                ("snapshot", _) => {
                    let head: Head = map.next_value()?;
                    let m = head.meta;
                    let node = |f| position(&m.node_fields, f).map_err(A::Error::custom);
                    let edge = |f| position(&m.edge_fields, f).map_err(A::Error::custom);
                    layout = Some(Layout {
                        node_stride: m.node_fields.len(),
                        node: [
                            node("type")?,
                            node("name")?,
                            node("id")?,
                            node("self_size")?,
                            node("edge_count")?,
                        ],
                        edge_stride: m.edge_fields.len(),
                        edge: [edge("type")?, edge("name_or_index")?, edge("to_node")?],
                        location_stride: m.location_fields.len(),
                    });
                    s.node_kinds = names(&m.node_types);
                    s.edge_kinds = names(&m.edge_types);
                }
                ("nodes", Some(l)) => {
                    let mut field = 0;
                    let mut edges = 0u32;
                    s.first_edge.push(0);
                    map.next_value_seed(Numbers(|v: u64| {
                        let f = field;
                        field = (field + 1) % l.node_stride;
                        if f == l.node[0] {
                            s.kind.push(v as u8);
                        } else if f == l.node[1] {
                            s.name.push(v as u32);
                        } else if f == l.node[2] {
                            s.id.push(v as u32);
                        } else if f == l.node[3] {
                            s.self_size.push(v.min(u32::MAX as u64) as u32);
                        } else if f == l.node[4] {
                            edges = edges.saturating_add(v as u32);
                            s.first_edge.push(edges);
                        }
                    }))?;
                }
                ("edges", Some(l)) => {
                    let mut field = 0;
                    let stride = l.node_stride as u64;
                    map.next_value_seed(Numbers(|v: u64| {
                        let f = field;
                        field = (field + 1) % l.edge_stride;
                        if f == l.edge[0] {
                            s.edge_kind.push(v as u8);
                        } else if f == l.edge[1] {
                            s.edge_name.push(v as u32);
                        } else if f == l.edge[2] {
                            s.edge_to.push((v / stride) as u32);
                        }
                    }))?;
                }
                ("locations", Some(l)) if l.location_stride == 4 => {
                    let mut row = [0u64; 4];
                    let mut field = 0;
                    let stride = l.node_stride as u64;
                    map.next_value_seed(Numbers(|v: u64| {
                        row[field] = v;
                        field += 1;
                        if field == 4 {
                            field = 0;
                            let at = (row[1] as u32, row[2] as u32, row[3] as u32);
                            s.locations.insert((row[0] / stride) as u32, at);
                        }
                    }))?;
                }
                ("strings", _) => map.next_value_seed(Strings(&mut s.strings))?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if layout.is_none() {
            return Err(A::Error::custom("a heap snapshot without its layout"));
        }
        Ok(())
    }
}

/// An array of numbers, each handed to a closure (nothing kept).
struct Numbers<F>(F);

impl<'de, F: FnMut(u64)> DeserializeSeed<'de> for Numbers<F> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, F: FnMut(u64)> Visitor<'de> for Numbers<F> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of numbers")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        while let Some(v) = seq.next_element::<u64>()? {
            (self.0)(v);
        }
        Ok(())
    }
}

/// The string table, each string cut at [`MAX_STRING`] bytes.
struct Strings<'a>(&'a mut Vec<Box<str>>);

impl<'de> DeserializeSeed<'de> for Strings<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Strings<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of strings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(mut v) = seq.next_element::<String>()? {
            if v.len() > MAX_STRING {
                let mut end = MAX_STRING;
                while !v.is_char_boundary(end) {
                    end -= 1;
                }
                v.truncate(end);
            }
            self.0.push(v.into_boxed_str());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The root holds a Holder and a Shared object; the Holder holds a
    /// Leaf and the Shared one too; the Leaf holds Shared weakly.
    const TEXT: &str = r#"{"snapshot":{"meta":{
        "node_fields":["type","name","id","self_size","edge_count","trace_node_id","detachedness"],
        "node_types":[["hidden","array","string","object","code","closure","regexp","number",
            "native","synthetic"],"string","number","number","number","number","number"],
        "edge_fields":["type","name_or_index","to_node"],
        "edge_types":[["context","element","property","internal","hidden","shortcut","weak"],
            "string_or_number","node"],
        "location_fields":["object_index","script_id","line","column"]},
        "node_count":4,"edge_count":5},
      "nodes":[9,0,1,0,2,0,0, 3,1,3,100,2,0,0, 3,2,5,1000,1,0,0, 3,3,7,10,0,0,0],
      "edges":[2,4,7, 2,5,21, 2,6,14, 2,7,21, 6,8,21],
      "trace_function_infos":[],"trace_tree":[],"samples":[],"locations":[],
      "strings":["","Holder","Leaf","Shared","holder","shared","leaf","also","weakly"]}"#;

    #[test]
    fn retained_sizes_follow_dominators_and_ignore_weak_edges() {
        let s = Snapshot::read(TEXT.as_bytes()).unwrap();
        assert_eq!(s.nodes(), 4);
        let retainers = s.retainers();
        let g = s.graph(&retainers);
        // Holder keeps Leaf alone; Shared is the root's too.
        assert_eq!(g.retained, vec![1110, 1100, 1000, 10]);
        assert_eq!(g.idom, vec![0, 0, 1, 0]);
        assert_eq!(g.distance, vec![0, 1, 2, 1]);
        assert_eq!(s.constructor(1), "Holder");
        assert_eq!(
            s.edge_label(0),
            ("property".to_string(), "holder".to_string())
        );
        let summary = s.summary(&g);
        assert_eq!(summary.retained[&3], 1100);
        assert_eq!((summary.objects, summary.bytes), (4, 1110));
    }

    #[test]
    fn a_snapshot_with_an_edge_to_no_node_is_refused() {
        let bad = TEXT.replace("6,8,21]", "6,8,70]");
        assert!(Snapshot::read(bad.as_bytes()).is_err());
    }
}
