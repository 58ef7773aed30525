//! Child processes from the parent's side: the exit codes miniray's
//! children use and a status in words by the kind of child, process
//! groups, deadlines, watching a child's exit (a pidfd in the
//! reactor's poll, or a retry list when no pidfd can be had) and reaping
//! children that were told to exit. Shared by local workers and by the
//! children that serve TCP connections.
//!
//! Every exit code a miniray child can end with is a constant here (the
//! one place to look them up): match a closure worker's
//! [`Error::Closed`](crate::Error::Closed) or a server's `Exited` status
//! against them. An exec worker's code is its program's own, which
//! [`describe_as`] with [`ChildKind::Exec`] puts in words without reading
//! miniray's meanings into it.

use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Token};

use crate::sys;

/// Exit status of a child whose work function returned `Ok`.
pub const EXIT_OK: i32 = 0;
/// Exit status of a child whose work function returned an error (or whose
/// connection failed).
pub const EXIT_ERROR: i32 = 1;
/// Exit status of a child whose work function panicked (as Rust's own
/// default for a panicking `main`).
pub const EXIT_PANIC: i32 = 101;
/// Exit status of a child whose parent was gone before it could start
/// (`EX_TEMPFAIL`): the `PR_SET_PDEATHSIG` race, closed by a `getppid()`
/// check right after the `prctl`.
pub const EXIT_PARENT_GONE: i32 = 75;
/// Exit status of a serving child (of [`Reactor::listen`](crate::Reactor::listen)
/// or [`Reactor::listen_channel`](crate::Reactor::listen_channel)) that
/// closed its connection because no complete line came within
/// [`ServerOptions::idle_timeout`](crate::ServerOptions::idle_timeout);
/// reported as [`ServerEvent::Exited`](crate::ServerEvent::Exited). 124, as
/// `timeout(1)` uses.
pub const EXIT_IDLE: i32 = 124;
/// Exit status of an exec worker's child whose program could not be
/// executed. The spawn itself fails with [`Error::Exec`](crate::Error::Exec)
/// (the child reports the error through a pipe and is reaped before the
/// spawn returns), so miniray's own exec failure never surfaces as this
/// status. A worker can still end with 127 of its own: a program that exits
/// 127 (a shell's "command not found"), or a file of unknown format that
/// glibc's `execvp` hands to `/bin/sh` (`ENOEXEC`) and the shell cannot run.
pub const EXIT_EXEC_FAILED: i32 = 127;

/// A signal number, for [`Reactor::kill`](crate::Reactor::kill) without a
/// `libc` import: `reactor.kill(w, Signal::KILL)`. A plain `i32` (such as
/// `libc::SIGKILL`) converts into it, so either spelling works. Displays as
/// its name ("SIGKILL"), or "signal N" for a number without one here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Signal(i32);

impl Signal {
    /// `SIGHUP`.
    pub const HUP: Signal = Signal(libc::SIGHUP);
    /// `SIGINT`.
    pub const INT: Signal = Signal(libc::SIGINT);
    /// `SIGQUIT`.
    pub const QUIT: Signal = Signal(libc::SIGQUIT);
    /// `SIGKILL`: cannot be caught; the process ends at once.
    pub const KILL: Signal = Signal(libc::SIGKILL);
    /// `SIGUSR1`.
    pub const USR1: Signal = Signal(libc::SIGUSR1);
    /// `SIGUSR2`.
    pub const USR2: Signal = Signal(libc::SIGUSR2);
    /// `SIGTERM`: the polite request to exit.
    pub const TERM: Signal = Signal(libc::SIGTERM);
    /// `SIGCONT`.
    pub const CONT: Signal = Signal(libc::SIGCONT);
    /// `SIGSTOP`: cannot be caught; the process pauses until `SIGCONT`.
    pub const STOP: Signal = Signal(libc::SIGSTOP);

    /// The signal with this number (not checked: the OS refuses an invalid
    /// one when it is sent).
    pub const fn from_raw(signal: i32) -> Signal {
        Signal(signal)
    }

