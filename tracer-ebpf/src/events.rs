//! The ring buffer (`EVENTS`) that carries mapping events (`mapping`) and
//! process events (`process`) to userspace, in one stream so that an exec
//! or an exit comes after the mapping calls that preceded it. Imports no
//! other module of the crate.

use aya_ebpf::{macros::map, maps::RingBuf};

/// Mapping events for userspace (see `tracer_common::MmapEvent`, ~1 KiB
/// each) and process events (`tracer_common::ProcessEvent`).
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);
