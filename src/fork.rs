//! The fork and the child's life: everything prepared before `fork`, the
//! child's process group, its path to its work function or `execvp`
//! (async-signal-safe until its descriptors are closed), its exit code,
//! and the panic hook that keeps
//! a worker's panic free of locks. The rules are in [`worker`](crate::worker)'s
//! module docs ("What runs in the child", "Panics in a worker").

use std::any::Any;
use std::fmt::{self, Write as _};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use crate::channel::Channel;
use crate::error::{Error, Result};
use crate::options::{ChildSettings, LineSettings};
use crate::process::{EXIT_ERROR, EXIT_EXEC_FAILED, EXIT_OK, EXIT_PANIC, EXIT_PARENT_GONE};
use crate::sys;
use crate::worker::Exec;

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
    // Kept for the error reply `run_worker` sends (a fixed buffer: still no
    // allocation here).
    LAST_PANIC.with(|last| {
        if let Ok(mut last) = last.try_borrow_mut() {
            *last = StackText::new();
            let _ = match location {
                Some(l) => write!(last, "panicked at {l}: {msg}"),
                None => write!(last, "panicked: {msg}"),
            };
        }
    });
}

thread_local! {
    /// The last panic's message and location in this worker thread.
    static LAST_PANIC: std::cell::RefCell<StackText> = std::cell::RefCell::new(StackText::new());
}

/// The last panic's text in this worker thread (see `write_worker_panic`).
pub(crate) fn last_panic_text() -> String {
    LAST_PANIC.with(|last| match last.try_borrow_mut() {
        Ok(mut last) => String::from_utf8_lossy(last.finish()).into_owned(),
        Err(_) => "panicked".to_owned(),
    })
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
/// `setpgid`, and for an exec worker `pipe2` and a `read` that waits for
/// the exec (a failed exec is [`Error::Exec`], its child reaped with
/// `waitpid`). In the child: `setpgid` (a process group of its own, also
/// set by the parent), `prctl`, `getppid`, `sigprocmask`, `close_range`,
/// then the work function and `_exit`, or `fcntl`, `dup2`, `sigaction` and
/// `execvp`.
pub(crate) fn spawn_child<F>(
    line: &LineSettings,
    opts: &ChildSettings,
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
    // The program's environment, built here: the child only reads it.
    let env_vars = match &work {
        Work::Exec(e) => e.environment(),
        Work::Run(_) => Vec::new(),
    };
    let envp = sys::Envp::new(&env_vars);
    let exec = match &work {
        Work::Exec(e) => {
            // The program outlives `work` (`'a`): no borrow of `work` is kept.
            let e: &Exec = e;
            let argv = sys::Argv::new(&e.argv)
                .ok_or_else(|| Error::io("execvp", io::Error::from(io::ErrorKind::InvalidInput)))?;
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
    // SAFETY: the child branch below allocates nothing and takes no lock
    // until `close_fds_except` (everything it reads was prepared above), and
    // leaves only through `sys::exit_now` or `exec_with_socket`, with any
    // unwind caught first: `sys::fork`'s `# Safety` contract.
    let forked = unsafe { sys::fork() };
    match forked.map_err(|e| Error::io("fork", e))? {
        sys::Forked::Parent(pid) => {
            // The child's group is set on both sides, so it exists before
            // this returns, whoever runs first. Errors are the child's own
            // doing: `EACCES` once it has exec'd (it set its group before),
            // `ESRCH` once it has exited.
            let _ = sys::setpgid(pid, pid);
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
            // A group of its own, so a kill ends whatever it starts (see
            // `worker`'s "Process groups"). It cannot fail: a forked child
            // is no session leader.
            let _ = sys::setpgid(0, 0);
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
                            child_end.as_fd(),
                            keep_exec,
                            &keep_user,
                            argv,
                            &envp,
                            report_w.as_fd(),
                            EXIT_EXEC_FAILED,
                        )
                    }
                    (Work::Run(run), None) => run,
                    (Work::Exec(_), None) => sys::exit_now(EXIT_EXEC_FAILED),
                };
                // Other workers' sockets, the epoll descriptor, listeners:
                // closed by number, so no Rust object (and no epoll
                // registration) is touched.
                sys::close_fds_except(&keep);
                run_worker(child_end, line, opts.batch_replies, work)
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
fn run_worker<F>(child_end: OwnedFd, line: &LineSettings, batch: bool, run: F) -> i32
where
    F: FnOnce(&mut Channel) -> Result<()>,
{
    let mut chan = Channel::new(child_end, line.format, line.max_line);
    chan.set_batch_replies(batch);
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| run(&mut chan)));
    // Replies queued before a return, an error or a panic still go out,
    // and a failure is told to the caller as an error reply in place of
    // the reply it was working on (best effort: the connection may be what
    // failed).
    match outcome {
        Ok(Ok(())) => match chan.flush() {
            Ok(()) => EXIT_OK,
            Err(_) => EXIT_ERROR,
        },
        Ok(Err(e)) => {
            let _ = chan.send_error("error", &e.to_string());
            EXIT_ERROR
        }
        Err(payload) => {
            // Its drop could panic again, outside any catch.
            std::mem::forget(payload);
            let _ = panic::catch_unwind(AssertUnwindSafe(|| {
                chan.send_error("panic", &last_panic_text())
            }));
            EXIT_PANIC
        }
    }
}

/// In the parent: waits for the exec worker's child to exec; if it could
/// not, reaps it and names the program and the OS error.
fn exec_outcome(e: &Exec, pid: libc::pid_t, report: OwnedFd) -> Result<libc::pid_t> {
    match sys::read_exec_error(&report) {
        // Exec'd: the pipe closed with nothing written.
        Ok(None) => Ok(pid),
        // Whether the exec worked is unknown: no worker of unknown state.
        Err(err) => {
            crate::process::kill_reap(pid);
            Err(Error::io("read (exec error pipe)", err))
        }
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