    /// The signal's number.
    pub const fn as_raw(self) -> i32 {
        self.0
    }

    /// Its name ("SIGKILL"), if it is one of the standard signals.
    pub fn name(self) -> Option<&'static str> {
        let name = match self.0 {
            libc::SIGHUP => "SIGHUP",
            libc::SIGINT => "SIGINT",
            libc::SIGQUIT => "SIGQUIT",
            libc::SIGILL => "SIGILL",
            libc::SIGTRAP => "SIGTRAP",
            libc::SIGABRT => "SIGABRT",
            libc::SIGBUS => "SIGBUS",
            libc::SIGFPE => "SIGFPE",
            libc::SIGKILL => "SIGKILL",
            libc::SIGUSR1 => "SIGUSR1",
            libc::SIGSEGV => "SIGSEGV",
            libc::SIGUSR2 => "SIGUSR2",
            libc::SIGPIPE => "SIGPIPE",
            libc::SIGALRM => "SIGALRM",
            libc::SIGTERM => "SIGTERM",
            libc::SIGCHLD => "SIGCHLD",
            libc::SIGCONT => "SIGCONT",
            libc::SIGSTOP => "SIGSTOP",
            libc::SIGTSTP => "SIGTSTP",
            libc::SIGTTIN => "SIGTTIN",
            libc::SIGTTOU => "SIGTTOU",
            libc::SIGURG => "SIGURG",
            libc::SIGXCPU => "SIGXCPU",
            libc::SIGXFSZ => "SIGXFSZ",
            libc::SIGVTALRM => "SIGVTALRM",
            libc::SIGPROF => "SIGPROF",
            libc::SIGWINCH => "SIGWINCH",
            libc::SIGIO => "SIGIO",
            libc::SIGPWR => "SIGPWR",
            libc::SIGSYS => "SIGSYS",
            _ => return None,
        };
        Some(name)
    }
}

impl From<i32> for Signal {
    fn from(signal: i32) -> Signal {
        Signal(signal)
    }
}

impl From<Signal> for i32 {
    fn from(signal: Signal) -> i32 {
        signal.0
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "signal {}", self.0),
        }
    }
}

/// What a child runs, which decides what its exit code means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChildKind {
    /// A closure or work function miniray runs in the forked child (a
    /// worker of [`Reactor::spawn`](crate::Reactor::spawn) and its kin, of
    /// [`Pool::new`](crate::Pool::new), a serving child of
    /// [`Reactor::listen`](crate::Reactor::listen)): miniray chose the exit
    /// code, and the `EXIT_*` constants say what it means.
    Closure,
    /// A program ([`Exec`](crate::Exec): [`Reactor::spawn_exec`](crate::Reactor::spawn_exec),
    /// [`Pool::exec`](crate::Pool::exec), [`Reactor::listen_exec`](crate::Reactor::listen_exec)):
    /// the exit code is the program's own (a Python program's uncaught
    /// exception exits 1), and miniray reads nothing into it.
    Exec,
}

/// A child's exit status in words, as every `Display` of miniray writes it:
/// [`describe_as`] for a [`ChildKind::Closure`]: "exited with 101
/// (panicked)", "killed by SIGKILL", "killed by SIGSEGV (core dumped)", or
/// "status unknown" for `None` (reaped by someone else, or a remote
/// worker). miniray's own exit codes (the `EXIT_*` constants) are named in
/// parentheses. An exec worker's code is its program's: describe it with
/// [`describe_as`]`(ChildKind::Exec, ..)`, "exited with status 1".
///
/// ```
/// use std::os::unix::process::ExitStatusExt;
/// use std::process::ExitStatus;
/// use miniray::process::describe;
/// assert_eq!(describe(Some(ExitStatus::from_raw(101 << 8))).to_string(), "exited with 101 (panicked)");
/// assert_eq!(describe(Some(ExitStatus::from_raw(9))).to_string(), "killed by SIGKILL");
/// assert_eq!(describe(None).to_string(), "status unknown");
/// ```
pub fn describe(status: Option<ExitStatus>) -> impl fmt::Display {
    describe_as(ChildKind::Closure, status)
}

