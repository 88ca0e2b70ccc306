//! V8's sampling heap profile (`HeapProfiler.getSamplingProfile`) as
//! stacks: a tree of call frames, each node with the sampled objects it
//! allocated that are still live. V8 unbiases each sample itself (a
//! sampled object of `size` bytes stands for `1 / (1 - e^(-size/interval))`
//! like it, rounded; the protocol's sample `size` is that product), so a
//! stack's live bytes are the sum of its samples' sizes. Object counts are
//! not given back (the product cannot be split again): a stack counts its
//! samples. The variance of the estimate is kept, so that sampling noise
//! is not taken for growth.

use std::collections::HashMap;

use anyhow::{Context, Result};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
struct Profile {
    head: Node,
    #[serde(default)]
    samples: Vec<Sample>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Node {
    call_frame: CallFrame,
    #[serde(default)]
    self_size: f64,
    id: u64,
    #[serde(default)]
    children: Vec<Node>,
}

/// A frame as the protocol gives it (line and column 0-based, -1 unknown).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct CallFrame {
    pub function_name: String,
    #[serde(default)]
    pub url: String,
    /// V8's id of the script (a number, as a string).
    #[serde(default)]
    pub script_id: String,
    pub line_number: i64,
    pub column_number: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Sample {
    size: f64,
    node_id: u64,
}

/// One JavaScript stack's live sampled objects.
#[derive(Debug, Default)]
pub struct JsStack {
    /// Innermost (the allocating function) first.
    pub frames: Vec<CallFrame>,
    /// Live bytes, unbiased; the live samples they come from.
    pub bytes: f64,
    pub samples: f64,
    /// The variance of `bytes` from sampling alone.
    pub variance: f64,
}

/// The stacks of a `getSamplingProfile` (or `stopSampling`) result taken
/// with `interval` bytes between samples on average.
pub fn stacks(mut result: Value, interval: u64) -> Result<Vec<JsStack>> {
    let profile: Profile =
        serde_json::from_value(result["profile"].take()).context("an unexpected profile")?;
    // Per node: its samples unbiased.
    let mut by_node: HashMap<u64, (f64, f64, f64)> = HashMap::new();
    for s in &profile.samples {
        let (bytes, samples, variance) = by_node.entry(s.node_id).or_default();
        *bytes += s.size;
        *samples += 1.0;
        *variance += sample_variance(s.size, interval);
    }
    let mut out = Vec::new();
    // Depth first without recursion: each node with its path from the
    // root (the root itself, "(root)", is no frame).
    let mut todo: Vec<(&Node, Vec<&CallFrame>)> = vec![(&profile.head, Vec::new())];
    while let Some((node, path)) = todo.pop() {
        let (bytes, samples, variance) = match by_node.get(&node.id) {
            Some(&sums) => sums,
            // No samples listed at all (an older protocol): its self size,
            // which V8 unbiased already.
            None if profile.samples.is_empty() => (node.self_size, 0.0, 0.0),
            None => (0.0, 0.0, 0.0),
        };
        if bytes > 0.0 && !path.is_empty() {
            out.push(JsStack {
                frames: path.iter().rev().map(|&f| f.clone()).collect(),
                bytes,
                samples,
                variance,
            });
        }
        for child in &node.children {
            let mut p = path.clone();
            p.push(&child.call_frame);
            todo.push((child, p));
        }
    }
    Ok(out)
}

/// The variance from sampling that one sample V8 weighted `weight` bytes
/// adds: weight²·(1-p), p the chance its object was sampled. V8's weight
/// is size·round(1/p), which cannot be split again, so p is bounded from
/// below: objects much smaller than the interval (weight near it) have p
/// near 0; a larger weight is at most twice its object's size (the
/// rounding), so 1-p = e^(-size/interval) is at most e^(-weight/2·interval).
fn sample_variance(weight: f64, interval: u64) -> f64 {
    if interval == 0 {
        return 0.0;
    }
    let ratio = weight / interval as f64;
    match ratio < 1.5 {
        true => weight * weight,
        false => weight * weight * (-ratio / 2.0).exp(),
    }
}

/// Parses JSON nested as deep as a profile's tree (serde_json's default
/// limit of 128 levels is 64 JavaScript frames).
pub fn parse_deep(text: &str) -> Result<Value> {
    let mut de = serde_json::Deserializer::from_str(text);
    de.disable_recursion_limit();
    Ok(Value::deserialize(&mut de)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacks_unbiased_innermost_first() {
        let frame = |name: &str, line: i64| {
            serde_json::json!({"functionName": name, "scriptId": "1",
                "url": "/app/server.js", "lineNumber": line, "columnNumber": 4})
        };
        let result = serde_json::json!({"profile": {
            "head": {"callFrame": frame("(root)", -1), "selfSize": 0, "id": 1, "children": [
                {"callFrame": frame("main", 1), "selfSize": 0, "id": 2, "children": [
                    {"callFrame": frame("remember", 11), "selfSize": 9999, "id": 3,
                     "children": []}]}]},
            "samples": [
                {"size": 32768, "nodeId": 3, "ordinal": 1},
                {"size": 32768, "nodeId": 3, "ordinal": 2},
                {"size": 16, "nodeId": 2, "ordinal": 3}]}});
        let mut got = stacks(result, 32768).unwrap();
        got.sort_by(|a, b| b.bytes.total_cmp(&a.bytes));
        assert_eq!(got.len(), 2);
        let names: Vec<&str> = got[0].frames.iter().map(|f| &*f.function_name).collect();
        assert_eq!(names, ["remember", "main"]);
        // Sizes are V8's unbiased ones already.
        assert_eq!((got[0].bytes, got[0].samples), (65536.0, 2.0));
        assert_eq!((got[1].bytes, got[1].samples), (16.0, 1.0));
        assert_eq!(got[0].variance, 2.0 * 32768.0 * 32768.0);
    }

    #[test]
    fn deep_trees_parse() {
        let mut text = String::new();
        for _ in 0..300 {
            text.push_str("{\"c\":[");
        }
        text.push_str(&"]}".repeat(300));
        assert!(serde_json::from_str::<Value>(&text).is_err());
        assert!(parse_deep(&text).is_ok());
    }
}
