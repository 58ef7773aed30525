//! Local workers: a forked child joined to the parent by a Unix socketpair.
//!
//! This file holds what a worker is from both sides: the options it is
//! spawned with, the handle the parent keeps ([`Worker`]), the child's end
//! ([`Channel`]), and the fork itself. The parent side of the connection is
//! driven by the [`Reactor`](crate::Reactor).
//!
//! # What runs in the child
//!
//! A fork copies every lock of the parent in whatever state it was, and only
//! the forking thread exists in the child: a lock another thread held at
//! that moment stays held forever there. So, between `fork` and the work
//! function, a child runs only async-signal-safe system calls (`prctl`,
//! `getppid`, `sigprocmask`, `close_range`; for an exec worker `fcntl`,
//! `dup2`, `sigaction`, `execvp`, `write`, `_exit`), atomic stores, and the
//! allocations of its [`Channel`]. Allocating is safe with glibc, whose
//! `fork` takes every malloc arena lock in the parent and resets them in
//! the child; another allocator must give the same guarantee. Nothing in
//! this path takes a std lock (stdout, stderr, the environment, the panic
//! hook's) or can panic: descriptors are checked before the fork, there is
//! no unchecked arithmetic and no `unwrap`, and the whole child runs under
//! `catch_unwind`, so nothing unwinds into the caller's frames.
//!
//! # Panics in a worker
//!
//! Std's default panic hook takes a process-wide backtrace lock (and, under
//! a test harness, the output-capture lock), so a worker forked while
//! another thread of the parent was panicking would hang at its own first
//! panic. miniray therefore installs its own hook, once per process, in the
//! parent when the first [`Reactor`](crate::Reactor) is created (and never
//! replaces it afterwards). In the parent it only calls the hook that was
//! installed before, so the parent's panics look as they always did. In a
//! worker it never calls that hook (miniray cannot know it takes no lock;
//! so a hook of yours does not run in workers, and `RUST_BACKTRACE` has no
//! effect there): it
//! formats `miniray worker <pid> panicked at <file:line:col>:` and the
//! message into a 1 KiB stack buffer (a longer message is cut at a character
//! boundary and ends in `…`; the text always ends in a newline) and writes
//! it to stderr with one
//! `write(2)`; then the panic unwinds to the `catch_unwind` around the work
//! function and the child exits [`EXIT_PANIC`].
//!
//! What std's panic machinery still does in the worker, and why it cannot
//! hang: it updates the panic counters (atomics and a thread-local),
//! formats the message (allocates), takes the hook's `RwLock` for reading,
//! which waits only if a parent thread was *replacing* the hook
//! (`set_hook`/`take_hook`) at the moment of the fork (readers, that is
//! other threads running a hook, do not block it), and unwinds through
//! libgcc_s, which on glibc 2.35 or later finds unwind tables with
//! `_dl_find_object`, without a lock.
//!
//! What is not covered:
//! * Your own code in the worker taking a lock some parent thread may have
//!   held: `println!`/`print!` (stdout's lock), `eprintln!` (stderr's),
//!   `std::env::var` while a thread calls `set_var`, a `Mutex` shared with
//!   other threads. Reply through the [`Channel`] or write with `write(2)`;
//!   or spawn while the process has no other threads.
//! * Calling `std::panic::set_hook` or `take_hook` in a worker (a write
//!   lock on the hook, which waits for any parent thread that was running a
//!   hook at the fork), or in the parent while another thread spawns.
//! * A hook you install after the first reactor replaces miniray's in the
//!   workers too, and the hang is back; install yours before creating the
//!   first reactor and miniray's chains to it in the parent. A reactor
//!   created, or a first spawn made, from a thread that is already panicking
//!   (say, in a destructor) cannot install the hook; the next spawn does.
//! * Unwinding without a lock needs glibc 2.35 or later (with libgcc's
//!   `_dl_find_object` support); with an older C library the unwinder takes
//!   a loader lock, and a worker forked while another thread held it can
//!   hang at its first panic.
//!
//! A worker that hangs anyway is never lost: give each request a deadline,
//! and past it [`Reactor::kill`](crate::Reactor::kill) the worker and read
//! its [`Error::Closed`] (see there). Dropping or shutting down the reactor
//! kills whatever is still running after the grace period.
//!
//! # Exec workers
//!
//! An [`Exec`] worker's child makes its socket stdin and stdout, keeps
//! stderr and the [`WorkerOptions::keep_fd`]s (close-on-exec cleared),
//! closes every other descriptor, clears the signal mask and sets `SIGPIPE`
//! back to its default, as `std::process::Command` does (Rust ignores
//! `SIGPIPE`, and an ignored signal stays ignored across `exec`, so
//! `yes | head` in the program would print "Broken pipe"); other ignored
//! signals are inherited, as with `Command`. A program that cannot be
//! executed fails the spawn with [`Error::Exec`] naming it and the OS error
//! (reported through a close-on-exec pipe; the child is reaped). One
//! exception, glibc's: `execvp` runs a file of unknown format (`ENOEXEC`)
//! with `/bin/sh`, so such a spawn succeeds and the worker ends with the
//! shell's status (127 if the shell cannot run it either).

