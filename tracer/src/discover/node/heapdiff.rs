//! Two heap snapshots of one Node process compared (`--node-heap-diff`):
//! the program's objects whose retained size grew the most, each named by
//! its constructor and what holds it (a variable of a function's scope,
//! a property, an element), and the constructors whose objects grew. V8
//! gives an object the same id in every snapshot of a process, so an
//! object of the first is found again in the second.

use std::collections::HashMap;

use memtrace_report::{ConstructorGrowth, GrownObject, HeapDiff, Retainer};

use super::snapshot::{Graph, Snapshot, Summary};

/// Objects listed, and constructors.
const LISTED: usize = 5;
/// Steps of a retaining path given.
const PATH_STEPS: usize = 4;
/// Objects looked at for growth (the largest growths).
const CANDIDATES: usize = 1000;

/// What grew from `before` to `after` (its graph and retainers);
/// `scripts` names script ids.
pub fn compare(
    before: &Summary,
    after: &Snapshot,
    graph: &Graph,
    retainers: &(Vec<u32>, Vec<(u32, u32)>),
    scripts: &HashMap<u32, String>,
) -> HeapDiff {
    let after_summary = after.summary(graph);
    HeapDiff {
        state: "compared".into(),
        objects_before: before.objects,
        objects_after: after_summary.objects,
        bytes_before: before.bytes,
        bytes_after: after_summary.bytes,
        grown: grown(before, after, graph, retainers, scripts),
        constructors: constructors(before, &after_summary),
        ..HeapDiff::default()
    }
}

/// The objects whose retained size grew most, the innermost of those that
/// hold each other.
fn grown(
    before: &Summary,
    after: &Snapshot,
    graph: &Graph,
    retainers: &(Vec<u32>, Vec<(u32, u32)>),
    scripts: &HashMap<u32, String>,
) -> Vec<GrownObject> {
    // (growth, node) of the program's objects present in both.
    let mut candidates: Vec<(u64, usize)> = (0..after.nodes())
        .filter(|&n| after.is_program_object(n))
        .filter_map(|n| {
            let was = *before.retained.get(&after.id[n])?;
            let growth = graph.retained[n].checked_sub(was)?;
            (growth > 0).then_some((growth, n))
        })
        .collect();
    candidates.sort_unstable_by(|a, b| b.cmp(a));
    candidates.truncate(CANDIDATES);
    // An object that dominates another candidate whose growth is more than
    // half its own is explained by it: the inner one is listed.
    let mut explained = vec![false; candidates.len()];
    let index: HashMap<usize, usize> = candidates
        .iter()
        .enumerate()
        .map(|(i, &(_, n))| (n, i))
        .collect();
    for &(g, n) in &candidates {
        let mut up = graph.idom[n] as usize;
        let mut steps = 0;
        while up != 0 && up < after.nodes() && steps < 10_000 {
            if let Some(&i) = index.get(&up) {
                if g * 2 > candidates[i].0 {
                    explained[i] = true;
                }
            }
            up = graph.idom[up] as usize;
            steps += 1;
        }
    }
    candidates
        .iter()
        .zip(&explained)
        .filter(|(_, &e)| !e)
        .take(LISTED)
        .map(|(&(g, n), _)| GrownObject {
            constructor: after.constructor(n),
            id: after.id[n] as u64,
            retained_before: graph.retained[n] - g,
            retained_after: graph.retained[n],
            entries_before: before.entries.get(&after.id[n]).copied(),
            entries_after: after.entries(n),
            held_by: held_by(after, graph, retainers, scripts, n),
        })
        .collect()
}

/// The retaining path of `n`: at each step the retainer nearest to the
/// roots.
fn held_by(
    s: &Snapshot,
    graph: &Graph,
    retainers: &(Vec<u32>, Vec<(u32, u32)>),
    scripts: &HashMap<u32, String>,
    n: usize,
) -> Vec<Retainer> {
    let (starts, list) = retainers;
    let nearest = |n: usize| {
        list[starts[n] as usize..starts[n + 1] as usize]
            .iter()
            .filter(|&&(p, _)| graph.distance[p as usize] < graph.distance[n])
            .min_by_key(|&&(p, _)| graph.distance[p as usize])
            .copied()
    };
    let mut path = Vec::new();
    let mut at = n;
    while path.len() < PATH_STEPS {
        let Some((holder, edge)) = nearest(at) else {
            break;
        };
        let holder = holder as usize;
        if holder == 0 || graph.distance[holder] == 0 {
            break;
        }
        let (edge_kind, name) = s.edge_label(edge as usize);
        let mut step = Retainer {
            edge: edge_kind,
            name,
            holder: s.name(holder).to_string(),
            ..Retainer::default()
        };
        if s.name(holder) == "system / Context" {
            scope_of(s, retainers, scripts, holder, &mut step);
        }
        path.push(step);
        at = holder;
        // A variable named its scope's function: enough to find it.
        if path.last().is_some_and(|r| r.function.is_some()) {
            break;
        }
    }
    path
}

/// Names the function whose scope the context `ctx` is: a closure that
/// holds it as its `context`, and where that function starts.
fn scope_of(
    s: &Snapshot,
    retainers: &(Vec<u32>, Vec<(u32, u32)>),
    scripts: &HashMap<u32, String>,
    ctx: usize,
    step: &mut Retainer,
) {
    let (starts, list) = retainers;
    let closure = list[starts[ctx] as usize..starts[ctx + 1] as usize]
        .iter()
        .map(|&(p, e)| (p as usize, e as usize))
        .find(|&(p, e)| s.constructor(p) == "(closure)" && s.edge_label(e).1 == "context");
    let Some((closure, _)) = closure else {
        return;
    };
    step.function = Some(match s.name(closure) {
        "" => "(anonymous)".into(),
        name => name.to_string(),
    });
    if let Some((script, line, column)) = s.location(closure) {
        step.file = scripts
            .get(&script)
            .map(|u| u.strip_prefix("file://").unwrap_or(u).to_string());
        step.line = Some(line + 1);
        step.column = Some(column + 1);
    }
}

/// The constructors whose objects' own bytes grew most.
fn constructors(before: &Summary, after: &Summary) -> Vec<ConstructorGrowth> {
    let mut out: Vec<ConstructorGrowth> = after
        .constructors
        .iter()
        .map(|(name, &(objects, bytes))| {
            let (objects_before, bytes_before) =
                before.constructors.get(name).copied().unwrap_or_default();
            ConstructorGrowth {
                constructor: name.clone(),
                objects_before,
                objects_after: objects,
                bytes_before,
                bytes_after: bytes,
            }
        })
        .filter(|c| c.bytes_after > c.bytes_before)
        .collect();
    out.sort_by(|a, b| {
        (b.bytes_after - b.bytes_before)
            .cmp(&(a.bytes_after - a.bytes_before))
            .then_with(|| a.constructor.cmp(&b.constructor))
    });
    out.truncate(LISTED);
    out
}
