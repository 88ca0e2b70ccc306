//! Pages of a `BPF_F_MMAPABLE` BPF array mapped shared into memtrace for
//! as long as a [`Window`] lives: how userspace writes the unwind tables
//! (`unwind`) and reads and edits the live-block table (`live_table`) in place,
//! without a syscall per entry, and without the array counting in
//! memtrace's resident set beyond that moment.

use std::os::fd::{AsFd, AsRawFd};

use aya::maps::MapData;

/// Bytes of a page; window offsets are multiples of it.
pub const PAGE: usize = 4096;

/// `len` bytes of a BPF array's memory from byte `offset`, mapped
/// read-write and shared with the kernel; unmapped when dropped.
pub struct Window {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Window {
    /// Maps `len` bytes from `offset` (a multiple of [`PAGE`]); both must
    /// lie within the array's page-aligned size, or the kernel refuses.
    pub fn map(map: &MapData, offset: usize, len: usize) -> std::io::Result<Window> {
        // SAFETY: a shared mapping of the array's own pages; the kernel
        // checks the range against the array's size.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Window { ptr, len })
    }

    /// The first mapped byte.
    pub fn as_mut_ptr(&self) -> *mut u8 {
        self.ptr.cast()
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, not used after this.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}
