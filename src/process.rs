//! Child processes from the parent's side: the exit codes miniray's
//! children use, deadlines, watching a child's exit (a pidfd in the
//! reactor's poll, or a retry list when no pidfd can be had) and reaping
//! children that were told to exit. Shared by local workers and by the
//! children that serve TCP connections.
//!
//! Every exit code a miniray child can end with is a constant here (the
//! one place to look them up): match a worker's [`Error::Closed`](crate::Error::Closed)
//! or a server's `Exited` status against them.

use std::os::fd::{AsRawFd, OwnedFd};
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
    /// Entries pushed meanwhile are kept too.
    pub(crate) fn retry(&mut self, mut reaped: impl FnMut(&K) -> bool) {
        let mut list = std::mem::take(&mut self.list);
        list.retain(|k| !reaped(k));
        list.append(&mut self.list);
        self.list = list;
    }

    /// Keeps only the entries `keep` accepts.
    pub(crate) fn retain(&mut self, keep: impl FnMut(&K) -> bool) {
        self.list.retain(keep);
    }
}

/// Reaps `pids` (children told to exit), in order: each is checked with
/// `waitpid(WNOHANG)` and, while it runs, waited for on a pidfd until it
/// exits or `deadline` passes (`None`: no deadline), so
/// children that exit in the order they were told cost one call each, never
/// a sweep over all of them. Whatever is left at the deadline is killed with
/// `SIGKILL` and reaped. Statuses come back in `pids`' order (`None`: not
/// ours to reap).
pub(crate) fn reap_within(
    pids: &[libc::pid_t],
    deadline: Option<Instant>,
) -> Vec<Option<ExitStatus>> {
    let mut out = vec![None; pids.len()];
    let mut late = Vec::new();
    for (i, &pid) in pids.iter().enumerate() {
        let mut nap = Duration::from_micros(50);
        loop {
            match sys::try_wait(pid) {
                Ok(Some(status)) => out[i] = Some(status),
                Err(_) => {}
                Ok(None) if deadline.map_or(true, |d| Instant::now() < d) => {
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
                Ok(None) => late.push(i),
            }
            break;
        }
    }
    for i in late {
        let _ = sys::kill(pids[i], libc::SIGKILL);
        out[i] = sys::wait(pids[i]).ok();
    }
    out
}