/// A child's exit status in words, by what the child runs: a closure's
/// exit code is miniray's and named ("exited with 1 (work function returned
/// an error)"), a program's is its own ("exited with status 1"); a signal
/// is a signal for both ("killed by SIGKILL"), and `None` is "status
/// unknown".
///
/// ```
/// use std::os::unix::process::ExitStatusExt;
/// use std::process::ExitStatus;
/// use miniray::process::{describe_as, ChildKind};
/// let one = Some(ExitStatus::from_raw(1 << 8));
/// assert_eq!(describe_as(ChildKind::Exec, one).to_string(), "exited with status 1");
/// assert_eq!(
///     describe_as(ChildKind::Closure, one).to_string(),
///     "exited with 1 (work function returned an error)"
/// );
/// let killed = Some(ExitStatus::from_raw(9));
/// assert_eq!(describe_as(ChildKind::Exec, killed).to_string(), "killed by SIGKILL");
/// ```
pub fn describe_as(kind: ChildKind, status: Option<ExitStatus>) -> impl fmt::Display {
    Described { kind, status }
}

struct Described {
    kind: ChildKind,
    status: Option<ExitStatus>,
}

impl fmt::Display for Described {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(status) = self.status else {
            return f.write_str("status unknown");
        };
        if let Some(code) = status.code() {
            if self.kind == ChildKind::Exec {
                return write!(f, "exited with status {code}");
            }
            write!(f, "exited with {code}")?;
            let meaning = match code {
                EXIT_ERROR => "work function returned an error",
                EXIT_PARENT_GONE => "parent gone",
                EXIT_PANIC => "panicked",
                EXIT_IDLE => "idle timeout",
                EXIT_EXEC_FAILED => "exec failed",
                _ => return Ok(()),
            };
            write!(f, " ({meaning})")
        } else if let Some(signal) = status.signal() {
            write!(f, "killed by {}", Signal(signal))?;
            if status.core_dumped() {
                f.write_str(" (core dumped)")?;
            }
            Ok(())
        } else {
            // Stopped or continued: waitpid without WUNTRACED never reports
            // these, but ExitStatus can hold them.
            write!(f, "wait status {}", status.into_raw())
        }
    }
}

/// While a child that could get no pidfd is waited for, `waitpid` is
/// retried this often.
pub(crate) const REAP_RETRY: Duration = Duration::from_millis(5);

/// The moment `d` from now, or `None` ("no deadline") when that is past what
/// an [`Instant`] can hold (`Duration::MAX`, say): `Instant + Duration`
/// panics on overflow, and a panic in `Drop` or event dispatch would take
/// the program down.
pub(crate) fn deadline_after(d: Duration) -> Option<Instant> {
    Instant::now().checked_add(d)
}

/// Opens `pid`'s pidfd and registers it `READABLE` under `token`, so the
/// child's exit is an event of the poll. `None` when it cannot be watched
/// (no pidfd: `EMFILE`, an old kernel; or the registration failed), and,
/// with `below`, when the descriptor's number is not below it (early
/// pidfds leave the upper half of the table to sockets). The caller then
/// retries `waitpid` (see [`Unreaped`]).
pub(crate) fn watch_exit(
    registry: &mio::Registry,
    pid: libc::pid_t,
    token: Token,
    below: Option<u64>,
) -> Option<OwnedFd> {
    let fd = sys::pidfd_open(pid).ok()?;
    if below.is_some_and(|limit| fd.as_raw_fd() as u64 >= limit) {
        return None;
    }
    registry
        .register(&mut SourceFd(&fd.as_raw_fd()), token, Interest::READABLE)
        .ok()?;
    Some(fd)
}

/// Deregisters and closes a pidfd from [`watch_exit`].
pub(crate) fn unwatch(registry: &mio::Registry, fd: OwnedFd) {
    let _ = registry.deregister(&mut SourceFd(&fd.as_raw_fd()));
}