use std::any::Any;
use std::ffi::{CString, OsStr};
use std::fmt::{self, Write as _};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::format::Format;
use crate::framing::DEFAULT_MAX_LINE;
use crate::inbound::{Inbound, Msg};
use crate::process::{EXIT_OK, EXIT_PARENT_GONE};
use crate::shm::{self, SharedMemory};
use crate::sys;
use crate::token::Key;

/// Default bound on received, untaken message bytes per worker: 64 MiB.
pub const DEFAULT_MAX_QUEUED: usize = 64 * 1024 * 1024;

/// Default high-water mark of a worker's output buffer: 64 MiB.
pub const DEFAULT_HIGH_WATER: usize = 64 * 1024 * 1024;

pub use crate::process::{EXIT_ERROR, EXIT_EXEC_FAILED, EXIT_PANIC};

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
    ///
    /// Checked when a worker is spawned with these options, before anything
    /// is forked: a negative number, or one not open in the parent at that
    /// moment, fails the spawn with [`Error::BadDescriptor`] naming it. Keep
    /// the descriptor open until the spawn returns.
    pub fn keep_fd(mut self, fd: RawFd) -> Self {
        self.keep_fds.push(fd);
        self
    }

    /// Checks every [`WorkerOptions::keep_fd`]: non-negative and open now.
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

/// A handle to a worker of a [`Reactor`](crate::Reactor): small, `Copy`, and
/// only meaningful to the reactor that made it.
///
/// Its descriptor ([`Worker::fileno`], [`AsRawFd`]) is the parent's end of the
/// connection. Use it for readiness only (to learn when to call the reactor);
/// never read, write or close it. It is closed once the worker hangs up, and
/// its number may then be reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Worker {
    pub(crate) key: Key,
    pub(crate) fd: RawFd,
}

impl Worker {
    /// The parent's descriptor for this worker (see the type's docs).
    pub fn fileno(&self) -> RawFd {
        self.fd
    }

    /// A number unique among the workers this reactor ever made.
    pub fn id(&self) -> u64 {
        (u64::from(self.key.gen) << 32) | u64::from(self.key.slot)
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
        let idle_until = self.idle.and_then(crate::process::deadline_after);
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
    /// Fails with [`Error::Region`], sending nothing, over TCP. With no
    /// regions this is [`Channel::send`]: the plain message, no envelope.
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
        // Queued replies go first, so the sendmsg below carries the envelope
        // line and nothing else (the wire contract in inbound.rs).
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
        self.inbound
            .feed_received(&self.rbuf[..n], &mut got, self.format, &mut self.scratch);
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

/// What a child does once it is set up.
pub(crate) enum Work<'a, F> {
    /// Run a closure over a [`Channel`].
    Run(F),
    /// Make the socket stdin and stdout and exec.
    Exec(&'a Exec),
}

/// Set first thing in every forked worker (and so inherited by anything it
/// forks): from then on [`install_panic_hook`]'s hook writes a panic's
/// message with one raw `write(2)` and never calls the previous hook.
static IN_WORKER: AtomicBool = AtomicBool::new(false);

/// Installs, once per process and in the parent (before its first fork), a
/// panic hook that chains to the previous one, except in a forked worker
/// (see the module docs, "Panics in a worker"). Skipped while the calling
/// thread is panicking, where `take_hook` would panic.
pub(crate) fn install_panic_hook() {
    static INSTALL: Once = Once::new();
    if std::thread::panicking() {
        return;
    }
    INSTALL.call_once_force(|_| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if IN_WORKER.load(Ordering::Relaxed) {
                write_worker_panic(info.location(), info.payload());
            } else {
                previous(info);
            }
        }));
    });
}

