//! The TCP server part of the reactor ([`Servers`]): listeners, accepting
//! with the spare-descriptor method, the authentication handshake, forking
//! one child per connection, reaping the serving children, and the
//! [`ServerEvent`]s all of it reports. Its entries live in the reactor's
//! [`Registry`]; the reactor hands it the events of those entries
//! ([`Servers::ready`]), runs its timers ([`Servers::timers`]) and never
//! looks inside.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::os::fd::OwnedFd;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::Interest;

use crate::auth::{self, session::Session};
use crate::channel::Channel;
use crate::error::{Error, Result};
use crate::fork::{self, Work};
use crate::listener::{Listener, Server, ServerChild, ServerEvent, ServerOptions, ServerWork};
use crate::process::{self, deadline_after, Unreaped, EXIT_IDLE};
use crate::registry::{Entry, Full, Registry};
use crate::sys;
use crate::token::{Key, Sub};

mod handshake;
mod relay;

/// The servers' state that is not in the registry: their events, their
/// timers, and the spare descriptor.
#[derive(Debug, Default)]
pub(crate) struct Servers {
    events: VecDeque<ServerEvent>,
    /// Children that could get no pidfd: `waitpid` is retried.
    unreaped: Unreaped<Key>,
    /// Listeners pausing after `EMFILE`.
    paused: Vec<Key>,
    /// Handshakes in progress (their deadlines are timers).
    handshakes: Vec<Key>,
    /// The spare descriptor of the `EMFILE` method.
    spare: Option<File>,
}

/// `EMFILE` or `ENFILE`: out of descriptors (the process's or the system's).
pub(crate) fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

impl Servers {
    /// Events not yet taken.
    pub(crate) fn events_len(&self) -> usize {
        self.events.len()
    }

    /// Takes every event.
    pub(crate) fn take_events(&mut self) -> Vec<ServerEvent> {
        self.events.drain(..).collect()
    }

    /// Something a timer will need looking at: a child to retry `waitpid`
    /// on (at [`process::REAP_RETRY`]), or a deadline (see [`Servers::next_deadline`]).
    pub(crate) fn retrying(&self) -> bool {
        !self.unreaped.is_empty()
    }

    /// The earliest moment a timer of ours is due, if any.
    pub(crate) fn next_deadline(&self, tokens: &Registry) -> Option<Instant> {
        let paused = self
            .paused
            .iter()
            .filter_map(|&k| tokens.listener(k).and_then(|l| l.resume_at));
        let handshakes = self
            .handshakes
            .iter()
            .filter_map(|&k| tokens.pending(k).and_then(|p| p.deadline));
        paused.chain(handshakes).min()
    }

    /// Binds and registers a listener.
    pub(crate) fn listen(
        &mut self,
        tokens: &mut Registry,
        poll: &mio::Registry,
        addr: SocketAddr,
        opts: &ServerOptions,
        work: ServerWork,
    ) -> Result<Server> {
        if opts.require_encryption && opts.secret.is_none() {
            return Err(Error::Secret {
                origin: "ServerOptions".into(),
                reason: "encryption is required, and no secret given to key it".into(),
            });
        }
        if self.spare.is_none() {
            self.spare = Some(File::open("/dev/null").map_err(|e| Error::io("open", e))?);
        }
        let mut sock = TcpListener::bind(addr).map_err(|e| Error::io("bind", e))?;
        let addr = sock.local_addr().map_err(|e| Error::io("getsockname", e))?;
        let key = tokens.insert_with(|key| {
            poll.register(&mut sock, key.token(Sub::Main), Interest::READABLE)
                .map_err(|e| Error::io("epoll_ctl", e))?;
            Ok::<_, Error>(Entry::Listener(Listener {
                sock,
                addr,
                opts: opts.clone(),
                work,
                active: 0,
                handshaking: 0,
                paused: false,
                resume_at: None,
            }))
        })?;
        Ok(Server { key })
    }

