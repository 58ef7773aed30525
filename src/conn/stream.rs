//! A connection's socket: a socketpair end (`recvmsg`, so descriptors can
//! arrive) or TCP, as one `mio` source.

use std::io::{self, Read};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use mio::net::UnixStream;
use mio::{Interest, Token};

use crate::sys;

/// A worker's connection: a socketpair end (local) or TCP (remote, served).
#[derive(Debug)]
pub(crate) enum Stream {
    Unix(UnixStream),
    Tcp(mio::net::TcpStream),
}

impl Stream {
    /// Reads bytes; on a Unix socket with `recvmsg`, collecting descriptors.
    pub(super) fn read(&mut self, buf: &mut [u8], got: &mut sys::Received) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => sys::recv_with_fds(&*s, buf, got),
            Stream::Tcp(s) => s.read(buf),
        }
    }

    pub(super) fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.shutdown(how),
            Stream::Tcp(s) => s.shutdown(how),
        }
    }

    pub(crate) fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Tcp(s) => s.as_raw_fd(),
        }
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Unix(s) => s.as_fd(),
            Stream::Tcp(s) => s.as_fd(),
        }
    }
}

impl mio::event::Source for Stream {
    fn register(&mut self, r: &mio::Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.register(r, t, i),
            Stream::Tcp(s) => s.register(r, t, i),
        }
    }
    fn reregister(&mut self, r: &mio::Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.reregister(r, t, i),
            Stream::Tcp(s) => s.reregister(r, t, i),
        }
    }
    fn deregister(&mut self, r: &mio::Registry) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.deregister(r),
            Stream::Tcp(s) => s.deregister(r),
        }
    }
}