/// A panic's message in a worker: formatted into a stack buffer (cut at
/// 1 KiB) and written to stderr with `write(2)`: no lock, no allocation.
fn write_worker_panic(location: Option<&panic::Location<'_>>, payload: &(dyn Any + Send)) {
    let msg = match payload.downcast_ref::<&'static str>() {
        Some(s) => *s,
        None => match payload.downcast_ref::<String>() {
            Some(s) => s.as_str(),
            None => "Box<dyn Any>",
        },
    };
    let mut out = StackText::new();
    let pid = sys::getpid();
    let _ = match location {
        Some(l) => writeln!(out, "miniray worker {pid} panicked at {l}:\n{msg}"),
        None => writeln!(out, "miniray worker {pid} panicked:\n{msg}"),
    };
    sys::write_all_raw(2, out.finish());
}

/// A fixed buffer that `write!` fills. Text past its size is cut at a
/// character boundary and the result ends in `…` and a newline, so a cut
/// message stays valid UTF-8 and never runs into the next line on stderr.
struct StackText {
    buf: [u8; STACK_TEXT],
    len: usize,
    cut: bool,
}

const STACK_TEXT: usize = 1024;
const CUT_MARK: &str = "…\n";

impl StackText {
    fn new() -> Self {
        StackText {
            buf: [0; STACK_TEXT],
            len: 0,
            cut: false,
        }
    }

    /// The text, with the cut mark appended if anything was cut.
    fn finish(&mut self) -> &[u8] {
        if self.cut {
            let end = self.len + CUT_MARK.len();
            if let Some(room) = self.buf.get_mut(self.len..end) {
                room.copy_from_slice(CUT_MARK.as_bytes());
                self.len = end;
            }
            self.cut = false;
        }
        self.buf.get(..self.len).unwrap_or(&self.buf)
    }
}

impl fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.cut {
            return Ok(());
        }
        // Room is kept for the cut mark.
        let room = STACK_TEXT
            .saturating_sub(CUT_MARK.len())
            .saturating_sub(self.len);
        let mut n = s.len();
        if n > room {
            n = room;
            while n > 0 && !s.is_char_boundary(n) {
                n -= 1;
            }
            self.cut = true;
        }
        if let (Some(dst), Some(src)) = (self.buf.get_mut(self.len..self.len + n), s.get(..n)) {
            dst.copy_from_slice(src.as_bytes());
            self.len += n;
        }
        Ok(())
    }
}

