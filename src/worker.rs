//! Local workers: a forked child joined to the parent by a Unix socketpair.
//!
//! This file holds what a worker is from both sides: the options it is
//! spawned with, the handle the parent keeps ([`Worker`]), the child's end
//! ([`Channel`]), and the fork itself. The parent side of the connection is
//! driven by the [`Reactor`](crate::Reactor).

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::panic::{self, AssertUnwindSafe};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::format::Format;
use crate::framing::DEFAULT_MAX_LINE;
use crate::inbound::{Inbound, Msg};
use crate::shm::{self, SharedMemory};
use crate::sys;

/// Default bound on received, untaken message bytes per worker: 64 MiB.
pub const DEFAULT_MAX_QUEUED: usize = 64 * 1024 * 1024;

/// Default high-water mark of a worker's output buffer: 64 MiB.
pub const DEFAULT_HIGH_WATER: usize = 64 * 1024 * 1024;

/// Exit status of a child whose work function panicked.
pub const EXIT_PANIC: i32 = 101;
/// Exit status of a child whose work function returned an error (or whose
/// connection failed).
pub const EXIT_ERROR: i32 = 1;

/// How to spawn a worker. `WorkerOptions::default()` is JSON, a 64 MiB line
/// limit, a 64 MiB output high-water mark, 64 MiB of received messages held
/// before reading pauses, and `SIGTERM` on parent death.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    pub(crate) format: Format,
    pub(crate) max_line: usize,
    pub(crate) high_water: usize,
    pub(crate) death_signal: Option<libc::c_int>,
    pub(crate) keep_fds: Vec<RawFd>,
    pub(crate) max_queued: usize,
    pub(crate) secret: Option<crate::Secret>,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            format: Format::Json,
            max_line: DEFAULT_MAX_LINE,
            high_water: DEFAULT_HIGH_WATER,
            death_signal: Some(libc::SIGTERM),
            keep_fds: Vec::new(),
            max_queued: DEFAULT_MAX_QUEUED,
            secret: None,
        }
    }
}

impl WorkerOptions {
    /// The defaults (see the type's docs).
    pub fn new() -> Self {
        Self::default()
    }

    /// The line format, on both ends.
    pub fn format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// The maximum line length in bytes, not counting the `\n`, on both ends.
    /// Default [`DEFAULT_MAX_LINE`].
    pub fn max_line(mut self, bytes: usize) -> Self {
        self.max_line = bytes;
        self
    }

    /// Output bytes the parent may hold for this worker before `send` returns
    /// [`Error::Backpressure`]. Default [`DEFAULT_HIGH_WATER`].
    pub fn high_water(mut self, bytes: usize) -> Self {
        self.high_water = bytes;
        self
    }

    /// Line bytes of received messages the parent may hold for this worker
    /// before it stops reading its socket (so a worker that floods replies
    /// faster than they are taken blocks instead of filling the parent's
    /// memory). Reading resumes once half is taken. Default
    /// [`DEFAULT_MAX_QUEUED`].
    pub fn max_queued(mut self, bytes: usize) -> Self {
        self.max_queued = bytes.max(1);
        self
    }

    /// For a RemoteWorker ([`Reactor::connect`](crate::Reactor::connect)):
    /// answer the server's authentication challenge with this secret (see
    /// [`Secret`](crate::Secret)). Off by default, so plain Python servers work.
    pub fn secret(mut self, secret: crate::Secret) -> Self {
        self.secret = Some(secret);
        self
    }

    /// The signal the child gets when the parent's forking thread dies
    /// (`PR_SET_PDEATHSIG`); `None` for none. Default `SIGTERM`.
    pub fn death_signal(mut self, signal: Option<i32>) -> Self {
        self.death_signal = signal;
        self
    }

    /// A shared memory region the child inherits: its descriptor stays open
    /// in the child and its mapping is shared, so a work function that
    /// captures a reference to the region reads and writes the same pages.
    pub fn region(self, region: &SharedMemory) -> Self {
        self.keep_fd(region.as_raw_fd())
    }

    /// A descriptor the child keeps open. Every other inherited descriptor
    /// from 3 up is closed in the child; stdin, stdout and stderr stay.
    pub fn keep_fd(mut self, fd: RawFd) -> Self {
        self.keep_fds.push(fd);
        self
    }
}

