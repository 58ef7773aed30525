//! A connection's end and its child's exit: hang-up, the child's pidfd
//! (from spawn for exec workers, or from hang-up), `Exited` and `Closed`,
//! and [`Reactor::shutdown`].

use std::process::ExitStatus;

use super::{mark_ready, Reactor};
use crate::conn::State;
use crate::process::{self, deadline_after, reap_within};
use crate::registry::Entry;
use crate::sys;
use crate::token::Sub;
use crate::worker::Worker;

impl Reactor {
    /// The connection ended: close it, report an unfinished line, reap.
    pub(crate) fn hang_up(&mut self, w: Worker) {
        let Some(conn) = self.tokens.conn_mut(w.key) else {
            return;
        };
        conn.end_stream(self.poll.registry());
        let watched = conn.is_watched();
        match (conn.pid(), conn.exit()) {
            (None, _) => self.finish(w, None),
            // Reaped when its pidfd fired: Closed carries that status.
            (Some(_), Some(status)) => self.finish(w, status),
            (Some(pid), None) => match process::try_reap(pid) {
                Some(status) => self.finish(w, status),
                // Its pidfd (from spawn) reports the exit.
                None if watched => {}
                None => {
                    // Wait for the exit on a pidfd; without one, poll waitpid.
                    if !self.watch_exit(w, false) {
                        self.unreaped.push(w);
                    }
                }
            },
        }
    }

    /// Opens the child's pidfd and registers it under the worker's exit
    /// token. `at_spawn`: only while the descriptor is numbered below half
    /// the soft open-file limit (see the type's docs). False when the child
    /// is not watched (no pidfd: `EMFILE`, an old kernel, ...).
    pub(super) fn watch_exit(&mut self, w: Worker, at_spawn: bool) -> bool {
        let Some(conn) = self.tokens.conn_mut(w.key) else {
            return false;
        };
        let Some(pid) = conn.pid() else {
            return false;
        };
        let below = at_spawn.then(|| sys::open_file_limit() / 2);
        let token = w.key.token(Sub::Exit);
        match process::watch_exit(self.poll.registry(), pid, token, below) {
            Some(fd) => {
                conn.set_pidfd(fd);
                true
            }
            None => false,
        }
    }

    /// Remembers a worker watched from spawn (for [`Reactor::give_back_pidfds`]),
    /// sweeping stale entries once the list outgrows the workers.
    pub(super) fn note_early_watch(&mut self, w: Worker) {
        if self.early_watched.len() >= 2 * self.tokens.conns() + 64 {
            let tokens = &self.tokens;
            self.early_watched.retain(
                |w| matches!(tokens.conn(w.key), Some(c) if c.is_watched() && !c.is_ended()),
            );
        }
        self.early_watched.push(w);
    }

    /// Closes up to `n` pidfds of running workers watched from spawn (newest
    /// first); they fall back to being watched from hang-up. Returns how many.
    pub(super) fn give_back_pidfds(&mut self, n: usize) -> usize {
        let mut given = 0;
        while given < n {
            let Some(w) = self.early_watched.pop() else {
                break;
            };
            let Some(conn) = self.tokens.conn_mut(w.key) else {
                continue;
            };
            if conn.is_ended() {
                continue;
            }
            if let Some(fd) = conn.take_pidfd() {
                process::unwatch(self.poll.registry(), fd);
                given += 1;
            }
        }
        given
    }

    /// The child's pidfd read ready: it exited. Reap it now; read what its
    /// socket holds, so a socket that closed with it ends in `Closed` alone;
    /// if the socket stays open (a descendant holds it), tell `Exited`.
    pub(super) fn exit_ready(&mut self, w: Worker) {
        let Some(conn) = self.tokens.conn_mut(w.key) else {
            return;
        };
        let Some(pid) = conn.pid() else {
            return;
        };
        // Reaped already (its socket closed with it in the same batch, and
        // the hang-up reaped it): never `waitpid` a pid that may be reused.
        if conn.exit().is_some() || matches!(conn.state(), State::Done) {
            return;
        }
        let Some(status) = process::try_reap(pid) else {
            return;
        };
        if let Some(fd) = conn.reaped(status) {
            process::unwatch(self.poll.registry(), fd);
        }
        if conn.is_ended() {
            if matches!(conn.state(), State::Reaping) {
                self.finish(w, status);
            }
            return;
        }
        // The child closed its descriptors before it became a zombie, so if
        // it held the last copy of its socket, EOF is there to read now.
        if !conn.is_reading_paused() {
            self.read_conn(w);
        }
        self.tell_exit(w);
    }

