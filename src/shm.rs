//! SharedMemory: sealed memfd regions, handed to workers by descriptor.
//!
//! A region is a `memfd` created with `MFD_CLOEXEC | MFD_ALLOW_SEALING`, its
//! space reserved with `fallocate` (a full tmpfs fails at creation, not with
//! SIGBUS at first touch), then sealed against shrinking and growing, then
//! sealed against further sealing. It moves between processes as a
//! descriptor: inherited at spawn ([`WorkerOptions::region`](crate::WorkerOptions::region))
//! or sent with a message ([`Reactor::send_regions`](crate::Reactor::send_regions),
//! [`Channel::send_regions`](crate::Channel::send_regions)) as `SCM_RIGHTS`.
//! Regions are named by their [`id`](SharedMemory::id) in messages, never by
//! descriptor number. This module is the memfd and its mapping only; the
//! wire form that carries regions beside a message (the region envelope)
//! is in `envelope.rs`.

use std::ffi::CString;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

use memmap2::{Mmap, MmapMut};

use crate::error::{Error, Result};
use crate::sys;

/// The seals every region carries; a received region lacking
/// `F_SEAL_SHRINK` is refused, since a peer could shrink it under our mapping
/// (shrinking raises SIGBUS; a punched hole does not, see [`SharedMemory::from_fd`]).
const SEALS: libc::c_int = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;

enum Mapping {
    ReadWrite(MmapMut),
    ReadOnly(Mmap),
}

/// A shared memory region: a sealed memfd and its mapping. Unmapped and
/// closed on drop.
///
/// The bytes are shared with every process that holds the region: another
/// process may write them at any time, so treat what you read as a snapshot
/// and agree on who writes when through messages.
pub struct SharedMemory {
    fd: OwnedFd,
    map: Mapping,
    id: u64,
}

impl fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemory")
            .field("id", &self.id)
            .field("fd", &self.fd.as_raw_fd())
            .field("len", &self.len())
            .field("writable", &self.is_writable())
            .finish()
    }
}

fn next_id() -> u64 {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    (u64::from(sys::getpid() as u32) << 32) | u64::from(NEXT.fetch_add(1, Ordering::Relaxed))
}

impl SharedMemory {
    /// Creates a region of `size` bytes (at least 1), zero-filled, mapped
    /// read-write. `name` shows in `/proc/PID/fd` (as `memfd:NAME`).
    ///
    /// System calls: `memfd_create`, `fallocate`, `fcntl(F_ADD_SEALS)` twice, `mmap`.
    pub fn create(name: &str, size: usize) -> Result<Self> {
        if size == 0 {
            return Err(Error::region("a region must have at least one byte"));
        }
        let cname = CString::new(name).map_err(|_| Error::region("name holds a NUL byte"))?;
        let fd = sys::memfd_create(&cname).map_err(|e| Error::io("memfd_create", e))?;
        sys::fallocate(&fd, size as u64).map_err(|e| Error::io("fallocate", e))?;
        sys::add_seals(&fd, SEALS).map_err(|e| Error::io("fcntl(F_ADD_SEALS)", e))?;
        sys::add_seals(&fd, libc::F_SEAL_SEAL).map_err(|e| Error::io("fcntl(F_ADD_SEALS)", e))?;
        Self::map(fd, size, true, next_id())
    }

    /// Opens a region received as a descriptor (or inherited), after checking
    /// its seals: a region that could shrink is refused (no SIGBUS from
    /// shrinking), and so is one on hugetlbfs (`MFD_HUGETLB`, whose pages
    /// come from a fixed pool). Its size comes from `fstat`. `writable` maps
    /// it read-write (refused if it is sealed against writes).
    ///
    /// The region may be sparse, and a peer may still punch holes in it
    /// (`fallocate(PUNCH_HOLE)` needs no seal that would stop it): holes read
    /// as zeros and are allocated on touch, which can fail with SIGBUS only
    /// if the machine runs out of memory for tmpfs. A huge size is accepted
    /// (it is address space until touched).
    ///
    /// System calls: `fcntl(F_GET_SEALS)`, `fstatfs`, `fstat`, `mmap`.
    pub fn from_fd(fd: OwnedFd, id: u64, writable: bool) -> Result<Self> {
        let seals =
            sys::get_seals(&fd).map_err(|_| Error::region("descriptor is not a sealable memfd"))?;
        if seals & libc::F_SEAL_SHRINK == 0 {
            return Err(Error::region("region is not sealed against shrinking"));
        }
        if writable && seals & (libc::F_SEAL_WRITE | libc::F_SEAL_FUTURE_WRITE) != 0 {
            return Err(Error::region("region is sealed against writes"));
        }
        // Huge pages come from a fixed pool: touching one not reserved
        // raises SIGBUS once the pool is empty.
        if sys::is_hugetlbfs(&fd).map_err(|e| Error::io("fstatfs", e))? {
            return Err(Error::region("region is on hugetlbfs (huge pages)"));
        }
        let file = std::fs::File::from(fd);
        let size = file.metadata().map_err(|e| Error::io("fstat", e))?.len();
        let size = usize::try_from(size).map_err(|_| Error::region("region too large"))?;
        if size == 0 {
            return Err(Error::region("region is empty"));
        }
        Self::map(OwnedFd::from(file), size, writable, id)
    }

    fn map(fd: OwnedFd, size: usize, writable: bool, id: u64) -> Result<Self> {
        // The memfd is sealed against shrinking (set at creation, checked
        // on receipt); the sys functions check it again before mapping.
        let map = if writable {
            Mapping::ReadWrite(sys::map_sealed_mut(&fd, size).map_err(|e| Error::io("mmap", e))?)
        } else {
            Mapping::ReadOnly(sys::map_sealed(&fd, size).map_err(|e| Error::io("mmap", e))?)
        };
        Ok(SharedMemory { fd, map, id })
    }

    /// Another handle to the same region: a duplicated descriptor and a new
    /// mapping of the same pages, with the same id.
    pub fn try_clone(&self) -> Result<Self> {
        let fd = sys::dup_cloexec(&self.fd).map_err(|e| Error::io("fcntl(F_DUPFD_CLOEXEC)", e))?;
        Self::map(fd, self.len(), self.is_writable(), self.id)
    }

    /// The region's id: how messages name it. Unique per creating process
    /// (its pid in the high 32 bits).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Always false: regions have at least one byte.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True if mapped read-write.
    pub fn is_writable(&self) -> bool {
        matches!(self.map, Mapping::ReadWrite(_))
    }

    /// The bytes (see the type docs on sharing).
    pub fn as_slice(&self) -> &[u8] {
        match &self.map {
            Mapping::ReadWrite(m) => m,
            Mapping::ReadOnly(m) => m,
        }
    }

    /// The bytes, writable; `None` for a read-only mapping.
    pub fn as_mut_slice(&mut self) -> Option<&mut [u8]> {
        match &mut self.map {
            Mapping::ReadWrite(m) => Some(&mut m[..]),
            Mapping::ReadOnly(_) => None,
        }
    }
}

impl AsRawFd for SharedMemory {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for SharedMemory {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
