//! The reactor's per-worker API: spawning local workers, sending, closing,
//! signalling and receiving.

use std::io;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use mio::net::UnixStream;
use mio::Interest;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::Reactor;
use crate::channel::Channel;
use crate::conn::{State, Stream};
use crate::envelope;
use crate::error::{Error, Result};
use crate::fork;
use crate::format::Format;
use crate::inbound::Msg;
use crate::process::{deadline_after, Signal};
use crate::serve::{self, Infallible};
use crate::server::is_fd_exhaustion;
use crate::shm::SharedMemory;
use crate::sys;
use crate::worker::{self, Worker, WorkerOptions};

impl Reactor {
    /// Spawns a local worker with default options that answers each message
    /// with `f(message)`.
    ///
    /// `f` takes any `DeserializeOwned` request type and returns any
    /// `Serialize` reply type (annotate the closure's argument:
    /// `|job: Job| ...`); each reply is written before the next request is
    /// worked on. A request that does not decode into the argument type,
    /// or a reply the format cannot encode, is answered with an error reply
    /// ([`Error::Remote`] with kind `"decode"` or `"encode"` at the
    /// caller's `recv`) and the worker goes on.
    ///
    /// If `f` panics, the caller reads [`Error::Remote`] with kind
    /// `"panic"` and the panic's message and location in that request's
    /// place, then [`Error::Closed`] with status
    /// [`EXIT_PANIC`](crate::process::EXIT_PANIC) ("exited with 101
    /// (panicked)"); the child also writes the message to its stderr.
    /// Requests still queued to that worker are lost with it (keep one
    /// request in flight per worker when each must be retried, or use a
    /// [`Pool`](crate::Pool)). A message sent with regions reaches `f`
    /// without them (use [`Reactor::spawn_channel`] and
    /// [`Channel::recv_regions`](crate::Channel::recv_regions)).
    ///
    /// System calls: `socketpair`, `fork`, `fcntl`, `epoll_ctl`.
    pub fn spawn<F, A, R>(&mut self, f: F) -> Result<Worker>
    where
        F: FnMut(A) -> R,
        A: DeserializeOwned,
        R: Serialize,
    {
        self.spawn_with(&WorkerOptions::default(), f)
    }

    /// Spawns a local worker that answers each message with `f(message)`,
    /// set up with `opts` (see [`Reactor::spawn`] for what a failed request
    /// gets). The child exits 0 when the parent closes the connection.
    pub fn spawn_with<F, A, R>(&mut self, opts: &WorkerOptions, f: F) -> Result<Worker>
    where
        F: FnMut(A) -> R,
        A: DeserializeOwned,
        R: Serialize,
    {
        self.spawn_channel(opts, move |chan| serve::serve(chan, &mut Infallible(f)))
    }

    /// Spawns a local worker that runs `work` with the child's [`Channel`]:
    /// full control over what it receives and sends. The child exits 0 when
    /// `work` returns `Ok`, [`process::EXIT_ERROR`](crate::process::EXIT_ERROR) on `Err` and
    /// [`process::EXIT_PANIC`](crate::process::EXIT_PANIC) if it panics.
    pub fn spawn_channel<F>(&mut self, opts: &WorkerOptions, work: F) -> Result<Worker>
    where
        F: FnOnce(&mut Channel) -> Result<()>,
    {
        self.spawn_local(opts, fork::Work::Run(work))
    }