/// A handle to a worker of a [`Reactor`](crate::Reactor): small, `Copy`, and
/// only meaningful to the reactor that made it.
///
/// Its descriptor ([`Worker::fileno`], [`AsRawFd`]) is the parent's end of the
/// connection. Use it for readiness only (to learn when to call the reactor);
/// never read, write or close it. It is closed once the worker hangs up, and
/// its number may then be reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Worker {
    pub(crate) key: u32,
    pub(crate) gen: u32,
    pub(crate) fd: RawFd,
}

impl Worker {
    /// The parent's descriptor for this worker (see the type's docs).
    pub fn fileno(&self) -> RawFd {
        self.fd
    }

    /// A number unique among the workers this reactor ever made.
    pub fn id(&self) -> u64 {
        (u64::from(self.gen) << 32) | u64::from(self.key)
    }
}

impl AsRawFd for Worker {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

/// A work function's end of the connection, in the child: blocking `recv`
/// and `send` of messages in the worker's format.
///
/// Replies are batched: while more requests are already buffered, `send`
/// only queues, and the queue is written before the next blocking read, when
/// it passes 64 KiB, and when the work function returns.
#[derive(Debug)]
pub struct Channel {
    sock: File,
    /// A Unix socket (descriptors can travel), not TCP.
    unix: bool,
    format: Format,
    inbound: Inbound,
    rbuf: Vec<u8>,
    out: Vec<u8>,
    scratch: Vec<u8>,
    eof: bool,
    /// See [`Channel::set_idle_timeout`].
    idle: Option<std::time::Duration>,
    idle_expired: bool,
}

const CHANNEL_READ: usize = 256 * 1024;
const CHANNEL_READ_MIN: usize = 4096;
const CHANNEL_FLUSH_AT: usize = 64 * 1024;

impl Channel {
    /// A channel over a connected, blocking stream socket (a `UnixStream`,
    /// a `TcpStream`, or its `OwnedFd`).
    pub fn new(sock: impl Into<OwnedFd>, format: Format, max_line: usize) -> Self {
        let sock = File::from(sock.into());
        Channel {
            unix: sys::is_unix_socket(sock.as_raw_fd()),
            sock,
            format,
            inbound: Inbound::new(max_line),
            rbuf: Vec::new(),
            out: Vec::new(),
            scratch: Vec::new(),
            eof: false,
            idle: None,
            idle_expired: false,
        }
    }

    /// Limits how long [`Channel::recv`] waits for a complete line: once
    /// `limit` passes from the moment it starts waiting with no complete
    /// line (bytes without a newline do not count), it shuts the connection
    /// down (the peer reads EOF), fails with [`Error::Timeout`], and reads as
    /// closed (`Ok(None)`) from then on. `None` (the default) or a limit too
    /// long to be a deadline (`Duration::MAX`): no limit. Servers set it
    /// from [`ServerOptions::idle_timeout`](crate::ServerOptions::idle_timeout).
    pub fn set_idle_timeout(&mut self, limit: Option<std::time::Duration>) {
        self.idle = limit;
    }

    /// True once the idle limit closed the connection.
    pub fn idle_expired(&self) -> bool {
        self.idle_expired
    }

    /// The channel's format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The next message; `Ok(None)` once the parent closed its end (or
    /// exited). Per-message errors ([`Error::LineTooLong`],
    /// [`Error::Decode`], [`Error::TruncatedLine`], [`Error::Region`]) fail
    /// that message only; call again for the next. Blocks, after writing any
    /// queued replies; [`Error::Timeout`] once an idle limit
    /// ([`Channel::set_idle_timeout`]) passes. Regions sent with the message are closed; use
    /// [`Channel::recv_regions`] to keep them.
    pub fn recv(&mut self) -> Result<Option<Value>> {
        Ok(self.recv_msg()?.map(|m| m.value))
    }

    /// [`Channel::recv`], with the shared memory regions that came with the
    /// message (mapped read-write, or read-only if sealed against writes).
    pub fn recv_regions(&mut self) -> Result<Option<(Value, Vec<SharedMemory>)>> {
        Ok(self.recv_msg()?.map(|m| (m.value, m.regions)))
    }

    fn recv_msg(&mut self) -> Result<Option<Msg>> {
        let idle_until = self.idle.and_then(crate::reactor::deadline_after);
        loop {
            if let Some(item) = self.inbound.pop() {
                return item.map(Some);
            }
            if self.eof {
                return Ok(None);
            }
            self.flush()?;
            if let Some(until) = idle_until {
                self.await_input(until)?;
            }
            self.fill()?;
        }
    }

