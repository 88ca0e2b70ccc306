//! The kernel side, seen from userspace: checks before loading
//! (`preflight`), loading the embedded eBPF object and attaching its
//! programs (`probes`; `multi` for uprobe session programs and
//! uprobe_multi links, which aya cannot make), reading what the programs
//! account (`drain`, the live-block table `live_table`, both through
//! `window`s of mmapable arrays), the unwind tables the kernel walks
//! stacks with (`unwind`), what tracing costs the node (`overhead`), the
//! CPython processes whose frames the kernel walks (`python`, with field
//! offsets of the kernel's own structures from its BTF, `btf`).

pub mod btf;
pub mod drain;
pub mod live_table;
pub mod multi;
pub mod overhead;
pub mod preflight;
pub mod probes;
pub mod python;
pub mod unwind;
pub mod window;
