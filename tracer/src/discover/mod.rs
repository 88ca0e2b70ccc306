//! Finding what to hook: target processes and their mappings (`target`),
//! their cgroups and containers (`cgroup`), which processes a watching run
//! selects and the allocator files they map (`select`), the allocator's
//! entry points in a file (`allocator`) and where in each function its
//! probe goes (`placement`), starting `-- CMD` held before exec
//! (`launch`), CPython's runtime, offsets and frames read from outside
//! (`python`), and where its frees are probed (`pymalloc`), Go's heap
//! profile and goroutines read from outside (`golang`), a Node process's
//! JavaScript heap sampled through its own inspector (`node`); and what these
//! share: a process's memory read without stopping it (`memory`), a
//! mapped file's symbols at their process addresses (`image`). Nothing here
//! loads eBPF.

pub mod allocator;
pub mod cgroup;
pub mod golang;
pub mod image;
pub mod java;
pub mod launch;
pub mod memory;
pub mod node;
pub mod placement;
pub mod pymalloc;
pub mod python;
pub mod select;
pub mod target;
pub mod wrapper;
