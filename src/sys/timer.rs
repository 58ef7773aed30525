//! A one-shot timer descriptor (`timerfd`) on the monotonic clock: the
//! reactor's deadline, kept armed across waits so a wait with a timeout
//! need not arm a kernel timer of its own (see `reactor/mod.rs`).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use super::cvt;

/// A `timerfd` on `CLOCK_MONOTONIC` (the clock of [`std::time::Instant`]),
/// non-blocking and close-on-exec. It reads ready once it expires; it is
/// never read, since arming it again resets it.
#[derive(Debug)]
pub(crate) struct Timer(OwnedFd);

impl Timer {
    /// `timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)`.
    pub(crate) fn new() -> io::Result<Timer> {
        // SAFETY: timerfd_create takes plain integers and returns a new
        // descriptor, owned from here on.
        let fd = cvt(unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        })?;
        // SAFETY: a descriptor just returned to us and owned by nobody else.
        Ok(Timer(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// `timerfd_settime`: expires once, `after` from now (at least 1 ns:
    /// zero would disarm it); replaces any earlier setting.
    pub(crate) fn set(&self, after: Duration) -> io::Result<()> {
        let after = after.max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                // Past `time_t`, as good as never.
                tv_sec: libc::time_t::try_from(after.as_secs()).unwrap_or(libc::time_t::MAX),
                tv_nsec: after.subsec_nanos().into(),
            },
        };
        // SAFETY: `spec` is a valid itimerspec for the call's duration; the
        // old-value pointer may be null.
        cvt(unsafe { libc::timerfd_settime(self.0.as_raw_fd(), 0, &spec, std::ptr::null_mut()) })?;
        Ok(())
    }
}

impl AsFd for Timer {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}
