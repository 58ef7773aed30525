//! Local workers: a forked child joined to the parent by a Unix socketpair.
//!
//! This file holds what a worker is from both sides: the options a local
//! worker is spawned with ([`WorkerOptions`]), the handle the parent keeps
//! ([`Worker`], for local and remote workers alike), the child's end
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
//! function and the child exits [`EXIT_PANIC`](crate::process::EXIT_PANIC).
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
//! # Process groups
//!
//! Every child miniray forks (a closure worker, an exec worker, a serving
//! child of a [`Server`](crate::Server)) leads a process group of its own:
//! the child calls `setpgid(0, 0)` first thing and the parent
//! `setpgid(pid, pid)` right after the fork, so the group exists before
//! the spawn returns, whichever runs first. What the worker starts (a
//! task's `subprocess.run`, a shell's pipeline) joins that group unless it
//! leaves it, and is ended with the worker:
//!
//! * [`Reactor::kill`](crate::Reactor::kill) signals the group, so a
//!   deadline kill, a pool's `terminate` or the drop of a busy pool ends a
//!   task's subprocesses too;
//! * [`Reactor::shutdown`](crate::Reactor::shutdown), the reactor's drop and
//!   [`Reactor::stop_server`](crate::Reactor::stop_server) send `SIGKILL` to
//!   each child's group before they reap the child (a server first sends
//!   `SIGTERM` to its children's groups).
//!
//! A group is signalled only while its leader is unreaped: a group is named
//! after its leader's pid, which a zombie still holds but a reaped process
//! does not. So a worker that exited and was reaped on its own (its
//! [`Error::Closed`] queued) leaves to themselves whatever processes it left
//! behind. A program that moves itself into another group (`setsid`,
//! `setpgid` to an existing group) is signalled on its own, with what is
//! left of its first group.
//!
//! A group changes how the terminal treats workers. The terminal's
//! `Ctrl-C` (and `Ctrl-Z`, `Ctrl-\`) goes to the foreground group, the
//! parent's, so it no longer reaches workers directly: a worker still ends
//! when the parent dies, by its death signal
//! ([`WorkerOptions::death_signal`], `SIGTERM` by default, through
//! `PR_SET_PDEATHSIG`), but what the worker started gets no death signal of
//! its own and outlives a parent killed by `Ctrl-C`, unless the worker ends
//! it (a parent that catches `SIGINT` and drops its pool or reactor ends it
//! through the group). A worker is a background group for the terminal: one
//! that reads the terminal is stopped (`SIGTTIN`), and one that writes to it
//! is too when `stty tostop` is set (off by default). An exec worker's
//! stdin is its socket, so only stderr reaches the terminal.
//!
//! # Errors from a worker
//!
//! A worker never fails silently. When it cannot answer a request it sends
//! an *error reply* in place of the reply, an ordinary line in the
//! connection's format:
//!
//! ```text
//! {"miniray.error": {"kind": "panic", "message": "panicked at src/main.rs:9:13: index out of bounds"}}
//! ```
//!
//! and the caller's [`Reactor::recv`](crate::Reactor::recv) returns it as
//! [`Error::Remote`] `{ kind, message }`, in order with the other replies:
//!
//! * `"panic"`: the closure (or the work function) panicked; the message is
//!   the panic's, with where it happened. The worker then exits
//!   [`EXIT_PANIC`](crate::process::EXIT_PANIC): [`Error::Closed`] follows,
//!   and requests queued behind the one that panicked are lost with it.
//! * `"error"`: a [`Reactor::spawn_channel`](crate::Reactor::spawn_channel)
//!   work function returned `Err`; the worker exits
//!   [`EXIT_ERROR`](crate::process::EXIT_ERROR).
//! * `"decode"`, `"line too long"`, `"region"`: a request that failed on its
//!   own (it did not decode into the closure's argument type, in either
//!   format: a client speaking the wrong format learns it in one round
//!   trip); the worker answers it so and goes on serving.
//!
//! A Python peer reads the error reply as a dict, and a Python worker can
//! send one (say, for an exception) to have the caller's `recv` return it
//! as [`Error::Remote`]. Any line of exactly this shape is read as an error
//! reply: `miniray.error` is a reserved key, as `miniray.regions` is. The
//! reply is recognized in either format whatever the connection's.
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

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use crate::error::{Error, Result};
use crate::format::Format;
use crate::options::{ChildSettings, ConnSettings};
use crate::shm::SharedMemory;
use crate::token::Key;

pub use crate::channel::Channel;

pub use crate::options::{DEFAULT_HIGH_WATER, DEFAULT_MAX_QUEUED};

