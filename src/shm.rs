//! SharedMemory: sealed memfd regions, handed to workers by descriptor.
//!
//! A region is a `memfd` created with `MFD_CLOEXEC | MFD_ALLOW_SEALING`, its
//! space reserved with `fallocate` (a full tmpfs fails at creation, not with
//! SIGBUS at first touch), then sealed against shrinking and growing. Once
//! filled it can be sealed read-only ([`SharedMemory::seal_read_only`]:
//! `F_SEAL_WRITE`, then the seals themselves). It moves between processes as
//! a descriptor: inherited at spawn ([`WorkerOptions::region`](crate::WorkerOptions::region))
//! or sent with a message ([`Reactor::send_regions`](crate::Reactor::send_regions),
//! [`Channel::send_regions`](crate::Channel::send_regions)) as `SCM_RIGHTS`.
//! Regions are named by their [`id`](SharedMemory::id) in messages, never by
//! descriptor number. Its bytes can be read as a slice of any plain-old-data
//! type ([`SharedMemory::view`], through [`bytemuck`],
//! re-exported). This module is the memfd and its mapping only; how regions
//! travel beside a message is in [`Reactor::send_regions`](crate::Reactor::send_regions)
//! and, for pool tasks, [`Pool::submit_regions`](crate::Pool::submit_regions).
//!
//! # An array shared read-only with a pool
//!
//! Fill the region, seal it, then start the pool: every worker inherits it
//! (`WorkerOptions::region` keeps its descriptor open in the child, and the
//! mapping comes with the fork), and so does every worker that replaces
//! one that died. A pool's work function must be `'static`, so it owns a
//! handle to the region (an `Rc`; an `Arc` for `PoolHandle`, whose
//! function must be `Send`), not a borrow of it.
//!
//! ```
//! use std::rc::Rc;
//! use miniray::pool::{Pool, PoolOptions};
//! use miniray::{SharedMemory, WorkerOptions};
//!
//! let data: Vec<f32> = (0..1_000_000).map(|i| i as f32).collect();
//! let mut region = SharedMemory::from_slice("data", &data)?;
//! region.seal_read_only()?; // filled: no process can write it again
//! let region = Rc::new(region);
//! let opts = PoolOptions::new()
//!     .workers(4)
//!     .worker_options(WorkerOptions::new().region(&region)); // inherited, by replacements too
//! let shared = Rc::clone(&region); // the work function owns a handle: it must be 'static
//! let mut pool = Pool::new(&opts, move |(start, end): (usize, usize)| -> f64 {
//!     let floats = shared.view::<f32>().expect("f32s");
//!     floats[start..end].iter().map(|&x| f64::from(x)).sum()
//! })?;
//! let slices = (0..data.len()).step_by(250_000).map(|s| (s, s + 250_000));
//! let total: f64 = pool.map(slices).map(|sum| sum.expect("task")).sum();
//! assert_eq!(total, data.iter().map(|&x| f64::from(x)).sum::<f64>());
//! # Ok::<(), miniray::Error>(())
//! ```

use std::ffi::CString;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

use bytemuck::{Pod, PodCastError};
use memmap2::{Mmap, MmapMut};

use crate::error::{Error, Result};
use crate::sys::{self, SealedFile, Unfit};

/// The seals of a region sealed read-only: no writes, and no change to the
/// seals (shrink and grow are sealed at creation).
const READ_ONLY: libc::c_int = libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;

enum Mapping {
    ReadWrite(MmapMut),
    ReadOnly(Mmap),
}