/// `waitpid(pid, WNOHANG)` as the reactor uses it: `None` while the child
/// runs, `Some(status)` once it is gone (`Some(None)`: not ours to reap,
/// someone else did).
pub(crate) fn try_reap(pid: libc::pid_t) -> Option<Option<ExitStatus>> {
    match sys::try_wait(pid) {
        Ok(None) => None,
        Ok(Some(status)) => Some(Some(status)),
        Err(_) => Some(None),
    }
}

/// Children that could get no pidfd: `waitpid` is retried every
/// [`REAP_RETRY`] until they are gone. `K` names a child to its owner.
#[derive(Debug)]
pub(crate) struct Unreaped<K> {
    list: Vec<K>,
}

impl<K> Default for Unreaped<K> {
    fn default() -> Self {
        Unreaped { list: Vec::new() }
    }
}

impl<K> Unreaped<K> {
    pub(crate) fn push(&mut self, k: K) {
        self.list.push(k);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub(crate) fn clear(&mut self) {
        self.list.clear();
    }

    /// Calls `reaped` on each entry; keeps those for which it returns false.
    pub(crate) fn retry(&mut self, mut reaped: impl FnMut(&K) -> bool) {
        self.list.retain(|k| !reaped(k));
    }

    /// Puts back entries that were taken out to be retried (see
    /// [`Unreaped::retry`]), before any pushed in the meantime: the caller
    /// takes the list while `reaped` needs `&mut` to the owner.
    pub(crate) fn put_back(&mut self, mut kept: Unreaped<K>) {
        kept.list.append(&mut self.list);
        self.list = kept.list;
    }

    /// Keeps only the entries `keep` accepts.
    pub(crate) fn retain(&mut self, keep: impl FnMut(&K) -> bool) {
        self.list.retain(keep);
    }
}

/// Reaps `pids` (children told to exit), in order: each is checked with
/// `waitid(WNOWAIT)` and, while it runs, waited for on a pidfd until it
/// exits or `deadline` passes (`None`: no deadline), so
/// children that exit in the order they were told cost one call each, never
/// a sweep over all of them. Whatever is left at the deadline is killed with
/// `SIGKILL` and reaped. Each child's process group gets `SIGKILL` before
/// the child is reaped, so nothing it started outlives it. Statuses come
/// back in `pids`' order (`None`: not ours to reap).
pub(crate) fn reap_within(
    pids: &[libc::pid_t],
    deadline: Option<Instant>,
) -> Vec<Option<ExitStatus>> {
    let mut out = vec![None; pids.len()];
    let mut late = Vec::new();
    for (i, &pid) in pids.iter().enumerate() {
        let mut nap = Duration::from_micros(50);
        loop {
            match sys::has_exited(pid) {
                Ok(true) => {
                    // Its leader exited, so the group is being ended: what
                    // it left behind goes too, signalled while the zombie
                    // still holds the group's number.
                    let _ = signal_group(pid, libc::SIGKILL);
                    out[i] = sys::wait(pid).ok();
                }
                Err(_) => {}
                Ok(false) if deadline.is_none_or(|d| Instant::now() < d) => {
                    // Sleep until it exits (its pidfd reads ready) or the
                    // deadline; without a pidfd, nap and look again.
                    let left = deadline.map_or(Duration::MAX, |d| {
                        d.saturating_duration_since(Instant::now())
                    });
                    match sys::pidfd_open(pid) {
                        Ok(fd) => {
                            let _ = sys::poll_readable(&fd, left);
                        }
                        Err(_) => {
                            std::thread::sleep(nap.min(left));
                            nap = (nap * 2).min(REAP_RETRY);
                        }
                    }
                    continue;
                }
                Ok(false) => late.push(i),
            }
            break;
        }
    }
    for i in late {
        out[i] = kill_reap(pids[i]);
    }
    out
}

/// `SIGKILL` to the child's process group and a blocking `waitpid`: for a
/// child of ours that must go now, with whatever it started.
pub(crate) fn kill_reap(pid: libc::pid_t) -> Option<ExitStatus> {
    let _ = signal_group(pid, libc::SIGKILL);
    sys::wait(pid).ok()
}

/// Sends `signal` to a child's process group: the child and whatever it
/// started that stayed in its group. Every child miniray forks leads a
/// group of its own (see [`worker`](crate::worker#process-groups)).
///
/// The caller must not have reaped `pid`: a group is named after its
/// leader's pid, and while the leader is unreaped (running, or a zombie)
/// that number cannot name any other process or group; once it is reaped
/// it may. A child that moved itself into another group gets the signal
/// on its own, and what is left of its first group gets it too.
pub(crate) fn signal_group(pid: libc::pid_t, signal: libc::c_int) -> std::io::Result<()> {
    match sys::getpgid(pid) {
        Ok(group) if group == pid => sys::kill_group(pid, signal),
        _ => {
            let _ = sys::kill_group(pid, signal);
            sys::kill(pid, signal)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    fn exited(code: i32) -> Option<ExitStatus> {
        Some(ExitStatus::from_raw(code << 8))
    }

    #[test]
    fn statuses_are_described_in_words() {
        let cases = [
            (exited(EXIT_OK), "exited with 0"),
            (
                exited(EXIT_ERROR),
                "exited with 1 (work function returned an error)",
            ),
            (exited(EXIT_PARENT_GONE), "exited with 75 (parent gone)"),
            (exited(EXIT_PANIC), "exited with 101 (panicked)"),
            (exited(EXIT_IDLE), "exited with 124 (idle timeout)"),
            (exited(EXIT_EXEC_FAILED), "exited with 127 (exec failed)"),
            (exited(3), "exited with 3"),
            (
                Some(ExitStatus::from_raw(libc::SIGKILL)),
                "killed by SIGKILL",
            ),
            // 0x80: the core-dump bit of a wait status.
            (
                Some(ExitStatus::from_raw(libc::SIGSEGV | 0x80)),
                "killed by SIGSEGV (core dumped)",
            ),
            (Some(ExitStatus::from_raw(64)), "killed by signal 64"),
            (None, "status unknown"),
        ];
        for (status, text) in cases {
            assert_eq!(describe(status).to_string(), text);
        }
    }

    #[test]
    fn a_programs_codes_are_its_own_and_signals_are_signals() {
        let cases = [
            (exited(EXIT_OK), "exited with status 0"),
            (exited(EXIT_ERROR), "exited with status 1"),
            (exited(EXIT_PARENT_GONE), "exited with status 75"),
            (exited(EXIT_PANIC), "exited with status 101"),
            (exited(EXIT_IDLE), "exited with status 124"),
            (exited(EXIT_EXEC_FAILED), "exited with status 127"),
            (
                Some(ExitStatus::from_raw(libc::SIGKILL)),
                "killed by SIGKILL",
            ),
            (
                Some(ExitStatus::from_raw(libc::SIGSEGV | 0x80)),
                "killed by SIGSEGV (core dumped)",
            ),
            (None, "status unknown"),
        ];
        for (status, text) in cases {
            assert_eq!(describe_as(ChildKind::Exec, status).to_string(), text);
        }
        for status in [Some(ExitStatus::from_raw(libc::SIGTERM)), None] {
            assert_eq!(
                describe_as(ChildKind::Closure, status).to_string(),
                describe_as(ChildKind::Exec, status).to_string()
            );
        }
    }

    #[test]
    fn error_display_and_debug_use_the_words() {
        let e = Error::Closed {
            status: exited(EXIT_PANIC),
        };
        assert_eq!(e.to_string(), "worker closed: exited with 101 (panicked)");
        assert_eq!(
            format!("{e:?}"),
            "Closed { status: exited with 101 (panicked) }"
        );
        let e = Error::Exited {
            status: Some(ExitStatus::from_raw(libc::SIGKILL)),
        };
        assert_eq!(
            e.to_string(),
            "worker process ended: killed by SIGKILL; its connection is still open"
        );
        assert!(!format!("{e:?}").contains("wait_status"), "{e:?}");
    }
}
