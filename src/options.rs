//! The settings the public option types share, each kept once: what both
//! ends of a connection speak ([`LineSettings`]), the parent's buffers for
//! one connection ([`ConnSettings`]), and how a child is forked
//! ([`ChildSettings`]). [`WorkerOptions`](crate::WorkerOptions) holds a
//! connection and a child, [`ConnectOptions`](crate::ConnectOptions) a
//! connection, [`ServerOptions`](crate::ServerOptions) the line and a child
//! (each serving child's end), so no option sits where it has no effect.

use std::os::fd::RawFd;

use crate::error::{Error, Result};
use crate::format::Format;
use crate::framing::DEFAULT_MAX_LINE;
use crate::sys;

/// Default bound on received, untaken message bytes per worker (local or
/// remote): 64 MiB.
pub const DEFAULT_MAX_QUEUED: usize = 64 * 1024 * 1024;

/// Default high-water mark of a worker's output buffer (local or remote):
/// 64 MiB.
pub const DEFAULT_HIGH_WATER: usize = 64 * 1024 * 1024;

/// The line protocol of a connection, the same on both ends.
#[derive(Clone, Debug)]
pub(crate) struct LineSettings {
    pub(crate) format: Format,
    pub(crate) max_line: usize,
}

impl Default for LineSettings {
    fn default() -> Self {
        LineSettings {
            format: Format::Json,
            max_line: DEFAULT_MAX_LINE,
        }
    }
}

/// The parent's end of a connection: its line protocol and the bounds of
/// its buffers.
#[derive(Clone, Debug)]
pub(crate) struct ConnSettings {
    pub(crate) line: LineSettings,
    pub(crate) high_water: usize,
    pub(crate) max_queued: usize,
}

impl Default for ConnSettings {
    fn default() -> Self {
        ConnSettings {
            line: LineSettings::default(),
            high_water: DEFAULT_HIGH_WATER,
            max_queued: DEFAULT_MAX_QUEUED,
        }
    }
}

impl ConnSettings {
    /// Clamped to at least one byte (a bound of zero would pause reading
    /// before anything could be queued).
    pub(crate) fn set_max_queued(&mut self, bytes: usize) {
        self.max_queued = bytes.max(1);
    }
}

/// How a child is forked: its death signal and the descriptors it keeps.
#[derive(Clone, Debug)]
pub(crate) struct ChildSettings {
    pub(crate) death_signal: Option<libc::c_int>,
    pub(crate) keep_fds: Vec<RawFd>,
    /// The child's `Channel` batches replies (see `Channel::set_batch_replies`).
    pub(crate) batch_replies: bool,
}

impl Default for ChildSettings {
    fn default() -> Self {
        ChildSettings {
            death_signal: Some(libc::SIGTERM),
            keep_fds: Vec::new(),
            batch_replies: false,
        }
    }
}

impl ChildSettings {
    /// Checks every kept descriptor: non-negative and open now. Called
    /// before each fork (whether a number is open can only be known then).
    pub(crate) fn check_keep_fds(&self) -> Result<()> {
        for &fd in &self.keep_fds {
            if fd < 0 {
                return Err(Error::BadDescriptor {
                    fd,
                    reason: "is negative",
                });
            }
            if !sys::fd_is_open(fd) {
                return Err(Error::BadDescriptor {
                    fd,
                    reason: "is not open",
                });
            }
        }
        Ok(())
    }
}
