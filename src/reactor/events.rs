//! One stream of everything a wait can report: [`Event`] (a ready worker, a
//! server's event, a user source's readiness), [`Reactor::wait_events`],
//! and the bookkeeping that lets `wait_any` leave server and user events
//! queued without spinning on them ([`Announced`]).

use std::time::Duration;

use mio::Token;

use super::Reactor;
use crate::error::Result;
use crate::listener::ServerEvent;
use crate::worker::Worker;

/// One item of [`Reactor::wait_events`]: whatever a wait found, of any kind.
///
/// New kinds may be added, so match with a wildcard arm.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// This worker has queued messages or state changes (a message, a
    /// failed message, `Exited`, `Closed`): drain it with
    /// [`Reactor::try_recv`] until `Ok(None)` or an error. Like
    /// [`Reactor::wait_any`]'s list, it names each ready worker once per
    /// wait; a worker left undrained is named again by the next wait.
    Worker(Worker),
    /// Something happened at a server (taken from its queue: it will not be
    /// in [`Reactor::take_server_events`] again).
    Server(ServerEvent),
    /// One of the caller's own sources is ready (taken, as above, from
    /// [`Reactor::take_user_events`]'s queue).
    User(UserEvent),
}

/// Readiness of one of the caller's own sources, from
/// [`Reactor::take_user_events`] or [`Event::User`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserEvent {
    /// The token the source was registered with.
    pub token: Token,
    /// Readable (or read side closed).
    pub readable: bool,
    /// Writable.
    pub writable: bool,
    /// The peer closed its side (read or write).
    pub closed: bool,
    /// An error is pending on the source.
    pub error: bool,
}

/// The lengths of the user and server event queues when `wait_any` last
/// returned. The queues only grow until they are taken whole, so a queue
/// longer than its mark holds events `wait_any` has not returned for yet;
/// only those end its wait, so events left untaken never make it spin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Announced {
    /// User events queued at the last announcement.
    pub(crate) user: usize,
    /// Server events queued at the last announcement.
    pub(crate) server: usize,
}

impl Announced {
    /// Whether queues of these lengths hold events not yet announced.
    pub(crate) fn fresh(&self, now: Announced) -> bool {
        now.user > self.user || now.server > self.server
    }
}

impl Reactor {
    /// Everything the reactor has to report, in one stream: ready workers
    /// ([`Event::Worker`], to drain with [`Reactor::try_recv`]), then server
    /// events ([`Event::Server`]) in the order they happened, then the
    /// readiness of the caller's own sources ([`Event::User`]) in the order
    /// `epoll` reported it. Waits up to `timeout` as
    /// [`Reactor::wait_any`] does (`None` without limit, `Some(ZERO)` only
    /// polls), returning at once when anything is queued, and an empty list
    /// at once for a reactor with no workers, servers or user sources and
    /// nothing queued.
    ///
    /// Every server and user event queued is taken, including those a
    /// [`Reactor::wait_any`] returned for and left untaken; so
    /// [`Reactor::take_server_events`] and [`Reactor::take_user_events`]
    /// are empty right after it. Workers are only named: their messages
    /// stay queued until `try_recv`.
    ///
    /// Embedded (see the crate docs), the reactor's descriptor is readable
    /// whenever a `wait_events` would return something, as for `wait_any`.
    ///
    /// # Example
    ///
    /// ```
    /// use miniray::{py, Event, Reactor, Value};
    /// use std::time::Duration;
    ///
    /// let mut reactor = Reactor::new()?;
    /// let w = reactor.spawn(|msg: Value| py!({"echo": msg}))?;
    /// reactor.send(w, &1)?;
    /// let mut replies = Vec::new();
    /// for event in reactor.wait_events(Some(Duration::from_secs(5)))? {
    ///     match event {
    ///         Event::Worker(w) => {
    ///             while let Some(reply) = reactor.try_recv::<Value>(w)? {
    ///                 replies.push(reply);
    ///             }
    ///         }
    ///         Event::Server(e) => eprintln!("server: {e:?}"),
    ///         Event::User(u) => eprintln!("source {:?} ready", u.token),
    ///         _ => {}
    ///     }
    /// }
    /// assert_eq!(replies, vec![py!({"echo": 1})]);
    /// # Ok::<(), miniray::Error>(())
    /// ```
    pub fn wait_events(&mut self, timeout: Option<Duration>) -> Result<Vec<Event>> {
        let mut out = Vec::new();
        self.wait_events_into(&mut out, timeout)?;
        Ok(out)
    }

    /// [`Reactor::wait_events`] into a caller's vector (cleared first), to
    /// reuse its allocation.
    pub fn wait_events_into(
        &mut self,
        out: &mut Vec<Event>,
        timeout: Option<Duration>,
    ) -> Result<()> {
        out.clear();
        self.wait_for(timeout, |r| {
            r.recheck_ready();
            out.extend(r.ready.iter().copied().map(Event::Worker));
            out.extend(r.servers.take_events().into_iter().map(Event::Server));
            out.extend(r.user_events.drain(..).map(Event::User));
            r.announced = Announced::default();
            !out.is_empty()
        })
    }

    /// The readiness events of the caller's own sources since the last call
    /// (or the last [`Reactor::wait_events`], which takes them too).
    pub fn take_user_events(&mut self) -> Vec<UserEvent> {
        self.announced.user = 0;
        std::mem::take(&mut self.user_events)
    }

    /// The lengths of the user and server event queues now.
    pub(crate) fn queued_events(&self) -> Announced {
        Announced {
            user: self.user_events.len(),
            server: self.servers.events_len(),
        }
    }
}
