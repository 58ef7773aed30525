//! A shared memory region attached to a request, kept as a descriptor
//! (no mapping) until the request is answered.

use std::os::fd::OwnedFd;

use crate::error::{Error, Result};

/// A shared memory region attached to a request: its id and a descriptor
/// (no mapping), kept until the request is answered (a retry sends it
/// again); each send passes a duplicate.
#[derive(Debug)]
pub(crate) struct Attached {
    pub(super) id: u64,
    pub(super) fd: OwnedFd,
}

impl Attached {
    /// `region`, attached by a duplicate of its descriptor.
    pub(crate) fn new(region: &crate::shm::SharedMemory) -> Result<Self> {
        let fd =
            crate::sys::dup_cloexec(region).map_err(|e| Error::io("fcntl(F_DUPFD_CLOEXEC)", e))?;
        Ok(Attached {
            id: region.id(),
            fd,
        })
    }
}
