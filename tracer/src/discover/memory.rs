//! Reading a running process's memory from outside, without stopping it:
//! `/proc/PID/mem` read at an address (what `process_vm_readv` does, one
//! copy per read). The target keeps running, so everything read may change
//! under the reader: callers check what they read and treat a failed read
//! as "this frame did not parse", never as an error of the whole walk.
//! Many small pieces at known addresses are read in batches
//! ([`Memory::read_many`], `process_vm_readv`): one system call for up to
//! 1,024 of them.

use std::{fs::File, os::unix::fs::FileExt};

use anyhow::{Context, Result};

/// Reads at most this many bytes of a string or bytes object: names, file
/// names and line tables are far shorter; anything longer is not what the
/// walk expected.
pub const MAX_OBJECT_BYTES: u64 = 1 << 20;

/// A process's memory, open for reading.
pub struct Memory {
    pid: u32,
    mem: File,
}

/// Pieces read per `process_vm_readv` call (the kernel's IOV_MAX).
const PIECES_PER_CALL: usize = 1024;

impl Memory {
    /// Opens `/proc/PID/mem` (needs root or CAP_SYS_PTRACE over `pid`).
    pub fn open(pid: u32) -> Result<Memory> {
        let mem = File::open(format!("/proc/{pid}/mem"))
            .with_context(|| format!("opening /proc/{pid}/mem"))?;
        Ok(Memory { pid, mem })
    }

    /// Reads `pieces` (address, length), each into its slice of `out`
    /// (laid end to end, in order); returns which were read whole. A piece
    /// the batch stops at is read again alone.
    pub fn read_many(&self, pieces: &[(u64, usize)], out: &mut [u8]) -> Vec<bool> {
        let mut ok = vec![false; pieces.len()];
        let mut offsets = Vec::with_capacity(pieces.len());
        let mut at = 0;
        for &(_, len) in pieces {
            offsets.push(at);
            at += len;
        }
        assert!(at <= out.len(), "read_many: {at} bytes into {}", out.len());
        let mut first = 0;
        while first < pieces.len() {
            let batch = &pieces[first..(first + PIECES_PER_CALL).min(pieces.len())];
            let base = offsets[first];
            let locals = [libc::iovec {
                iov_base: out[base..].as_mut_ptr().cast(),
                iov_len: batch.iter().map(|p| p.1).sum(),
            }];
            let remotes: Vec<libc::iovec> = batch
                .iter()
                .map(|&(addr, len)| libc::iovec {
                    iov_base: addr as *mut libc::c_void,
                    iov_len: len,
                })
                .collect();
            // SAFETY: the local iovec is `out` from `base` for the batch's
            // total length, inside `out` (checked above); the remote ones
            // are only read by the kernel, in the other process.
            let n = unsafe {
                libc::process_vm_readv(
                    self.pid as libc::pid_t,
                    locals.as_ptr(),
                    1,
                    remotes.as_ptr(),
                    remotes.len() as libc::c_ulong,
                    0,
                )
            };
            // Whole pieces read; the one it stopped in is read alone.
            let mut read = usize::try_from(n).unwrap_or(0);
            let mut i = first;
            while i < first + batch.len() && read >= pieces[i].1 {
                read -= pieces[i].1;
                ok[i] = true;
                i += 1;
            }
            if i < first + batch.len() {
                let (addr, len) = pieces[i];
                let start = offsets[i];
                ok[i] = self.read(addr, &mut out[start..start + len]).is_some();
                i += 1;
            }
            first = i;
        }
        ok
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
