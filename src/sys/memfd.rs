//! Sealed memory files: `memfd_create`, `fallocate`, seals, the
//! close-on-exec duplicates that travel with a message, and their mappings.
//!
//! [`SealedFile`] is a memory file known to stay backed: made here sealed
//! against shrinking, or checked once on receipt. Seals are never removed
//! and a file sealed against shrinking never gets shorter, so what was
//! checked holds for the file's whole life and its mappings need no second
//! check.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{Mmap, MmapMut, MmapOptions};

use super::cvt;

/// `memfd_create(2)` with `MFD_CLOEXEC | MFD_ALLOW_SEALING`.
pub(crate) fn memfd_create(name: &std::ffi::CStr) -> io::Result<OwnedFd> {
    // SAFETY: name is NUL-terminated; the returned descriptor is new and ours.
    let fd = cvt(unsafe {
        libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
    })?;
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `fallocate(fd, 0, 0, len)`: reserves the space now (and sets the size),
/// so a full tmpfs fails here rather than with SIGBUS at first touch.
pub(crate) fn fallocate(fd: impl AsFd, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "size too large"))?;
    // SAFETY: plain integers on a descriptor borrowed for the call.
    cvt(unsafe { libc::fallocate(fd.as_fd().as_raw_fd(), 0, 0, len) }).map(drop)
}

/// `fcntl(F_ADD_SEALS)`.
pub(crate) fn add_seals(fd: impl AsFd, seals: libc::c_int) -> io::Result<()> {
    // SAFETY: plain integers on a descriptor borrowed for the call.
    cvt(unsafe { libc::fcntl(fd.as_fd().as_raw_fd(), libc::F_ADD_SEALS, seals) }).map(drop)
}

/// `fcntl(F_GET_SEALS)`.
pub(crate) fn get_seals(fd: impl AsFd) -> io::Result<libc::c_int> {
    // SAFETY: plain integers on a descriptor borrowed for the call.
    cvt(unsafe { libc::fcntl(fd.as_fd().as_raw_fd(), libc::F_GET_SEALS) })
}

/// `fcntl(F_DUPFD_CLOEXEC)`.
pub(crate) fn dup_cloexec(fd: impl AsFd) -> io::Result<OwnedFd> {
    // SAFETY: plain integers; the new descriptor is ours.
    let new = cvt(unsafe { libc::fcntl(fd.as_fd().as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) })?;
    // SAFETY: just returned by the kernel, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// `fstatfs(2)`: true if `fd` is a file on hugetlbfs (a `MFD_HUGETLB`
/// memfd). Its pages come from a fixed pool of huge pages, so a page not
/// reserved (a hole, or never allocated) raises `SIGBUS` when touched once
/// the pool is empty, and mappings must be whole huge pages.
pub(crate) fn is_hugetlbfs(fd: impl AsFd) -> io::Result<bool> {
    // SAFETY: an all-zero `statfs` is a valid value of this plain C struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatfs writes one `statfs` into st; the descriptor is borrowed.
    cvt(unsafe { libc::fstatfs(fd.as_fd().as_raw_fd(), &mut st) })?;
    Ok(st.f_type == libc::HUGETLBFS_MAGIC)
}

/// `fstat(2)`: the file's size and device.
fn size_and_device(fd: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes one `stat` into st; the descriptor is borrowed.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    let size = u64::try_from(st.st_size)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "negative size"))?;
    Ok((size, st.st_dev))
}

/// The device of a file `fstatfs` showed is not on hugetlbfs (0: none yet).
///
/// A file sealed against shrinking is a memfd (no other file takes seals),
/// and memfds live on the kernel's internal mounts (one for tmpfs, one per
/// huge page size), which are never unmounted: a device number keeps naming
/// the same file system for the life of the machine. So once one memfd's
/// device is known to be no hugetlbfs, another on that device needs no
/// `fstatfs`: every region after the first costs one `fstat`.
static NOT_HUGETLBFS_DEVICE: AtomicU64 = AtomicU64::new(0);

/// Why a descriptor cannot be mapped without risking `SIGBUS`.
#[derive(Debug)]
pub(crate) enum Unfit {
    /// `F_GET_SEALS` failed: no memfd that allows sealing.
    NotSealable,
    /// No `F_SEAL_SHRINK`: a holder could shrink it under a mapping.
    Shrinkable,
    /// On hugetlbfs (see [`is_hugetlbfs`]).
    HugeTlb,
    /// A system call failed: its name and error.
    Os(&'static str, io::Error),
}

/// A memory file that stays backed: sealed against shrinking (no `SIGBUS`
/// from a holder truncating it), not on hugetlbfs, at least
/// [`size`](SealedFile::size) bytes long for its whole life. Mapping up to
/// that size is therefore safe without another check.
#[derive(Debug)]
pub(crate) struct SealedFile {
    fd: OwnedFd,
    /// The seals when created, checked or last sealed here; a holder may
    /// add more (never remove any).
    seals: libc::c_int,
    size: u64,
}

impl SealedFile {
    /// A new memfd of `size` bytes, space reserved (`fallocate`: a full
    /// tmpfs fails here, not with `SIGBUS` at first touch) and sealed against
    /// shrinking and growing. Not sealed against sealing, so it can still be
    /// sealed against writes ([`SealedFile::add_seals`]).
    ///
    /// System calls: `memfd_create`, `fallocate`, `fcntl(F_ADD_SEALS)`.
    pub(crate) fn create(
        name: &std::ffi::CStr,
        size: u64,
    ) -> Result<Self, (&'static str, io::Error)> {
        let fd = memfd_create(name).map_err(|e| ("memfd_create", e))?;
        fallocate(&fd, size).map_err(|e| ("fallocate", e))?;
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;
        add_seals(&fd, seals).map_err(|e| ("fcntl(F_ADD_SEALS)", e))?;
        Ok(SealedFile { fd, seals, size })
    }