    /// The server's listener, or [`Error::UnknownServer`].
    pub(crate) fn listener<'r>(&self, tokens: &'r Registry, s: Server) -> Result<&'r Listener> {
        tokens.listener(s.key).ok_or(Error::UnknownServer)
    }

    /// An event for one of the servers' entries.
    pub(crate) fn ready(&mut self, tokens: &mut Registry, poll: &mio::Registry, key: Key) {
        match tokens.get(key) {
            Some(Entry::Listener(_)) => self.accept_ready(tokens, poll, key),
            Some(Entry::Pending(_)) => self.auth_ready(tokens, poll, key),
            Some(Entry::Child(_)) => {
                self.reap_child(tokens, poll, key, None);
            }
            Some(Entry::Conn(_)) | None => {}
        }
    }

    /// Accepts until `WouldBlock`, forking a child per connection.
    fn accept_ready(&mut self, tokens: &mut Registry, poll: &mio::Registry, key: Key) {
        loop {
            let Some(l) = tokens.listener_mut(key) else {
                return;
            };
            if l.paused {
                return;
            }
            let server = Server { key };
            match l.sock.accept() {
                Ok((stream, peer)) => self.serve_connection(tokens, poll, key, stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ECONNABORTED) | Some(libc::EPROTO)
                    ) => {}
                Err(e) => {
                    let mut dropped = false;
                    if is_fd_exhaustion(&e) {
                        // The spare-descriptor method: free one, take the
                        // pending connection off the queue and close it, so a
                        // level-triggered embedder does not spin and an
                        // edge-triggered loop does not stall. (accept fails
                        // with EMFILE even when nothing is pending: then there
                        // is nothing to report, and the next connection
                        // raises a new event.)
                        self.spare = None;
                        let pending = l.sock.accept().map(drop);
                        // The accepted connection is closed: its descriptor
                        // becomes the spare again.
                        self.spare = File::open("/dev/null").ok();
                        match pending {
                            Ok(()) => dropped = true,
                            Err(again) if again.kind() == io::ErrorKind::WouldBlock => return,
                            Err(_) => {}
                        }
                    }
                    l.paused = true;
                    l.resume_at = deadline_after(l.opts.accept_backoff);
                    self.paused.push(key);
                    self.events.push_back(ServerEvent::AcceptFailed {
                        server,
                        error: Error::io("accept", e),
                        dropped,
                    });
                    return;
                }
            }
        }
    }

    fn serve_connection(
        &mut self,
        tokens: &mut Registry,
        poll: &mio::Registry,
        key: Key,
        stream: TcpStream,
        peer: SocketAddr,
    ) {
        let Some(l) = tokens.listener(key) else {
            return;
        };
        let server = Server { key };
        if l.active + l.handshaking >= l.opts.max_connections {
            drop(stream);
            self.events
                .push_back(ServerEvent::Rejected { server, peer });
            return;
        }
        if l.opts.secret.is_some() {
            let deadline = deadline_after(l.opts.auth_timeout);
            self.start_handshake(tokens, poll, server, stream, peer, deadline);
            return;
        }
        self.fork_for(tokens, poll, key, stream, peer, None);
    }

    /// Forks the child that serves an accepted (and, if asked, authenticated)
    /// connection; `session` seals and checks what follows the handshake
    /// (the child has it, the parent's copy is dropped).
    fn fork_for(
        &mut self,
        tokens: &mut Registry,
        poll: &mio::Registry,
        key: Key,
        stream: TcpStream,
        peer: SocketAddr,
        session: Option<Box<Session>>,
    ) {
        let Some(l) = tokens.listener_mut(key) else {
            return;
        };
        let server = Server { key };
        let std_stream = StdTcpStream::from(stream);
        let _ = std_stream.set_nodelay(true);
        let idle = l.opts.idle_timeout;
        if let (Some(limit), ServerWork::Exec(_), None) = (idle, &l.work, &session) {
            // The program reads the socket itself: the receive timeout is
            // the only limit miniray can set (see `idle_timeout`). Zero
            // would mean "none" to the kernel.
            let _ = std_stream.set_read_timeout(Some(limit.max(Duration::from_millis(1))));
        }
        if let Err(e) = std_stream.set_nonblocking(false) {
            self.events.push_back(ServerEvent::AcceptFailed {
                server,
                error: Error::io("fcntl", e),
                dropped: true,
            });
            return;
        }
        let fd = OwnedFd::from(std_stream);
        let Listener { opts, work, .. } = l;
        let forked = match (work, session) {
            (ServerWork::Run(work), session) => fork::spawn_child(
                &opts.line,
                &opts.child,
                fd,
                Work::Run(move |ch: &mut Channel| {
                    if let Some(session) = session {
                        ch.set_session(session);
                    }
                    ch.set_idle_timeout(idle);
                    let outcome = work(ch);
                    if ch.idle_expired() {
                        // The connection is already shut down; say why we
                        // leave in the exit status.
                        let _ = ch.flush();
                        sys::exit_now(EXIT_IDLE);
                    }
                    outcome
                }),
            ),
            (ServerWork::Exec(e), None) => fork::spawn_child::<fn(&mut Channel) -> Result<()>>(
                &opts.line,
                &opts.child,
                fd,
                Work::Exec(e),
            ),
            // The program cannot check tags or decrypt: this child relays.
            (ServerWork::Exec(e), Some(session)) => {
                let (line, child) = (&opts.line, &opts.child);
                fork::spawn_child(
                    line,
                    child,
                    fd,
                    Work::Run(move |ch: &mut Channel| {
                        ch.set_session(session);
                        relay::serve_exec(ch, e, line, child, idle)
                    }),
                )
            }
        };
        let pid = match forked {
            Ok(pid) => pid,
            Err(error) => {
                self.events.push_back(ServerEvent::AcceptFailed {
                    server,
                    error,
                    dropped: true,
                });
                return;
            }
        };
        // Counted and reported only once it is watched: a child that cannot
        // be is killed and reported as `AcceptFailed`, never served.
        if self.watch_child(tokens, poll, server, pid) {
            if let Some(l) = tokens.listener_mut(key) {
                l.active += 1;
            }
            self.events
                .push_back(ServerEvent::Accepted { server, peer, pid });
        }
    }

    /// Reaps a serving child when its pidfd reads ready (or by retrying);
    /// false if it could not be watched (then it is killed, reaped and
    /// reported as [`ServerEvent::AcceptFailed`]).
    fn watch_child(
        &mut self,
        tokens: &mut Registry,
        poll: &mio::Registry,
        server: Server,
        pid: libc::pid_t,
    ) -> bool {
        let mut watched = true;
        let inserted = tokens.insert_with(|key| {
            let pidfd = process::watch_exit(poll, pid, key.token(Sub::Main), None);
            watched = pidfd.is_some();
            Ok::<_, Full>(Entry::Child(ServerChild { pid, server, pidfd }))
        });
        match inserted {
            Ok(key) => {
                if !watched {
                    self.unreaped.push(key);
                }
                true
            }
            // No slot (2³¹ entries): it cannot be watched, so it is not
            // served; end it now rather than leave a zombie.
            Err(Full) => {
                process::kill_reap(pid);
                self.events.push_back(ServerEvent::AcceptFailed {
                    server,
                    error: Full.into(),
                    dropped: true,
                });
                false
            }
        }
    }

    /// Tries to reap one serving child (`status`: already reaped with it);
    /// true once it is gone.
    fn reap_child(
        &mut self,
        tokens: &mut Registry,
        poll: &mio::Registry,
        key: Key,
        status: Option<Option<ExitStatus>>,
    ) -> bool {
        let Some(c) = tokens.child(key) else {
            return true;
        };
        let Some(status) = status.or_else(|| process::try_reap(c.pid)) else {
            return false;
        };
        let Some(Entry::Child(mut c)) = tokens.remove(key) else {
            return true;
        };
        if let Some(fd) = c.pidfd.take() {
            process::unwatch(poll, fd);
        }
        if let Some(l) = tokens.listener_mut(c.server.key) {
            l.active = l.active.saturating_sub(1);
        }
        self.events.push_back(ServerEvent::Exited {
            server: c.server,
            pid: c.pid,
            status,
        });
        true
    }

    /// Expires handshakes, retries `waitpid` for children without a pidfd,
    /// and resumes paused listeners whose back-off is over.
    pub(crate) fn timers(&mut self, tokens: &mut Registry, poll: &mio::Registry) {
        if !self.handshakes.is_empty() {
            self.expire_handshakes(tokens, poll);
        }
        if !self.unreaped.is_empty() {
            let mut list = std::mem::take(&mut self.unreaped);
            list.retry(|&k| self.reap_child(tokens, poll, k, None));
            self.unreaped.put_back(list);
        }
        if !self.paused.is_empty() {
            let now = Instant::now();
            let list = std::mem::take(&mut self.paused);
            for key in list {
                let due = match tokens.listener_mut(key) {
                    Some(l) if l.paused => match l.resume_at {
                        Some(t) if t <= now => {
                            l.paused = false;
                            l.resume_at = None;
                            true
                        }
                        // Not yet; or never (an endless back-off).
                        _ => {
                            self.paused.push(key);
                            false
                        }
                    },
                    _ => false,
                };
                if due {
                    // Edge-triggered: connections queued while paused raise
                    // no new event, so look now.
                    self.accept_ready(tokens, poll, key);
                }
            }
        }
    }

    /// Stops a server (see [`Reactor::stop_server`](crate::Reactor::stop_server)).
    pub(crate) fn stop(
        &mut self,
        tokens: &mut Registry,
        poll: &mio::Registry,
        s: Server,
        grace: Duration,
    ) -> Result<()> {
        self.listener(tokens, s)?;
        let Some(Entry::Listener(mut l)) = tokens.remove(s.key) else {
            return Err(Error::UnknownServer);
        };
        let _ = poll.deregister(&mut l.sock);
        drop(l);
        // Its handshakes end with it: their clients read EOF now, not when
        // the reactor is dropped (with `auth_timeout(Duration::MAX)` they
        // would otherwise be held for good).
        let handshakes: Vec<Key> = self
            .handshakes
            .iter()
            .copied()
            .filter(|&k| tokens.pending(k).is_some_and(|p| p.server == s))
            .collect();
        for key in handshakes {
            if let Some(p) = self.end_handshake(tokens, poll, key) {
                handshake::refuse(
                    p.stream,
                    &auth::handshake::refusal(auth::handshake::STOPPED),
                );
                self.events.push_back(ServerEvent::AuthFailed {
                    server: p.server,
                    peer: p.peer,
                    reason: "server stopped",
                });
            }
        }
        // The spare descriptor is for accepting: with no listener left,
        // close it (`listen` opens it again), so a server costs its
        // listener and one spare, and none is held once all are stopped.
        if !tokens.iter().any(|(_, e)| matches!(e, Entry::Listener(_))) {
            self.spare = None;
        }
        let mine: Vec<Key> = tokens
            .iter()
            .filter_map(|(k, e)| match e {
                Entry::Child(c) if c.server == s => Some(k),
                _ => None,
            })
            .collect();
        self.end_children(tokens, poll, &mine, grace);
        Ok(())
    }

    /// `SIGTERM`, bounded grace, `SIGKILL`, reap: for serving children.
    fn end_children(
        &mut self,
        tokens: &mut Registry,
        poll: &mio::Registry,
        keys: &[Key],
        grace: Duration,
    ) {
        let mut pids = Vec::with_capacity(keys.len());
        for &k in keys {
            if let Some(c) = tokens.child(k) {
                let _ = process::signal_group(c.pid, libc::SIGTERM);
                pids.push((k, c.pid));
            }
        }
        let just_pids: Vec<libc::pid_t> = pids.iter().map(|&(_, p)| p).collect();
        let statuses = process::reap_within(&just_pids, deadline_after(grace));
        for ((k, _), status) in pids.into_iter().zip(statuses) {
            self.reap_child(tokens, poll, k, Some(status));
        }
        self.unreaped.retain(|&k| tokens.child(k).is_some());
    }

    /// Stops every server, and ends children whose server is gone.
    pub(crate) fn stop_all(
        &mut self,
        tokens: &mut Registry,
        poll: &mio::Registry,
        grace: Duration,
    ) {
        let servers: Vec<Server> = tokens
            .iter()
            .filter_map(|(key, e)| matches!(e, Entry::Listener(_)).then_some(Server { key }))
            .collect();
        for s in servers {
            let _ = self.stop(tokens, poll, s, grace);
        }
        let rest: Vec<Key> = tokens
            .iter()
            .filter_map(|(k, e)| matches!(e, Entry::Child(_)).then_some(k))
            .collect();
        self.end_children(tokens, poll, &rest, grace);
        // Handshakes in progress are closed with the reactor.
        let pending: Vec<Key> = self.handshakes.clone();
        for key in pending {
            self.end_handshake(tokens, poll, key);
        }
    }
}