    /// Waits until the socket is readable or `until` passes; then the
    /// connection is idle: shut it down and fail with [`Error::Timeout`].
    fn await_input(&mut self, until: std::time::Instant) -> Result<()> {
        loop {
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                self.idle_expired = true;
                self.eof = true;
                // Shut down, not just closed by our exit: the work function
                // may go on, and the peer must learn now. (shutdown(2) is
                // the same call for a Unix socket as for TCP.)
                if let Ok(dup) = self.sock.try_clone() {
                    let _ = std::net::TcpStream::from(OwnedFd::from(dup))
                        .shutdown(std::net::Shutdown::Both);
                }
                return Err(Error::Timeout);
            }
            match sys::poll_readable(self.sock.as_raw_fd(), left) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("poll", e)),
            }
        }
    }

    /// Queues `msg` as one line; writes at once unless more requests are
    /// already buffered (see the type's docs). Blocks while the socket is full.
    pub fn send(&mut self, msg: &Value) -> Result<()> {
        self.format
            .encode_line(msg, &mut self.out, &mut self.scratch)?;
        if self.inbound.inbox.is_empty() || self.out.len() >= CHANNEL_FLUSH_AT {
            self.flush()?;
        }
        Ok(())
    }

    /// Sends `msg` with shared memory regions, at once (the wire form is
    /// described at [`Reactor::send_regions`](crate::Reactor::send_regions)).
    /// Fails with [`Error::Region`], sending nothing, over TCP.
    pub fn send_regions(&mut self, msg: &Value, regions: &[&SharedMemory]) -> Result<()> {
        if regions.is_empty() {
            return self.send(msg);
        }
        if !self.unix {
            return Err(shm::region_error(
                "regions cannot be sent over TCP: descriptors do not cross machines",
            ));
        }
        if regions.len() > sys::MAX_FDS_PER_MESSAGE {
            return Err(shm::region_error("at most 32 regions per message"));
        }
        self.flush()?;
        let ids: Vec<u64> = regions.iter().map(|r| r.id()).collect();
        self.format
            .encode_envelope_line(&ids, msg, &mut self.out, &mut self.scratch)?;
        let mut raw = [0 as RawFd; sys::MAX_FDS_PER_MESSAGE];
        for (slot, r) in raw.iter_mut().zip(regions) {
            *slot = r.as_raw_fd();
        }
        let fd = self.sock.as_raw_fd();
        let first = loop {
            match sys::send_with_fds(fd, &self.out, &raw[..regions.len()]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.out.clear();
                    return Err(Error::io("sendmsg", e));
                }
            }
        };
        self.out.drain(..first);
        self.flush()
    }

    /// Writes every queued reply.
    pub fn flush(&mut self) -> Result<()> {
        let mut done = 0;
        let fd = self.sock.as_raw_fd();
        while done < self.out.len() {
            match sys::send_nosignal(fd, &self.out[done..]) {
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.out.clear();
                    return Err(Error::io("send", e));
                }
            }
        }
        self.out.clear();
        if self.out.capacity() > CHANNEL_FLUSH_AT * 4 {
            self.out = Vec::new();
        }
        Ok(())
    }

    fn fill(&mut self) -> Result<()> {
        // Start small (a child that only ever sees small messages touches
        // one page for it) and double while reads fill the buffer.
        if self.rbuf.is_empty() {
            self.rbuf.resize(CHANNEL_READ_MIN, 0);
        }
        let fd = self.sock.as_raw_fd();
        let mut got = sys::Received::default();
        let n = loop {
            let r = if self.unix {
                sys::recv_with_fds(fd, &mut self.rbuf, &mut got)
            } else {
                self.sock.read(&mut self.rbuf)
            };
            match r {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break 0,
                Err(e) => return Err(Error::io("read", e)),
            }
        };
        if n == 0 {
            self.eof = true;
            self.inbound.finish();
            return Ok(());
        }
        self.inbound.fds_arrived(&mut got);
        self.inbound
            .feed(&self.rbuf[..n], self.format, &mut self.scratch);
        if n == self.rbuf.len() && n < CHANNEL_READ {
            self.rbuf.resize(n * 2, 0);
        }
        Ok(())
    }
}

