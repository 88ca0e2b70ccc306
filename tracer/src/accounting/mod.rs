//! Accounting in userspace: a series per allocation stack (`series`),
//! anonymous mappings per stack (`regions`), growth statistics and verdicts
//! (`verdict`), and the conversion of it all into the report model
//! (`report`). No eBPF here: what the kernel counted arrives as plain data.

pub mod regions;
pub mod report;
pub mod series;
pub mod verdict;
