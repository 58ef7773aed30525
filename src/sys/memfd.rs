//! Sealed memory files: `memfd_create`, `fallocate`, seals, and the
//! close-on-exec duplicates that travel with a message.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use super::cvt;

/// `memfd_create(2)` with `MFD_CLOEXEC | MFD_ALLOW_SEALING`.
pub(crate) fn memfd_create(name: &std::ffi::CStr) -> io::Result<OwnedFd> {
    // SAFETY: name is NUL-terminated; the returned descriptor is new and ours.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `fallocate(fd, 0, 0, len)`: reserves the space now (and sets the size),
/// so a full tmpfs fails here rather than with SIGBUS at first touch.
pub(crate) fn fallocate(fd: RawFd, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "size too large"))?;
    // SAFETY: plain integers on a descriptor the caller owns.
    cvt(unsafe { libc::fallocate(fd, 0, 0, len) }).map(drop)
}

/// `fcntl(F_ADD_SEALS)`.
pub(crate) fn add_seals(fd: RawFd, seals: libc::c_int) -> io::Result<()> {
    // SAFETY: plain integers on a descriptor the caller owns.
    cvt(unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals) }).map(drop)
}

/// `fcntl(F_GET_SEALS)`.
pub(crate) fn get_seals(fd: RawFd) -> io::Result<libc::c_int> {
    // SAFETY: plain integers on a descriptor the caller owns.
    cvt(unsafe { libc::fcntl(fd, libc::F_GET_SEALS) })
}

/// `fcntl(F_DUPFD_CLOEXEC)`.
pub(crate) fn dup_cloexec(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: plain integers; the new descriptor is ours.
    let new = cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) })?;
    // SAFETY: just returned by the kernel, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}