    /// Spawns a local worker that execs `program`: the child makes its
    /// socket the program's stdin and stdout, keeps stderr and the
    /// descriptors given to [`WorkerOptions::keep_fd`], closes the rest and
    /// execs with an empty signal mask and `SIGPIPE` at its default.
    /// `PR_SET_PDEATHSIG` survives the exec. Any program that reads and
    /// writes one message per line in the worker's format is a worker; one
    /// that cannot be executed fails the spawn with [`Error::Exec`].
    ///
    /// The program must flush its output after every line: its stdout is a
    /// socket, not a terminal, so a program that buffers answers nothing
    /// until it exits. Python does buffer; miniray sets `PYTHONUNBUFFERED=1`
    /// in the program's environment unless it is set already (see [`Exec`](crate::Exec)),
    /// so a Python worker that `print`s its replies just works.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use miniray::{py, Exec, Reactor, Value, WorkerOptions};
    /// # fn main() -> miniray::Result<()> {
    /// let mut reactor = Reactor::new()?;
    /// let echo = Exec::new(
    ///     "python3",
    ///     ["-u", "-c", "import sys\nfor line in sys.stdin: print(line, end='')"],
    /// )?;
    /// let w = reactor.spawn_exec(&WorkerOptions::new(), &echo)?;
    /// reactor.send(w, &py!({"n": 1}))?;
    /// assert_eq!(reactor.recv::<Value>(w, Some(Duration::from_secs(10)))?, py!({"n": 1}));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// System calls: `socketpair`, `pipe2`, `fork`, `read` (until the exec),
    /// then in the child `dup2`, `close_range`, `sigaction`, `execvp`.
    pub fn spawn_exec(&mut self, opts: &WorkerOptions, program: &worker::Exec) -> Result<Worker> {
        self.spawn_local::<fn(&mut Channel) -> Result<()>>(opts, fork::Work::Exec(program))
    }