    /// Queues `Exited` for a reaped child whose connection is still open
    /// once everything before the exit was read (not while reading is paused:
    /// then it is told when reading resumes).
    pub(super) fn tell_exit(&mut self, w: Worker) {
        let Some(conn) = self.tokens.conn_mut(w.key) else {
            return;
        };
        if conn.tell_exit() {
            mark_ready(&mut self.ready, conn, w);
        }
    }

    /// Retries `waitpid` for hung-up children that could get no pidfd.
    pub(super) fn retry_unreaped(&mut self) {
        let mut list = std::mem::take(&mut self.unreaped);
        list.retry(|&w| {
            let Some(Some(pid)) = self.tokens.conn(w.key).map(|c| c.pid()) else {
                return true;
            };
            match process::try_reap(pid) {
                Some(status) => {
                    self.finish(w, status);
                    true
                }
                None => false,
            }
        });
        self.unreaped.put_back(list);
    }

    /// Queues `Closed` as the worker's last event.
    fn finish(&mut self, w: Worker, status: Option<ExitStatus>) {
        let Some(conn) = self.tokens.conn_mut(w.key) else {
            return;
        };
        // A child of ours is reaped by now (every caller reaped it or found
        // it reaped): record it, so `kill` reports this status and a pidfd
        // event later in the same batch does not reap it again.
        let mut pidfd = None;
        if conn.pid().is_some() && conn.exit().is_none() {
            pidfd = conn.reaped(status);
        }
        if let Some(fd) = conn.close_with(status).or(pidfd) {
            process::unwatch(self.poll.registry(), fd);
        }
        mark_ready(&mut self.ready, conn, w);
    }

    /// Closes every connection, waits up to the grace period (see
    /// [`Reactor::set_grace`]) for the children to exit, kills the rest with
    /// `SIGKILL`, and reaps them all. Each child's process group gets
    /// `SIGKILL` before the child is reaped, so what a worker started ends
    /// with it (see [`worker`](crate::worker#process-groups)); a worker
    /// reaped earlier (its `Closed` already queued) is not signalled.
    /// Returns each worker's exit status
    /// (`None` where it was not ours to reap). The reactor is empty afterwards.
    pub fn shutdown(&mut self) -> Vec<(Worker, Option<ExitStatus>)> {
        self.servers
            .stop_all(&mut self.tokens, self.poll.registry(), self.grace);
        let mut waiting = Vec::new();
        let mut result = Vec::new();
        for (key, entry) in self.tokens.iter_mut() {
            let Entry::Conn(conn) = entry else {
                continue;
            };
            let w = Worker { key, fd: conn.fd() };
            // Closing removes the descriptor from the epoll set (no child
            // holds a copy), so no epoll_ctl per worker; any straggling event
            // finds no entry and is ignored.
            match conn.abandon() {
                Err(pid) => waiting.push((w, pid)),
                Ok(status) => result.push((w, status)),
            }
        }
        // Dropping the slots closes the pidfds too (and so unregisters them).
        self.tokens.remove_where(|e| matches!(e, Entry::Conn(_)));
        self.ready.clear();
        self.dirty.clear();
        self.unreaped.clear();
        self.early_watched.clear();
        let pids: Vec<libc::pid_t> = waiting.iter().map(|&(_, pid)| pid).collect();
        let statuses = reap_within(&pids, deadline_after(self.grace));
        result.extend(waiting.into_iter().map(|(w, _)| w).zip(statuses));
        // The servers' `Exited` events stay queued: say so on the descriptor.
        self.signal_queued();
        result
    }
}