/// How to spawn a local worker ([`Reactor::spawn_with`](crate::Reactor::spawn_with),
/// [`spawn_channel`](crate::Reactor::spawn_channel),
/// [`spawn_exec`](crate::Reactor::spawn_exec)): the connection's line
/// format and buffers, and how the child is forked.
///
/// `WorkerOptions::default()` is JSON, a 64 MiB line limit, a 64 MiB output
/// high-water mark, 64 MiB of received messages held before reading pauses,
/// and `SIGTERM` on parent death. A remote worker
/// ([`Reactor::connect`](crate::Reactor::connect)) takes
/// [`ConnectOptions`](crate::ConnectOptions) instead, and a
/// [`Server`](crate::Server)'s children take their settings from
/// [`ServerOptions`](crate::ServerOptions).
#[derive(Clone, Debug, Default)]
pub struct WorkerOptions {
    pub(crate) conn: ConnSettings,
    pub(crate) child: ChildSettings,
}

impl WorkerOptions {
    /// The defaults (see the type's docs).
    pub fn new() -> Self {
        Self::default()
    }

    /// The line format, on both ends.
    pub fn format(mut self, format: Format) -> Self {
        self.conn.line.format = format;
        self
    }

    /// The maximum line length in bytes, not counting the `\n`, on both ends.
    /// Default [`DEFAULT_MAX_LINE`](crate::framing::DEFAULT_MAX_LINE).
    pub fn max_line(mut self, bytes: usize) -> Self {
        self.conn.line.max_line = bytes;
        self
    }

    /// Output bytes the parent may hold for this worker before `send` returns
    /// [`Error::Backpressure`]. Default [`DEFAULT_HIGH_WATER`].
    pub fn high_water(mut self, bytes: usize) -> Self {
        self.conn.high_water = bytes;
        self
    }

    /// Line bytes of received messages the parent may hold for this worker
    /// before it stops reading its socket (so a worker that floods replies
    /// faster than they are taken blocks instead of filling the parent's
    /// memory). Reading resumes once half is taken. At least 1 (0 counts
    /// as 1). Default [`DEFAULT_MAX_QUEUED`].
    pub fn max_queued(mut self, bytes: usize) -> Self {
        self.conn.set_max_queued(bytes);
        self
    }

    /// The signal the child gets when the parent's forking thread dies
    /// (`PR_SET_PDEATHSIG`); `None` for none. Default `SIGTERM`.
    pub fn death_signal(mut self, signal: Option<i32>) -> Self {
        self.child.death_signal = signal;
        self
    }

    /// A shared memory region the child inherits: its descriptor stays open
    /// in the child and its mapping comes with the fork, so the child's copy
    /// of a handle to the region reads (and, unless it is
    /// [sealed read-only](SharedMemory::seal_read_only), writes) the same
    /// pages. Every worker spawned with these options inherits it, including
    /// those a pool starts to replace workers that ended; keep the region
    /// alive (and open) as long as workers may be spawned.
    ///
    /// How the work function reaches the region: a pool's function
    /// ([`Pool::new`](crate::Pool::new)) must be `'static`, so a captured
    /// `&SharedMemory` does not compile there; move an owned handle in, an
    /// `Rc<SharedMemory>` (an `Arc` for [`PoolHandle`](crate::PoolHandle),
    /// whose function must be `Send`). Only [`Reactor::spawn_channel`](crate::Reactor::spawn_channel)
    /// and its kin, which run the closure during the spawn, take a borrow.
    ///
    /// ```
    /// use std::rc::Rc;
    /// use miniray::{Pool, PoolOptions, SharedMemory, WorkerOptions};
    ///
    /// let mut region = SharedMemory::from_slice("table", &[10u32, 20, 30])?;
    /// region.seal_read_only()?;
    /// let region = Rc::new(region);
    /// let opts = PoolOptions::new()
    ///     .workers(2)
    ///     .worker_options(WorkerOptions::new().region(&region));
    /// let table = Rc::clone(&region); // owned by the work function
    /// let mut pool = Pool::new(&opts, move |i: usize| table.view::<u32>().expect("u32s")[i])?;
    /// let got: Vec<u32> = pool.map([2, 0]).map(|r| r.expect("task")).collect();
    /// assert_eq!(got, [30, 10]);
    /// # Ok::<(), miniray::Error>(())
    /// ```
    pub fn region(self, region: &SharedMemory) -> Self {
        self.keep_fd(region.as_raw_fd())
    }

    /// A descriptor the child keeps open. Every other inherited descriptor
    /// from 3 up is closed in the child; stdin, stdout and stderr stay.
    ///
    /// Checked when a worker is spawned with these options, before anything
    /// is forked (whether a number is open can only be known then): a
    /// negative number, or one not open in the parent at that moment, fails
    /// the spawn with [`Error::BadDescriptor`] naming it. Keep the
    /// descriptor open until the spawn returns.
    pub fn keep_fd(mut self, fd: RawFd) -> Self {
        self.child.keep_fds.push(fd);
        self
    }