impl AsRawFd for Channel {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

/// The request→reply loop: every message in, one reply out. Lines that fail
/// to decode are skipped (the peer gets no reply for them).
pub(crate) fn serve_replies<F>(chan: &mut Channel, mut f: F) -> Result<()>
where
    F: FnMut(Value) -> Value,
{
    loop {
        match chan.recv() {
            Ok(Some(msg)) => {
                let reply = f(msg);
                chan.send(&reply)?;
            }
            Ok(None) => return Ok(()),
            Err(e) if e.is_message_error() || matches!(e, Error::TruncatedLine { .. }) => {}
            Err(e) => return Err(e),
        }
    }
}

/// A program to exec instead of running a closure: its stdin and stdout are
/// the worker's socket.
#[derive(Clone, Debug)]
pub struct Exec {
    argv: Vec<CString>,
}

impl Exec {
    /// `program` (looked up in `PATH` if it has no `/`) with `args`.
    /// Fails if any of them holds a NUL byte.
    pub fn new<I, S>(program: impl AsRef<OsStr>, args: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut argv = vec![cstring(program.as_ref())?];
        for a in args {
            argv.push(cstring(a.as_ref())?);
        }
        Ok(Exec { argv })
    }

    /// The program's name, as given.
    pub fn program(&self) -> &std::ffi::CStr {
        &self.argv[0]
    }
}

fn cstring(s: &OsStr) -> Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        Error::io(
            "exec",
            io::Error::new(io::ErrorKind::InvalidInput, "argument holds a NUL byte"),
        )
    })
}

/// Exit status of an exec worker whose program could not be executed.
pub const EXIT_EXEC_FAILED: i32 = 127;

/// What a child does once it is set up.
pub(crate) enum Work<'a, F> {
    /// Run a closure over a [`Channel`].
    Run(F),
    /// Make the socket stdin and stdout and exec.
    Exec(&'a Exec),
}

/// Forks a child that serves `work` over `child_end`. Returns the child's
/// pid in the parent; never returns in the child.
///
/// System calls in the parent: `fork`. In the child: `prctl`, `getppid`,
/// `sigprocmask`, `close_range`, then the work function and `_exit`, or
/// `dup2` and `execvp`.
pub(crate) fn spawn_child<F>(
    opts: &WorkerOptions,
    child_end: OwnedFd,
    work: Work<'_, F>,
) -> Result<libc::pid_t>
where
    F: FnOnce(&mut Channel) -> Result<()>,
{
    // Everything the child needs is prepared before fork: after it, the child
    // allocates nothing until its inherited descriptors are closed.
    let child_fd = child_end.as_raw_fd();
    let mut keep_user = opts.keep_fds.clone();
    keep_user.sort_unstable();
    keep_user.dedup();
    let mut keep = keep_user.clone();
    keep.push(child_fd);
    keep.sort_unstable();
    keep.dedup();
    let exec_argv: Option<Vec<*const libc::c_char>> = match &work {
        Work::Exec(e) => Some(
            e.argv
                .iter()
                .map(|a| a.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect(),
        ),
        Work::Run(_) => None,
    };
    let parent = sys::getpid();
    match sys::fork().map_err(|e| Error::io("fork", e))? {
        sys::Forked::Parent(pid) => {
            drop(child_end);
            Ok(pid)
        }
        sys::Forked::Child => {
            if let Some(signal) = opts.death_signal {
                sys::set_parent_death_signal(signal, parent);
            }
            // A mask blocked by the parent (say, for a signalfd) would block
            // the death signal too.
            sys::unblock_all_signals();
            if let Some(argv) = &exec_argv {
                // Only the socket (as stdin and stdout), stderr and the
                // descriptors asked for survive into the program.
                sys::exec_with_socket(child_fd, &keep_user, argv);
            }
            // Other workers' sockets, the epoll descriptor, listeners: closed
            // by number, so no Rust object (and no epoll registration) is touched.
            sys::close_fds_except(&keep);
            let Work::Run(run) = work else {
                sys::exit_now(EXIT_EXEC_FAILED)
            };
            let mut chan = Channel::new(child_end, opts.format, opts.max_line);
            let outcome = panic::catch_unwind(AssertUnwindSafe(|| run(&mut chan)));
            // Replies queued before a return, an error or a panic still go out.
            let flushed = chan.flush();
            let code = match outcome {
                Ok(Ok(())) if flushed.is_ok() => 0,
                Ok(_) => EXIT_ERROR,
                Err(_) => EXIT_PANIC,
            };
            // Never return, never unwind: the parent's objects live on in
            // this copy of its memory and must not be dropped here.
            sys::exit_now(code)
        }
    }
}