/// A shared memory region: a sealed memfd and its mapping. Unmapped and
/// closed on drop.
///
/// The bytes are shared with every process that holds the region: until the
/// region is [sealed read-only](SharedMemory::seal_read_only), another
/// process may write them at any time, so treat what you read as a snapshot
/// and agree on who writes when through messages. A region sealed read-only
/// never changes again, in any process.
///
/// Every region is sealed against shrinking and growing from its creation,
/// and a received one is refused unless it is sealed against shrinking, so
/// no mapping ever loses its pages (no `SIGBUS`).
///
/// To a pool's workers a region goes at spawn
/// ([`WorkerOptions::region`](crate::WorkerOptions::region): every worker
/// and every replacement inherits it; the [module docs](crate::shm) show a
/// whole pool) or with a task ([`Pool::submit_regions`](crate::Pool::submit_regions)).
///
/// ```
/// use miniray::SharedMemory;
///
/// let mut region = SharedMemory::from_slice("weights", &[1.0f32, 2.0, 3.0])?;
/// region.view_mut::<f32>()?[2] = 4.0;
/// region.seal_read_only()?;
/// assert_eq!(region.view::<f32>()?, &[1.0, 2.0, 4.0]);
/// assert!(region.view_mut::<f32>().is_err(), "sealed: no writes");
/// # Ok::<(), miniray::Error>(())
/// ```
pub struct SharedMemory {
    file: SealedFile,
    map: Mapping,
    id: u64,
}

impl fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemory")
            .field("id", &self.id)
            .field("fd", &self.file.as_fd().as_raw_fd())
            .field("len", &self.len())
            .field("writable", &self.is_writable())
            .finish()
    }
}

