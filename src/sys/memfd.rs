//! Sealed memory files: `memfd_create`, `fallocate`, seals, the
//! close-on-exec duplicates that travel with a message, and their mappings.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

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

/// Refuses a mapping that could raise `SIGBUS`: the file must be sealed
/// against shrinking (`F_SEAL_SHRINK`), at least `len` bytes long now, and
/// not on hugetlbfs (see [`is_hugetlbfs`]), so every mapped page stays
/// backed for the mapping's life. (A hole a peer punches reads as zeros and
/// is allocated again on touch, from ordinary memory.)
fn check_stays_backed(fd: BorrowedFd<'_>, len: usize) -> io::Result<()> {
    if get_seals(fd)? & libc::F_SEAL_SHRINK == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not sealed against shrinking",
        ));
    }
    if is_hugetlbfs(fd)? {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "on hugetlbfs (huge pages)",
        ));
    }
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes one `stat` into st; the descriptor is borrowed.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    if u64::try_from(st.st_size).map_or(true, |size| size < len as u64) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "shorter than the mapping",
        ));
    }
    Ok(())
}

/// A shared read-write mapping of the first `len` bytes of a memory file
/// sealed against shrinking and not on hugetlbfs (checked here, with its
/// size: no `SIGBUS` from shrinking; a hole a peer punches reads as zeros and
/// is allocated on touch, which can fail with `SIGBUS` only if the machine
/// runs out of memory for tmpfs). `mmap(2)` through `memmap2`.
pub(crate) fn map_sealed_mut(fd: impl AsFd, len: usize) -> io::Result<MmapMut> {
    let fd = fd.as_fd();
    check_stays_backed(fd, len)?;
    // SAFETY: the file cannot shrink (checked above and irrevocable: seals
    // are never removed) and is at least `len` long, so every page of the
    // mapping stays backed. Other processes writing the bytes concurrently
    // is what shared memory is; `SharedMemory`'s docs say so.
    unsafe { MmapOptions::new().len(len).map_mut(&fd) }
}

/// As [`map_sealed_mut`], read-only.
pub(crate) fn map_sealed(fd: impl AsFd, len: usize) -> io::Result<Mmap> {
    let fd = fd.as_fd();
    check_stays_backed(fd, len)?;
    // SAFETY: as in map_sealed_mut.
    unsafe { MmapOptions::new().len(len).map(&fd) }
}
