//! One `epoll_wait` and the dispatch of what it returned: the timeout the
//! wait is given (a long one kept in the reactor's deadline timer), and
//! each event routed through the registry to its connection, a server's
//! entry, the caller's own sources, or nowhere (the waker and the timer).

use std::io;
use std::time::{Duration, Instant};

use mio::Events;

use super::{Reactor, UserEvent, USER_TOKEN_LIMIT, WAKE};
use crate::conn::{Conn, ReadUntil, State};
use crate::error::{Error, Result};
use crate::process::REAP_RETRY;
use crate::token::Sub;
use crate::worker::Worker;

/// Waits at least this long keep their deadline in the reactor's timer;
/// shorter ones give it to `epoll_wait` (see [`Reactor::wait_timeout`]).
const TIMER_MIN: Duration = Duration::from_millis(100);

impl Reactor {
    /// One `epoll_wait` (after flushing), and the handling of what it returned.
    pub(crate) fn poll_once(&mut self, timeout: Option<Duration>) -> Result<()> {
        self.flush();
        let mut cap = None;
        if !self.unreaped.is_empty() || self.servers.retrying() {
            cap = Some(REAP_RETRY);
        }
        if let Some(due) = self.servers.next_deadline(&self.tokens) {
            let until = due.saturating_duration_since(Instant::now());
            cap = Some(cap.map_or(until, |c: Duration| c.min(until)));
        }
        let timeout = match (timeout, cap) {
            (Some(t), Some(c)) => Some(t.min(c)),
            (t, None) => t,
            (None, c) => c,
        };
        let timeout = self.wait_timeout(timeout);
        let mut events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        let polled = self.poll.poll(&mut events, timeout);
        let result = match polled {
            Ok(()) => {
                for event in events.iter() {
                    self.handle(event);
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(Error::io("epoll_wait", e)),
        };
        self.events = events;
        if !self.unreaped.is_empty() {
            self.retry_unreaped();
        }
        self.servers.timers(&mut self.tokens, self.poll.registry());
        result
    }

    /// The timeout to give `epoll_wait` for a wait of `timeout`.
    ///
    /// A finite timeout given to `epoll_wait` arms a kernel timer for that
    /// wait and cancels it after: measured at 0.6–1.1 µs a wait on this
    /// crate's 2-vCPU VM (a local round trip is 10–14 µs there), whatever
    /// the timeout. A wait of [`TIMER_MIN`] or more keeps its deadline in
    /// the reactor's one-shot timer instead and waits without a timeout:
    /// the timer is armed only when it is not already due to expire before
    /// that deadline (a loop of `recv(w, Some(60 s))` arms it about once a
    /// minute; each time it expires first, the wait ends early and the
    /// caller's loop waits again for what is left). Once a wait returned,
    /// an expiry still to come makes the epoll descriptor readable once,
    /// with nothing to return: at most once per such deadline. Shorter
    /// waits (and a failure to arm) keep `epoll_wait`'s own timeout.
    fn wait_timeout(&mut self, timeout: Option<Duration>) -> Option<Duration> {
        let wait = match timeout {
            Some(t) if t >= TIMER_MIN => t,
            short => return short,
        };
        let now = Instant::now();
        let Some(due) = now.checked_add(wait) else {
            return timeout;
        };
        if self.timer_due.is_some_and(|at| now < at && at <= due) {
            return None;
        }
        match self.timer.set(wait) {
            Ok(()) => {
                self.timer_due = Some(due);
                None
            }
            Err(_) => {
                self.timer_due = None;
                timeout
            }
        }
    }

    /// One event: the caller's, the waker's, or one of the registry's
    /// entries (stale tokens are dropped by [`Registry::resolve`]).
    fn handle(&mut self, event: &mio::event::Event) {
        if event.token() == WAKE {
            return;
        }
        if event.token().0 < USER_TOKEN_LIMIT {
            self.user_events.push(UserEvent {
                token: event.token(),
                readable: event.is_readable() || event.is_read_closed(),
                writable: event.is_writable(),
                closed: event.is_read_closed() || event.is_write_closed(),
                error: event.is_error(),
            });
            return;
        }
        let Some((key, sub)) = self.tokens.resolve(event.token()) else {
            return;
        };
        let Some(conn) = self.tokens.conn(key) else {
            // A listener, a handshake or a serving child.
            self.servers
                .ready(&mut self.tokens, self.poll.registry(), key);
            return;
        };
        let w = Worker { key, fd: conn.fd() };
        if sub == Sub::Exit {
            self.exit_ready(w);
            return;
        }
        match conn.state() {
            // The handshake reads its line itself (`connect`).
            State::Authenticating => return,
            State::Connecting { .. } => {
                let Some(conn) = self.tokens.conn_mut(key) else {
                    return;
                };
                if !conn.finish_connect(self.poll.registry()) {
                    return;
                }
                if matches!(conn.state(), State::Done) {
                    // Failed: `connect` takes the error from the inbox.
                    return;
                }
                // Disarms WRITABLE once nothing is queued.
                self.flush_conn(w);
                if !matches!(self.tokens.conn(key).map(Conn::state), Some(State::Open)) {
                    return;
                }
            }
            _ => {}
        }
        if event.is_writable() {
            self.flush_conn(w);
        }
        let paused = self.tokens.conn(key).is_some_and(Conn::is_reading_paused);
        // Only new bytes: a short read drains the socket. An urgent mark,
        // a hang-up or an error: read to `WouldBlock` (see `ReadUntil`).
        let full = event.is_priority() || event.is_read_closed() || event.is_error();
        if !paused && (event.is_readable() || full) {
            let until = if full {
                ReadUntil::WouldBlock
            } else {
                ReadUntil::ShortRead
            };
            self.read_conn_until(w, until);
        }
    }
}