fn next_id() -> u64 {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    (u64::from(sys::getpid() as u32) << 32) | u64::from(NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Refuses a type of size zero: no number of them fills a region.
fn sized<T>() -> Result<()> {
    if std::mem::size_of::<T>() == 0 {
        return Err(Error::region("element type has size zero"));
    }
    Ok(())
}

/// Why the bytes cannot be viewed as `T`s.
fn cast_error(e: PodCastError) -> Error {
    Error::region(match e {
        PodCastError::OutputSliceWouldHaveSlop | PodCastError::SizeMismatch => {
            "region length is not a multiple of the element size"
        }
        PodCastError::TargetAlignmentGreaterAndInputNotAligned
        | PodCastError::AlignmentMismatch => "region is not aligned for the element type",
    })
}

impl SharedMemory {
    /// Creates a region of `size` bytes (at least 1), zero-filled, mapped
    /// read-write, sealed against shrinking and growing. `name` shows in
    /// `/proc/PID/fd` (as `memfd:NAME`).
    ///
    /// System calls: `memfd_create`, `fallocate`, `fcntl(F_ADD_SEALS)`, `mmap`.
    pub fn create(name: &str, size: usize) -> Result<Self> {
        if size == 0 {
            return Err(Error::region("a region must have at least one byte"));
        }
        let cname = CString::new(name).map_err(|_| Error::region("name holds a NUL byte"))?;
        let file = SealedFile::create(&cname, size as u64).map_err(|(op, e)| Error::io(op, e))?;
        Self::map(file, size, true, next_id())
    }

    /// Creates a region holding a copy of `data` (at least one byte of it),
    /// mapped read-write: [`SharedMemory::create`] of its size, then the
    /// bytes copied in. Call [`SharedMemory::seal_read_only`] next to share
    /// it unchangeable.
    pub fn from_slice<T: Pod>(name: &str, data: &[T]) -> Result<Self> {
        let bytes: &[u8] = bytemuck::try_cast_slice(data).map_err(cast_error)?;
        let mut region = Self::create(name, bytes.len())?;
        if let Mapping::ReadWrite(m) = &mut region.map {
            m.copy_from_slice(bytes);
        }
        Ok(region)
    }

    /// Opens a region received as a descriptor (or inherited), after checking
    /// its seals: a region that could shrink is refused (no SIGBUS from
    /// shrinking), and so is one on hugetlbfs (`MFD_HUGETLB`, whose pages
    /// come from a fixed pool). Its size comes from `fstat`. `writable` maps
    /// it read-write (refused if it is sealed against writes).
    ///
    /// The region may be sparse, and a peer may still punch holes in it
    /// unless it is sealed against writes (`fallocate(PUNCH_HOLE)` needs no
    /// other seal that would stop it): holes read as zeros and are allocated
    /// on touch, which can fail with SIGBUS only if the machine runs out of
    /// memory for tmpfs. A huge size is accepted (it is address space until
    /// touched).
    ///
    /// System calls: `fcntl(F_GET_SEALS)`, `fstat`, `mmap`, and `fstatfs`
    /// for the first region on a file system this process has not seen.
    pub fn from_fd(fd: OwnedFd, id: u64, writable: bool) -> Result<Self> {
        let file = Self::check(fd)?;
        if writable && file.seals() & (libc::F_SEAL_WRITE | libc::F_SEAL_FUTURE_WRITE) != 0 {
            return Err(Error::region("region is sealed against writes"));
        }
        Self::map_checked(file, id, writable)
    }

    /// Opens a region that came with a message: as [`SharedMemory::from_fd`],
    /// read-write unless the sender sealed it against writes, with one check
    /// of its seals and size.
    pub(crate) fn open_received(fd: OwnedFd, id: u64) -> Result<Self> {
        let file = Self::check(fd)?;
        let writable = file.seals() & (libc::F_SEAL_WRITE | libc::F_SEAL_FUTURE_WRITE) == 0;
        Self::map_checked(file, id, writable)
    }

    fn check(fd: OwnedFd) -> Result<SealedFile> {
        SealedFile::check(fd).map_err(|e| match e {
            Unfit::NotSealable => Error::region("descriptor is not a sealable memfd"),
            Unfit::Shrinkable => Error::region("region is not sealed against shrinking"),
            Unfit::HugeTlb => Error::region("region is on hugetlbfs (huge pages)"),
            Unfit::Os(op, e) => Error::io(op, e),
        })
    }

    fn map_checked(file: SealedFile, id: u64, writable: bool) -> Result<Self> {
        let size = usize::try_from(file.size()).map_err(|_| Error::region("region too large"))?;
        if size == 0 {
            return Err(Error::region("region is empty"));
        }
        Self::map(file, size, writable, id)
    }

    fn map(file: SealedFile, size: usize, writable: bool, id: u64) -> Result<Self> {
        let map = if writable {
            Mapping::ReadWrite(file.map_mut(size).map_err(|e| Error::io("mmap", e))?)
        } else {
            Mapping::ReadOnly(file.map(size).map_err(|e| Error::io("mmap", e))?)
        };
        Ok(SharedMemory { file, map, id })
    }

    /// Another handle to the same region: a duplicated descriptor and a new
    /// mapping of the same pages, with the same id, writable if this one is.
    pub fn try_clone(&self) -> Result<Self> {
        let file = self
            .file
            .try_clone()
            .map_err(|e| Error::io("fcntl(F_DUPFD_CLOEXEC)", e))?;
        Self::map(file, self.len(), self.is_writable(), self.id)
    }

    /// Seals the region read-only, for good: no process can write it again
    /// (`F_SEAL_WRITE`: `write(2)`, writable shared mappings and punching
    /// holes are refused with `EPERM`), and its seals cannot change
    /// (`F_SEAL_SEAL`). This handle is mapped read-only from then on;
    /// workers spawned afterwards inherit that mapping, and a region sent
    /// afterwards is mapped read-only by its receiver. Does nothing to a
    /// region already sealed against writes.
    ///
    /// The kernel refuses `F_SEAL_WRITE` while any writable mapping of the
    /// region exists, in any process: seal once filled, before spawning the
    /// workers or sending the region, and drop writable clones first. A
    /// `fork` copies every mapping, so any process forked while the region
    /// was writable (a worker another thread spawned, whatever its options)
    /// holds it writable until it exits: in a program that spawns from
    /// several threads, fill and seal before the others spawn. Fails
    /// then with [`Error::Region`] (and the region stays as it was), or if a
    /// holder of the descriptor sealed its seals first.
    ///
    /// System calls: `fcntl(F_GET_SEALS)`, `mmap` (a private read-only
    /// mapping, see below), `munmap` of the writable one,
    /// `fcntl(F_ADD_SEALS)`. A region sealed against writes is mapped private
    /// (`MAP_PRIVATE`, `PROT_READ`) here and by receivers: its bytes cannot
    /// change, and unlike a shared mapping that works on every kernel.
    pub fn seal_read_only(&mut self) -> Result<()> {
        let seals = self
            .file
            .current_seals()
            .map_err(|e| Error::io("fcntl(F_GET_SEALS)", e))?;
        if seals & libc::F_SEAL_WRITE != 0 {
            return Ok(());
        }
        if seals & libc::F_SEAL_SEAL != 0 {
            return Err(Error::region(
                "region's seals are sealed (F_SEAL_SEAL): it cannot be sealed read-only",
            ));
        }
        let len = self.len();
        // The read-only mapping goes in first (dropping the writable one):
        // F_SEAL_WRITE waits for no writable mapping, and a private one never
        // counts as writable.
        let read_only = self
            .file
            .map_private(len)
            .map_err(|e| Error::io("mmap", e))?;
        let was_writable = self.is_writable();
        self.map = Mapping::ReadOnly(read_only);
        match self.file.add_seals(READ_ONLY) {
            Ok(()) => Ok(()),
            Err(e) => {
                if was_writable {
                    // Nothing changed on the region: put the writable
                    // mapping back (if even that fails, it stays read-only).
                    if let Ok(m) = self.file.map_mut(len) {
                        self.map = Mapping::ReadWrite(m);
                    }
                }
                Err(match e.raw_os_error() {
                    Some(libc::EBUSY) => Error::region(
                        "a writable mapping of the region exists (a writable clone, or a process forked while the region was writable): it cannot be sealed read-only",
                    ),
                    Some(libc::EPERM) => Error::region(
                        "region's seals are sealed (F_SEAL_SEAL): it cannot be sealed read-only",
                    ),
                    _ => Error::io("fcntl(F_ADD_SEALS)", e),
                })
            }
        }
    }

    /// True if the region is sealed against writes (`F_SEAL_WRITE`), by
    /// [`SharedMemory::seal_read_only`] here or by whoever sent it: its
    /// bytes never change again. `fcntl(F_GET_SEALS)`.
    pub fn is_sealed_read_only(&self) -> Result<bool> {
        let seals = self
            .file
            .current_seals()
            .map_err(|e| Error::io("fcntl(F_GET_SEALS)", e))?;
        Ok(seals & libc::F_SEAL_WRITE != 0)
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

    /// The whole region as a slice of `T` (any plain-old-data type:
    /// `f32`, `u64`, `[f64; 3]`, a `#[repr(C)]` struct deriving
    /// `bytemuck::Pod`: [`miniray::bytemuck`](crate::bytemuck) is the
    /// version miniray uses; its derive needs `bytemuck` with feature
    /// `derive` in your own `Cargo.toml`). Fails with [`Error::Region`] naming the cause if
    /// the length is not a multiple of `size_of::<T>()`, `T` has size zero,
    /// or the region is not aligned for `T` (its mapping is page-aligned, so
    /// only an alignment over a page fails). No copy; values are in this
    /// machine's byte order.
    pub fn view<T: Pod>(&self) -> Result<&[T]> {
        sized::<T>()?;
        bytemuck::try_cast_slice(self.as_slice()).map_err(cast_error)
    }

    /// [`SharedMemory::view`], writable. Also fails with [`Error::Region`]
    /// if the region is mapped read-only.
    pub fn view_mut<T: Pod>(&mut self) -> Result<&mut [T]> {
        sized::<T>()?;
        let bytes = self
            .as_mut_slice()
            .ok_or(Error::region("region is mapped read-only"))?;
        bytemuck::try_cast_slice_mut(bytes).map_err(cast_error)
    }
}

impl AsRawFd for SharedMemory {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_fd().as_raw_fd()
    }
}

impl AsFd for SharedMemory {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}