    fn spawn_local<F>(&mut self, opts: &WorkerOptions, work: fork::Work<'_, F>) -> Result<Worker>
    where
        F: FnOnce(&mut Channel) -> Result<()>,
    {
        // Before the socketpair, which could take a closed keep_fd's number.
        opts.child.check_keep_fds()?;
        // Before forking: a child the registry has no room for would only be
        // killed again.
        if !self.tokens.has_room() {
            return Err(crate::registry::Full.into());
        }
        // An exec worker's socket is its stdin and stdout, inherited by
        // whatever it starts, so it may outlive the worker: watch its exit
        // from spawn. A closure worker's socket is close-on-exec (only a raw
        // fork in its work function could share it), and a pidfd each would
        // add a descriptor to every later fork's table: watched from hang-up.
        let exec = match &work {
            fork::Work::Exec(program) => Some(*program),
            fork::Work::Run(_) => None,
        };
        let watch_now = exec.is_some();
        let pair = match std::os::unix::net::UnixStream::pair() {
            // Out of descriptors: early pidfds are a convenience, sockets
            // are not. Give two back (a socketpair needs two) and retry.
            Err(e) if is_fd_exhaustion(&e) && self.give_back_pidfds(2) > 0 => {
                std::os::unix::net::UnixStream::pair()
            }
            other => other,
        };
        let (parent_end, child_end) = pair.map_err(|e| Error::io("socketpair", e))?;
        let pid = match fork::spawn_child(&opts.conn.line, &opts.child, child_end.into(), work) {
            Ok(pid) => pid,
            // The exec error pipe found no room: likewise, give back and
            // start over (the socketpair was closed with the error).
            Err(Error::Io {
                op: "pipe2",
                source,
            }) if is_fd_exhaustion(&source) => match exec {
                Some(program) if self.give_back_pidfds(2) > 0 => {
                    drop(parent_end);
                    return self.spawn_local(opts, fork::Work::<F>::Exec(program));
                }
                _ => {
                    return Err(Error::Io {
                        op: "pipe2",
                        source,
                    })
                }
            },
            Err(e) => return Err(e),
        };
        let sock = parent_end
            .set_nonblocking(true)
            .map_err(|e| Error::io("fcntl", e))
            .map(|()| Stream::Unix(UnixStream::from_std(parent_end)));
        match sock.and_then(|sock| {
            self.insert_conn(sock, Some(pid), &opts.conn, State::Open, Interest::READABLE)
        }) {
            Ok(w) => {
                if watch_now && self.watch_exit(w, true) {
                    self.note_early_watch(w);
                }
                Ok(w)
            }
            Err(e) => {
                // The child's end is closed with ours; make sure it is gone.
                crate::process::kill_reap(pid);
                Err(e)
            }
        }
    }

    /// The worker's process id, while it has not been reaped.
    pub fn pid(&self, w: Worker) -> Option<i32> {
        let c = self.conn(w).ok()?;
        c.running_pid()
    }

    /// The worker's format.
    pub fn format(&self, w: Worker) -> Result<Format> {
        self.conn(w).map(|c| c.format())
    }

    /// Line bytes received from the worker and not yet taken (by
    /// `try_recv`/`recv`). Reading pauses past
    /// [`WorkerOptions::max_queued`](crate::WorkerOptions::max_queued).
    pub fn queued_input(&self, w: Worker) -> Result<usize> {
        self.conn(w).map(|c| c.queued_bytes())
    }

    /// Bytes queued for the worker and not yet written.
    pub fn pending_output(&self, w: Worker) -> Result<usize> {
        self.conn(w).map(|c| c.pending_output())
    }

    /// Sends `msg` to the worker. Never blocks (see the type's docs): the
    /// line is written at once (one non-blocking `send(2)`) when nothing is
    /// queued ahead of it, and otherwise queued behind what is, to be
    /// written as the socket takes it (see the crate docs' Embedding
    /// section).
    ///
    /// Errors: [`Error::Backpressure`] past the high-water mark (nothing
    /// queued), [`Error::Closed`] once the worker is closing or closed,
    /// [`Error::Encode`], [`Error::UnknownWorker`].
    pub fn send<T: Serialize + ?Sized>(&mut self, w: Worker, msg: &T) -> Result<()> {
        self.queue(w, Vec::new(), |f, out, scratch| {
            f.encode_line(msg, out, scratch)
        })
    }

    /// Queues `msg` with shared memory regions: the receiver gets the
    /// message together with its own handles to the same regions
    /// ([`Reactor::recv_regions`], [`Channel::recv_regions`]). Name regions
    /// in `msg` by [`SharedMemory::id`], never by descriptor.
    ///
    /// On the wire the line is the envelope
    /// `{"miniray.regions": [id, ...], "msg": msg}` in the worker's format,
    /// whose first `sendmsg` starts at the line, carries nothing past its
    /// newline and holds the regions' descriptors as `SCM_RIGHTS` in id
    /// order (a line over 64 KiB, or a short write, sends the rest of the
    /// line as plain bytes after it).
    /// A line is read as an envelope only if descriptors came with it, so a
    /// message of the envelope's shape sent with [`Reactor::send`] arrives
    /// unchanged. With no regions this is [`Reactor::send`]: the plain
    /// message, no envelope. Over TCP this fails at once with
    /// [`Error::Region`] and nothing is queued. At most 32 regions per
    /// message.
    ///
    /// If the kernel refuses the descriptors when the line is written (for
    /// `ETOOMANYREFS`: the sending user has more descriptors in flight than
    /// its open-file limit, which a receiver that reads late can cause), that
    /// message alone is dropped and the worker's events carry
    /// [`Error::Io`] with `op` `"sendmsg with region descriptors"` in its
    /// place; the worker stays open and later messages are sent.
    ///
    /// System calls: `fcntl(F_DUPFD_CLOEXEC)` per region now (the duplicate
    /// is closed once sent), `sendmsg` when the line is written.
    pub fn send_regions<T: Serialize + ?Sized>(
        &mut self,
        w: Worker,
        msg: &T,
        regions: &[&SharedMemory],
    ) -> Result<()> {
        if regions.is_empty() {
            return self.send(w, msg);
        }
        envelope::check_regions(regions, self.conn(w)?.is_tcp())?;
        let fds = regions
            .iter()
            .map(sys::dup_cloexec)
            .collect::<io::Result<Vec<_>>>()
            .map_err(|e| Error::io("fcntl(F_DUPFD_CLOEXEC)", e))?;
        self.queue(w, fds, |f, out, scratch| {
            envelope::encode_envelope_line(f, regions, msg, out, scratch)
        })
    }

    /// Encodes one line straight into the worker's output buffer (with the
    /// descriptors to send with it) and schedules the write.
    pub(super) fn queue<E>(&mut self, w: Worker, fds: Vec<OwnedFd>, encode: E) -> Result<()>
    where
        E: FnOnce(Format, &mut Vec<u8>, &mut Vec<u8>) -> Result<()>,
    {
        let conn = self.tokens.conn_mut(w.key).ok_or(Error::UnknownWorker)?;
        if conn.queue(fds, &mut self.scratch, !self.batching, encode)? {
            self.flush_conn(w);
        } else if conn.mark_dirty() {
            self.dirty.push(w);
        }
        Ok(())
    }

    /// Closes the worker's input: queued messages are written, then the
    /// socket's write side is shut down so the child reads EOF. Replies
    /// still arrive; [`Error::Closed`] follows when the child exits.
    pub fn close(&mut self, w: Worker) -> Result<()> {
        let conn = self.conn_mut(w)?;
        if conn.begin_close() {
            self.flush_conn(w);
        }
        Ok(())
    }

    /// Sends `signal` to the worker's process group (while the worker has
    /// not been reaped): the worker and whatever it started that stayed in
    /// its group, such as a task's subprocesses (see
    /// [`worker`](crate::worker#process-groups)). To signal the worker's
    /// process alone, pass [`Reactor::pid`] to `libc::kill`.
    /// System calls: `getpgid`, `kill`.
    ///
    /// Errors: [`Error::Closed`] once the worker was reaped (its pid may
    /// belong to another process by then), and [`Error::UnknownWorker`] once
    /// that `Closed` was returned; for a remote worker
    /// ([`Reactor::connect`]), whose process runs on the server's side,
    /// [`Error::Io`] with `op` `"kill"` and kind
    /// [`Unsupported`](std::io::ErrorKind::Unsupported) ("not a local
    /// process"), whatever its state; [`Error::UnknownWorker`].
    ///
    /// This is how a worker that never answers (stuck in its own code, or
    /// hung on a lock some other thread of the parent held when it was
    /// forked: see [`worker`](crate::worker#panics-in-a-worker)) is
    /// recovered. miniray sets no deadline of its own: keep one per request;
    /// when [`Reactor::recv`] returns [`Error::Timeout`], or a deadline passes
    /// while [`Reactor::wait_any`] never returns the worker, send `SIGKILL`
    /// (which no worker can ignore or block) and read the worker's events
    /// until [`Error::Closed`]: its status carries the signal, and by then
    /// the child is reaped, so no zombie is left. Workers still running when
    /// the reactor is dropped or shut down are killed after the grace period
    /// ([`Reactor::set_grace`]) and reaped too.
    ///
    /// `signal` is a [`Signal`] (`Signal::KILL`) or a plain number such as
    /// `libc::SIGKILL`:
    ///
    /// ```
    /// use std::os::unix::process::ExitStatusExt; // ExitStatus::signal
    /// use std::time::Duration;
    /// use miniray::{Error, Reactor, Signal};
    /// # fn main() -> miniray::Result<()> {
    /// let mut reactor = Reactor::new()?;
    /// let w = reactor.spawn(|_: String| -> String { loop {
    ///     std::thread::sleep(Duration::from_secs(1)); // never answers
    /// }})?;
    /// reactor.send(w, &"ping")?;
    /// match reactor.recv::<String>(w, Some(Duration::from_millis(100))) {
    ///     Err(Error::Timeout) => reactor.kill(w, Signal::KILL)?,
    ///     other => panic!("{other:?}"),
    /// }
    /// loop {
    ///     match reactor.recv::<String>(w, Some(Duration::from_secs(10))) {
    ///         Err(Error::Closed { status }) => {
    ///             assert_eq!(status.and_then(|s| s.signal()), Some(Signal::KILL.as_raw()));
    ///             assert_eq!(Error::Closed { status }.to_string(), "worker closed: killed by SIGKILL");
    ///             break;
    ///         }
    ///         Ok(_) => {} // a reply sent before the kill
    ///         Err(e) if e.is_message_error() => {}
    ///         Err(e) => return Err(e),
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn kill(&mut self, w: Worker, signal: impl Into<Signal>) -> Result<()> {
        let signal = signal.into().as_raw();
        let conn = self.conn(w)?;
        if let Some(status) = conn.exit() {
            // Reaped already: the pid may belong to someone else now.
            return Err(Error::Closed { status });
        }
        match (conn.pid(), conn.state()) {
            // A remote worker: its process is the server's, on its machine.
            (None, _) => Err(Error::io(
                "kill",
                io::Error::new(io::ErrorKind::Unsupported, "not a local process"),
            )),
            (_, State::Done) => Err(Error::Closed { status: None }),
            // Unreaped (checked above), so the group's number is still its.
            (Some(pid), _) => {
                crate::process::signal_group(pid, signal).map_err(|e| Error::io("kill", e))
            }
        }
    }

    /// The worker's next queued event without waiting or polling: `Ok(None)`
    /// when nothing is queued, `Ok(Some(msg))` for a message, `Err` for a
    /// failed message or, last of all, [`Error::Closed`] (after which the
    /// handle is unknown).
    ///
    /// The line is decoded here, into the `T` asked for (received lines wait
    /// as bytes until then): a message that does not fit `T` fails alone
    /// with [`Error::Decode`]
    /// ([`DecodeErrorKind::Mismatch`](crate::DecodeErrorKind::Mismatch)),
    /// and the next call reads the next one. Any `T: DeserializeOwned`
    /// works; [`Value`](crate::Value) takes whatever a Python peer sends.
    pub fn try_recv<T: DeserializeOwned>(&mut self, w: Worker) -> Result<Option<T>> {
        // Regions that came with the message are closed here.
        let format = self.conn(w)?.format();
        match self.try_recv_msg(w)? {
            Some(m) => m.decode(format).map(Some),
            None => Ok(None),
        }
    }

    /// [`Reactor::try_recv`], with the shared memory regions that came with
    /// the message (see [`Reactor::send_regions`]).
    pub fn try_recv_regions<T: DeserializeOwned>(
        &mut self,
        w: Worker,
    ) -> Result<Option<(T, Vec<SharedMemory>)>> {
        let format = self.conn(w)?.format();
        match self.try_recv_msg(w)? {
            Some(m) => m.decode_regions(format).map(Some),
            None => Ok(None),
        }
    }

    pub(super) fn try_recv_msg(&mut self, w: Worker) -> Result<Option<Msg>> {
        let conn = self.conn_mut(w)?;
        let item = conn.pop();
        if conn.resume_reading() {
            // The consumer caught up: read what the worker sent meanwhile.
            self.read_conn(w);
            // An exit seen while paused is told once the data before it is in.
            self.tell_exit(w);
        }
        match item {
            None => Ok(None),
            Some(Ok(m)) => Ok(Some(m)),
            Some(Err(e)) => {
                if e.is_closed() {
                    self.tokens.remove(w.key);
                }
                Err(e)
            }
        }
    }

    /// The worker's next event, waiting up to `timeout` (`None`: no limit).
    /// Events of other workers read meanwhile stay queued for them.
    /// [`Error::Timeout`] when the time runs out. Regions that came with the
    /// message are closed; [`Reactor::recv_regions`] keeps them.
    pub fn recv<T: DeserializeOwned>(&mut self, w: Worker, timeout: Option<Duration>) -> Result<T> {
        let format = self.conn(w)?.format();
        self.recv_msg(w, timeout)?.decode(format)
    }

    /// [`Reactor::recv`], with the regions that came with the message.
    pub fn recv_regions<T: DeserializeOwned>(
        &mut self,
        w: Worker,
        timeout: Option<Duration>,
    ) -> Result<(T, Vec<SharedMemory>)> {
        let format = self.conn(w)?.format();
        self.recv_msg(w, timeout)?.decode_regions(format)
    }

    fn recv_msg(&mut self, w: Worker, timeout: Option<Duration>) -> Result<Msg> {
        let deadline = timeout.and_then(deadline_after);
        let mut polled = false;
        let got = loop {
            match self.try_recv_msg(w) {
                Ok(Some(m)) => break Ok(m),
                Ok(None) => {}
                Err(e) => break Err(e),
            }
            // The first poll waits the whole timeout (the clock was just
            // read); later ones what is left of it.
            let left = match (polled, deadline) {
                (false, Some(_)) => timeout,
                (_, d) => d.map(|d| d.saturating_duration_since(Instant::now())),
            };
            if polled && left == Some(Duration::ZERO) {
                break Err(Error::Timeout);
            }
            polled = true;
            if let Err(e) = self.poll_once(left) {
                break Err(e);
            }
        };
        // On every way out (a message, an error, `Closed`, a timeout): what
        // the polls read for other workers must show on the descriptor.
        if polled {
            self.signal_queued();
        }
        got
    }
}
