//! Sealed memory files: `memfd_create`, `fallocate`, seals, and the
//! close-on-exec duplicates that travel with a message.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

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
