//! Reading a running process's memory from outside, without stopping it:
//! `/proc/PID/mem` read at an address (what `process_vm_readv` does, one
//! copy per read). The target keeps running, so everything read may change
//! under the reader: callers check what they read and treat a failed read
//! as "this frame did not parse", never as an error of the whole walk.

use std::{fs::File, os::unix::fs::FileExt};

use anyhow::{Context, Result};

/// Reads at most this many bytes of a string or bytes object: names, file
/// names and line tables are far shorter; anything longer is not what the
/// walk expected.
pub const MAX_OBJECT_BYTES: u64 = 1 << 20;

/// A process's memory, open for reading.
pub struct Memory {
    mem: File,
}

impl Memory {
    /// Opens `/proc/PID/mem` (needs root or CAP_SYS_PTRACE over `pid`).
    pub fn open(pid: u32) -> Result<Memory> {
        let mem = File::open(format!("/proc/{pid}/mem"))
            .with_context(|| format!("opening /proc/{pid}/mem"))?;
        Ok(Memory { mem })
    }

    /// Fills `buf` from `addr`; None when any of it is unmapped (or the
    /// process is gone).
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Option<()> {
        if addr == 0 {
            return None;
        }
        self.mem.read_exact_at(buf, addr).ok()
    }

    /// `len` bytes at `addr` (at most [`MAX_OBJECT_BYTES`]).
    pub fn bytes(&self, addr: u64, len: u64) -> Option<Vec<u8>> {
        if len > MAX_OBJECT_BYTES {
            return None;
        }
        let mut buf = vec![0; len as usize];
        self.read(addr, &mut buf)?;
        Some(buf)
    }

    pub fn u64(&self, addr: u64) -> Option<u64> {
        let mut b = [0; 8];
        self.read(addr, &mut b)?;
        Some(u64::from_le_bytes(b))
    }

    pub fn u32(&self, addr: u64) -> Option<u32> {
        let mut b = [0; 4];
        self.read(addr, &mut b)?;
        Some(u32::from_le_bytes(b))
    }
}

/// A little-endian u64 at `at` in `buf` (None past its end).
pub fn u64_at(buf: &[u8], at: u64) -> Option<u64> {
    let at = usize::try_from(at).ok()?;
    Some(u64::from_le_bytes(buf.get(at..at + 8)?.try_into().ok()?))
}

/// A little-endian u32 at `at` in `buf` (None past its end).
pub fn u32_at(buf: &[u8], at: u64) -> Option<u32> {
    let at = usize::try_from(at).ok()?;
    Some(u32::from_le_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

/// Writes `value` at `addr` in `pid`'s memory: only where the user asked
/// for it (one word, what the program could set itself).
pub fn write_u64(pid: u32, addr: u64, value: u64) -> Result<()> {
    let mem = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/mem"))
        .with_context(|| format!("opening /proc/{pid}/mem for writing"))?;
    mem.write_all_at(&value.to_le_bytes(), addr)
        .with_context(|| format!("writing pid {pid}'s memory at {addr:#x}"))
}
