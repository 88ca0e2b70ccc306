//! A task storage map type (`BPF_MAP_TYPE_TASK_STORAGE`), which aya-ebpf
//! 0.2 does not wrap: one value per thread, reached from the current task.
//! Only the type lives here; `alloc` defines the map it uses (`INFLIGHT`).
//! Imports no other module of the crate.

use aya_ebpf::{
    bindings::{bpf_map_type, BPF_F_NO_PREALLOC, BPF_LOCAL_STORAGE_GET_F_CREATE},
    helpers::generated::{bpf_get_current_task_btf, bpf_task_storage_get},
};

/// A task storage map (`BPF_MAP_TYPE_TASK_STORAGE`): one value per thread,
/// reached from the current task in a few loads (~20-30 ns) instead of a
/// hash lookup, created on first use and freed by the kernel with the
/// thread. aya-ebpf 0.2 has no wrapper for it; like its BTF maps, the
/// definition is carried by the field types (libbpf's `.maps` convention).
#[repr(C)]
pub(crate) struct TaskStorage<T> {
    r#type: *const [i32; bpf_map_type::BPF_MAP_TYPE_TASK_STORAGE as usize],
    key: *const i32,
    value: *const T,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; BPF_F_NO_PREALLOC as usize],
}

// SAFETY: placeholder pointers patched by the loader, never dereferenced.
unsafe impl<T> Sync for TaskStorage<T> {}

impl<T> TaskStorage<T> {
    pub(crate) const fn new() -> Self {
        TaskStorage {
            r#type: core::ptr::null(),
            key: core::ptr::null(),
            value: core::ptr::null(),
            max_entries: core::ptr::null(),
            map_flags: core::ptr::null(),
        }
    }

    /// The current thread's value; created (zeroed) when `create` and
    /// missing. None when missing (or out of memory).
    #[inline(always)]
    pub(crate) fn current(&self, create: bool) -> Option<*mut T> {
        let flags = if create {
            BPF_LOCAL_STORAGE_GET_F_CREATE as u64
        } else {
            0
        };
        // SAFETY: the map pointer is this map definition; the task comes
        // from the kernel; a null value means "create zeroed".
        let value = unsafe {
            bpf_task_storage_get(
                core::ptr::from_ref(self).cast_mut().cast(),
                bpf_get_current_task_btf().cast(),
                core::ptr::null_mut(),
                flags,
            )
        };
        (!value.is_null()).then_some(value.cast())
    }
}
