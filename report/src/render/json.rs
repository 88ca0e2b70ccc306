//! JSON renderer: the report model as pretty-printed JSON (the fields are
//! described in docs/outputs.md),
//! streamed into the output (a report of thousands of stacks is hundreds of
//! megabytes of text, never held whole in memory).

use std::io::{self, Write};

use crate::model::Report;

/// Writes the report, and a newline, into `out`.
pub fn write(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, report)?;
    out.write_all(b"\n")
}