/// Forks a child that serves `work` over `child_end`. Returns the child's
/// pid in the parent; never returns in the child.
///
/// Before `fork`: the `keep_fd`s are checked ([`Error::BadDescriptor`]),
/// miniray's panic hook is installed (once per process), and everything the
/// child needs is prepared. System calls in the parent: `fcntl`, `fork`,
/// and for an exec worker `pipe2` and a `read` that waits for the exec
/// (a failed exec is [`Error::Exec`], its child reaped with `waitpid`). In
/// the child: `prctl`, `getppid`, `sigprocmask`, `close_range`, then the
/// work function and `_exit`, or `fcntl`, `dup2`, `sigaction` and `execvp`.
pub(crate) fn spawn_child<F>(
    opts: &WorkerOptions,
    child_end: OwnedFd,
    work: Work<'_, F>,
) -> Result<libc::pid_t>
where
    F: FnOnce(&mut Channel) -> Result<()>,
{
    let child_fd = child_end.as_raw_fd();
    opts.check_keep_fds()?;
    if let Some(&fd) = opts.keep_fds.iter().find(|&&fd| fd == child_fd) {
        // The caller's number was closed and reused for this worker's socket.
        return Err(Error::BadDescriptor {
            fd,
            reason: "was not open (its number went to the worker's own socket)",
        });
    }
    install_panic_hook();
    // Everything the child needs is prepared before fork: after it, the child
    // allocates nothing until its inherited descriptors are closed.
    let mut keep_user = opts.keep_fds.clone();
    keep_user.sort_unstable();
    keep_user.dedup();
    let mut keep = keep_user.clone();
    keep.push(child_fd);
    keep.sort_unstable();
    keep.dedup();
    let exec = match &work {
        Work::Exec(e) => {
            // The program outlives `work` (`'a`): no borrow of `work` is kept.
            let e: &Exec = e;
            let argv: Vec<*const libc::c_char> = e
                .argv
                .iter()
                .map(|a| a.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect();
            let (report, report_w) = sys::exec_error_pipe().map_err(|e| Error::io("pipe2", e))?;
            // What survives into the program: the caller's descriptors, and
            // the error pipe until the exec closes it.
            let mut keep_exec = keep_user.clone();
            keep_exec.push(report_w.as_raw_fd());
            keep_exec.sort_unstable();
            keep_exec.dedup();
            Some((e, argv, report, report_w, keep_exec))
        }
        Work::Run(_) => None,
    };
    let parent = sys::getpid();
    match sys::fork().map_err(|e| Error::io("fork", e))? {
        sys::Forked::Parent(pid) => {
            drop(child_end);
            match exec {
                Some((e, _, report, report_w, _)) => {
                    drop(report_w);
                    exec_outcome(e, pid, report)
                }
                None => Ok(pid),
            }
        }
        sys::Forked::Child => {
            // First of all: any panic from here on (ours or the user's)
            // goes through the raw-write hook, not the parent's.
            IN_WORKER.store(true, Ordering::Relaxed);
            // Belt and braces: nothing below may unwind into the caller's
            // frames, which live on in this copy of the parent's memory.
            let code = match panic::catch_unwind(AssertUnwindSafe(|| {
                if let Some(signal) = opts.death_signal {
                    sys::set_parent_death_signal(signal, parent, EXIT_PARENT_GONE);
                }
                // A mask blocked by the parent (say, for a signalfd) would
                // block the death signal too, and would be inherited by exec.
                sys::unblock_all_signals();
                let work = match (work, &exec) {
                    (_, Some((_, argv, _, report_w, keep_exec))) => {
                        // Only the socket (as stdin and stdout), stderr, the
                        // descriptors asked for and the error pipe survive.
                        sys::exec_with_socket(
                            child_fd,
                            keep_exec,
                            &keep_user,
                            argv,
                            report_w.as_raw_fd(),
                        )
                    }
                    (Work::Run(run), None) => run,
                    (Work::Exec(_), None) => sys::exit_now(EXIT_EXEC_FAILED),
                };
                // Other workers' sockets, the epoll descriptor, listeners:
                // closed by number, so no Rust object (and no epoll
                // registration) is touched.
                sys::close_fds_except(&keep);
                run_worker(child_end, opts, work)
            })) {
                Ok(code) => code,
                Err(payload) => {
                    // Its drop could panic again, outside any catch.
                    std::mem::forget(payload);
                    EXIT_PANIC
                }
            };
            // Never return, never unwind: the parent's objects live on in
            // this copy of its memory and must not be dropped here.
            sys::exit_now(code)
        }
    }
}

/// In the child: the work function over a new [`Channel`], its panic
/// caught; returns the exit status.
fn run_worker<F>(child_end: OwnedFd, opts: &WorkerOptions, run: F) -> i32
where
    F: FnOnce(&mut Channel) -> Result<()>,
{
    let mut chan = Channel::new(child_end, opts.format, opts.max_line);
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| run(&mut chan)));
    // Replies queued before a return, an error or a panic still go out.
    let flushed = chan.flush();
    match outcome {
        Ok(Ok(())) if flushed.is_ok() => EXIT_OK,
        Ok(_) => EXIT_ERROR,
        Err(payload) => {
            // Its drop could panic again, outside any catch.
            std::mem::forget(payload);
            EXIT_PANIC
        }
    }
}

/// In the parent: waits for the exec worker's child to exec; if it could
/// not, reaps it and names the program and the OS error.
fn exec_outcome(e: &Exec, pid: libc::pid_t, report: OwnedFd) -> Result<libc::pid_t> {
    match sys::read_exec_error(report.as_raw_fd()) {
        // Exec'd (the pipe closed with nothing written), or the pipe failed,
        // in which case the worker's Closed status will tell.
        Ok(None) | Err(_) => Ok(pid),
        Ok(Some(errno)) => {
            let _ = sys::wait(pid);
            Err(Error::Exec {
                program: e.program().to_string_lossy().into_owned(),
                source: io::Error::from_raw_os_error(errno),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_panic_message_stays_utf8_and_ends_its_line() {
        let mut out = StackText::new();
        let long = "é".repeat(1100);
        let _ = writeln!(out, "miniray worker 1 panicked at x.rs:1:1:\n{long}");
        let text = std::str::from_utf8(out.finish()).expect("valid UTF-8");
        assert!(text.len() <= STACK_TEXT, "{}", text.len());
        assert!(text.ends_with("…\n"), "{:?}", &text[text.len() - 8..]);

        let mut out = StackText::new();
        let _ = writeln!(out, "short");
        assert_eq!(out.finish(), b"short\n");
    }
}