    /// Checks a descriptor from elsewhere, once: its seals must include
    /// `F_SEAL_SHRINK` and it must not be on hugetlbfs; its size is read.
    ///
    /// System calls: `fcntl(F_GET_SEALS)`, `fstat`, and `fstatfs` only for
    /// a file system this process has not seen yet (see
    /// [`NOT_HUGETLBFS_DEVICE`]).
    pub(crate) fn check(fd: OwnedFd) -> Result<Self, Unfit> {
        let seals = get_seals(&fd).map_err(|_| Unfit::NotSealable)?;
        if seals & libc::F_SEAL_SHRINK == 0 {
            return Err(Unfit::Shrinkable);
        }
        let (size, device) = size_and_device(fd.as_fd()).map_err(|e| Unfit::Os("fstat", e))?;
        if device == 0 || device != NOT_HUGETLBFS_DEVICE.load(Ordering::Relaxed) {
            if is_hugetlbfs(&fd).map_err(|e| Unfit::Os("fstatfs", e))? {
                return Err(Unfit::HugeTlb);
            }
            NOT_HUGETLBFS_DEVICE.store(device, Ordering::Relaxed);
        }
        Ok(SealedFile { fd, seals, size })
    }

    /// The seals as last read or added here (a holder may have added more).
    pub(crate) fn seals(&self) -> libc::c_int {
        self.seals
    }

    /// The seals now (`fcntl(F_GET_SEALS)`).
    pub(crate) fn current_seals(&self) -> io::Result<libc::c_int> {
        get_seals(&self.fd)
    }

    /// Adds `seals` (`fcntl(F_ADD_SEALS)`). `F_SEAL_WRITE` fails with
    /// `EBUSY` while any writable shared mapping of the file exists, in any
    /// process; any seal fails with `EPERM` once `F_SEAL_SEAL` is set.
    pub(crate) fn add_seals(&mut self, seals: libc::c_int) -> io::Result<()> {
        add_seals(&self.fd, seals)?;
        self.seals |= seals;
        Ok(())
    }

    /// The size: the file is at least this long for its whole life.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Another descriptor of the same file (`fcntl(F_DUPFD_CLOEXEC)`),
    /// which stays backed as this one does.
    pub(crate) fn try_clone(&self) -> io::Result<Self> {
        Ok(SealedFile {
            fd: dup_cloexec(&self.fd)?,
            seals: self.seals,
            size: self.size,
        })
    }

    /// Refuses a mapping longer than the file.
    fn fits(&self, len: usize) -> io::Result<()> {
        if len as u64 > self.size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "shorter than the mapping",
            ));
        }
        Ok(())
    }

    /// A shared read-write mapping of the first `len` bytes (at most the
    /// size). A hole a peer punches (`fallocate(PUNCH_HOLE)`, which no seal
    /// stops) reads as zeros and is allocated on touch, which can fail with
    /// `SIGBUS` only if the machine runs out of memory for tmpfs.
    /// `mmap(2)` through `memmap2`; fails (`EPERM`) once the file is sealed
    /// against writes.
    pub(crate) fn map_mut(&self, len: usize) -> io::Result<MmapMut> {
        self.fits(len)?;
        // SAFETY: the file cannot shrink (sealed, checked when this value
        // was made, irrevocable) and is at least `len` long, off hugetlbfs,
        // so every page of the mapping stays backed. Other processes writing
        // the bytes concurrently is what shared memory is; `SharedMemory`'s
        // docs say so.
        unsafe { MmapOptions::new().len(len).map_mut(&self.fd) }
    }

    /// As [`SealedFile::map_mut`], read-only. A file sealed against writes
    /// (`F_SEAL_WRITE`, as far as this value knows) is mapped private
    /// (`MAP_PRIVATE`): its bytes can no longer change, so a private
    /// read-only mapping shows the same bytes, it works on every kernel
    /// (before Linux 6.7 a shared mapping of a write-sealed memfd is refused
    /// with `EPERM`), and it never counts as a writable mapping, so it does
    /// not stand in the way of sealing (see [`SealedFile::add_seals`]).
    pub(crate) fn map(&self, len: usize) -> io::Result<Mmap> {
        self.map_read_only(len, self.seals & libc::F_SEAL_WRITE != 0)
    }

    /// A private read-only mapping (`MAP_PRIVATE`, `PROT_READ`): the bytes
    /// of the file as they are, never written, and no writable mapping in
    /// the kernel's count, so the file can be sealed against writes while
    /// it exists.
    pub(crate) fn map_private(&self, len: usize) -> io::Result<Mmap> {
        self.map_read_only(len, true)
    }

    fn map_read_only(&self, len: usize, private: bool) -> io::Result<Mmap> {
        self.fits(len)?;
        let mut opts = MmapOptions::new();
        opts.len(len);
        if private {
            // SAFETY: as in map_mut; a read-only private mapping is never
            // written, so it shares the file's pages and copies none.
            unsafe { opts.map_copy_read_only(&self.fd) }
        } else {
            // SAFETY: as in map_mut.
            unsafe { opts.map(&self.fd) }
        }
    }
}

impl AsFd for SealedFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