    /// Lets the child's closure batch its replies (off by default: each
    /// reply is written before the next request is worked on). With
    /// batching, replies wait while more requests are buffered, written in
    /// larger chunks: more pipelined throughput for tiny messages, but a
    /// slow request delays the finished replies queued before it. See
    /// [`Channel::set_batch_replies`](crate::Channel::set_batch_replies).
    /// Exec workers write their own output; this has no effect on them.
    pub fn batch_replies(mut self, batch: bool) -> Self {
        self.child.batch_replies = batch;
        self
    }
}

/// A handle to a worker of a [`Reactor`](crate::Reactor): a local worker
/// (forked, running a closure or an [`Exec`] program) or a remote worker
/// (a TCP connection to a [`Server`](crate::Server), made by
/// [`Reactor::connect`](crate::Reactor::connect)). Small, `Copy`, and only
/// meaningful to the reactor that made it.
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

    /// A small number for logs, unique among the handles of every reactor
    /// of this process: 1, 2, 3... in the order the reactors' entries were
    /// made (servers, pending handshakes and serving children draw from the
    /// same counter, so a reactor's workers need not be consecutive). Not
    /// reused until 2³² entries were made. `Display` writes "worker 7".
    pub fn id(&self) -> u64 {
        // The key's generation is already that process-wide counter; the
        // slot (reused) is an internal detail.
        u64::from(self.key.gen)
    }
}

impl std::fmt::Display for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "worker {}", self.id())
    }
}

impl AsRawFd for Worker {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

/// A program to exec instead of running a closure: its stdin and stdout are
/// the worker's socket.
///
/// The program gets the parent's environment at spawn time, less
/// `MINIRAY_SECRET` ([`SECRET_ENV`](crate::SECRET_ENV): a program never
/// inherits the secret; set it with [`Exec::env`] to pass it on), plus
/// `PYTHONUNBUFFERED=1` unless that variable is already set there or with
/// [`Exec::env`]: its stdout is a socket, and a Python program would
/// otherwise buffer its `print`s and answer nothing until it exits (the
/// common case of a Python worker, made to work; any other program must
/// still flush its output after each line). Set `PYTHONUNBUFFERED` to an
/// empty value with [`Exec::env`] to keep Python's buffering.
///
/// The program's exit code is its own (a Python program's uncaught
/// exception exits 1), not one of miniray's `EXIT_*` codes: put it in words
/// with [`describe_as`](crate::process::describe_as)`(`[`ChildKind::Exec`](crate::process::ChildKind::Exec)`, status)`
/// ("exited with status 1"). The `Display` of [`Error::Closed`] and of the
/// types holding a bare status reads codes as a closure worker's.
#[derive(Clone, Debug)]
pub struct Exec {
    pub(crate) argv: Vec<CString>,
    /// `KEY=VALUE` entries set for the program, over the parent's.
    env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
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
        Ok(Exec {
            argv,
            env: Vec::new(),
        })
    }

    /// Sets `key` to `value` in the program's environment (over the
    /// parent's value, if any). Fails if either holds a NUL byte, or the
    /// key an `=`.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Result<Self> {
        let (key, value) = (key.as_ref(), value.as_ref());
        if key.as_encoded_bytes().contains(&b'=') || key.is_empty() {
            return Err(Error::io(
                "exec environment",
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "bad variable name"),
            ));
        }
        cstring(key)?;
        cstring(value)?;
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
        Ok(self)
    }

    /// The program's environment as `KEY=VALUE` strings: the parent's now
    /// less [`SECRET_ENV`](crate::SECRET_ENV) (a program never inherits the
    /// secret), overridden by [`Exec::env`], plus `PYTHONUNBUFFERED=1` if
    /// unset.
    pub(crate) fn environment(&self) -> Vec<CString> {
        let mut vars: Vec<(std::ffi::OsString, std::ffi::OsString)> = std::env::vars_os()
            .filter(|(k, _)| k != crate::auth::SECRET_ENV)
            .filter(|(k, _)| !self.env.iter().any(|(ours, _)| ours == k))
            .collect();
        vars.extend(self.env.iter().cloned());
        if !vars.iter().any(|(k, _)| k == "PYTHONUNBUFFERED") {
            vars.push(("PYTHONUNBUFFERED".into(), "1".into()));
        }
        vars.into_iter()
            .filter_map(|(k, v)| {
                let mut kv = k.into_encoded_bytes();
                kv.push(b'=');
                kv.extend_from_slice(v.as_encoded_bytes());
                // A variable holding a NUL cannot be passed; it is left out.
                CString::new(kv).ok()
            })
            .collect()
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
