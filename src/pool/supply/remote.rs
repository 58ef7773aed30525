//! [`HostsSupply`]: connections to `serve` hosts, each a worker of the
//! pool, supervised host by host and following the membership a source
//! feeds.
//!
//! How hosts are supervised is told on [`Hosts`]. A host's health moves
//! only on what it did: a connection that answered something (its hello,
//! or a call) resets its failures and the all-down clock; a connection
//! that closed before any answer, a refused or late connect, count as a
//! failure; a call that hit its deadline leaves the host probed by one
//! call at a time until it answers again.
//!
//! Membership: hosts are numbered by their place in `hosts` (the
//! `Origin.host` of their workers), so entries are never removed. A
//! drained host is marked, gets no new connection and no new call (the
//! pool closes its idle workers: [`Supply::retiring`]), and is gone once
//! its last connection ends. An address added again takes its old entry
//! back. Memory: one entry per distinct address ever added.

use std::any::Any;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::hosts::{HostState, HostStatus, Hosts, Protocol};
use super::membership::Membership;
use super::{End, Outlook, Started, Supply};
use crate::cluster::HostChange;
use crate::error::{Error, Result};
use crate::reactor::Reactor;
use crate::task::calls::{Proto, Stop};
use crate::worker::Worker;

/// How often connects under way are looked at (their completion wakes no
/// wait of the pool's).
const CONNECT_TICK: Duration = Duration::from_millis(5);

/// Connections a host may close on our hello before it is taken for a
/// plain peer.
const HELLO_TRIES: u32 = 2;

/// When a host may be tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Retry {
    Now,
    At(Instant),
    Never,
}

#[derive(Debug)]
struct Host {
    status: HostStatus,
    retry: Retry,
    /// Connects under way.
    connecting: usize,
    /// It answered since its last failure.
    serving: bool,
    /// It closed connections beyond this many before they answered: it is
    /// kept at this many.
    cap: Option<usize>,
    /// A try hit its deadline here: one call at a time until it answers.
    suspect: bool,
    /// The probing call is out.
    probe_out: bool,
    /// Connections closed on our hello, in a row, while no hello of its was
    /// ever answered.
    hello_closed: u32,
}

impl Host {
    /// A host just added: nothing known of it yet.
    fn new(addr: SocketAddr, protocol: Protocol) -> Host {
        Host {
            status: HostStatus {
                addr,
                state: HostState::Serving,
                connections: 0,
                answered: 0,
                failures: 0,
                last_error: None,
                framed: (protocol == Protocol::Plain).then_some(false),
                refused: false,
            },
            retry: Retry::Now,
            connecting: 0,
            serving: false,
            cap: None,
            suspect: false,
            probe_out: false,
            hello_closed: 0,
        }
    }

    fn due(&self, now: Instant) -> bool {
        self.status.state == HostState::Serving
            && match self.retry {
                Retry::Now => true,
                Retry::At(t) => t <= now,
                Retry::Never => false,
            }
    }

    /// A draining host with no connection left is gone.
    fn settle(&mut self) {
        if self.status.state == HostState::Draining
            && self.status.connections == 0
            && self.connecting == 0
        {
            self.status.state = HostState::Gone;
        }
    }
}

/// A connect under way.
#[derive(Debug)]
struct Pending {
    worker: Worker,
    host: usize,
    until: Option<Instant>,
}

/// A remote supply (see the module docs).
#[derive(Debug)]
pub(crate) struct HostsSupply {
    cfg: Hosts,
    hosts: Vec<Host>,
    /// Each address's entry in `hosts`.
    index: HashMap<SocketAddr, usize>,
    pending: Vec<Pending>,
    /// Since when no connection was open (nor answered).
    all_down_since: Option<Instant>,
    stopped: bool,
    /// The running source, once started.
    membership: Option<Membership>,
    /// Changes taken from the source, applied in order (kept for its
    /// allocation).
    changes: Vec<HostChange>,
}

impl HostsSupply {
    pub(crate) fn new(cfg: &Hosts) -> Self {
        let mut supply = HostsSupply {
            cfg: cfg.clone(),
            hosts: Vec::new(),
            index: HashMap::new(),
            pending: Vec::new(),
            all_down_since: None,
            stopped: false,
            membership: None,
            changes: Vec::new(),
        };
        for &addr in &cfg.addrs {
            supply.add(addr);
        }
        supply
    }

    /// Starts the host source, if the hosts have one: its wake-up pipe in
    /// `reactor`, then the source itself (threads, `srun`). Errors: the
    /// pipe, or the source's own.
    pub(crate) fn start(&mut self, reactor: &mut Reactor) -> Result<()> {
        if let (Some(source), None) = (&self.cfg.source, &self.membership) {
            self.membership = Some(Membership::start(source, reactor)?);
        }
        Ok(())
    }

    /// The bound on one connection attempt.
    pub(crate) fn connect_timeout(&self) -> Duration {
        self.cfg.connect_timeout
    }

    /// Adds `addr`: a new entry, or its old one back with a clean record.
    fn add(&mut self, addr: SocketAddr) {
        match self.index.get(&addr) {
            Some(&h) => {
                let host = &mut self.hosts[h];
                if host.status.state != HostState::Serving {
                    // Connections still closing stay counted until they end.
                    let (connections, connecting) = (host.status.connections, host.connecting);
                    *host = Host::new(addr, self.cfg.protocol);
                    host.status.connections = connections;
                    host.connecting = connecting;
                }
            }
            None => {
                self.index.insert(addr, self.hosts.len());
                self.hosts.push(Host::new(addr, self.cfg.protocol));
            }
        }
    }

    /// Drains `addr`: no new connection or call; its connects under way are
    /// dropped; gone once its last connection ends. An unknown address is
    /// ignored.
    fn drain(&mut self, addr: SocketAddr, reactor: &mut Reactor) {
        let Some(&h) = self.index.get(&addr) else {
            return;
        };
        if self.hosts[h].status.state != HostState::Serving {
            return;
        }
        self.hosts[h].status.state = HostState::Draining;
        self.pending.retain(|p| {
            if p.host != h {
                return true;
            }
            reactor.remove_conn(p.worker);
            false
        });
        self.hosts[h].connecting = 0;
        self.hosts[h].settle();
    }

    /// Applies what the source sent since the last turn.
    fn follow(&mut self, reactor: &mut Reactor) {
        let Some(m) = &mut self.membership else {
            return;
        };
        let mut changes = std::mem::take(&mut self.changes);
        m.take(&mut changes);
        for change in changes.drain(..) {
            match change {
                HostChange::Add(addr) => self.add(addr),
                HostChange::Drain(addr) => self.drain(addr, reactor),
            }
        }
        self.changes = changes;
    }

    /// A failure of host `h`: back off. Several connections lost (or
    /// connects failed) together, as when the host died, count once: only
    /// a host not already waiting counts.
    fn failed(&mut self, h: usize, why: String, now: Instant) {
        let host = &mut self.hosts[h];
        host.status.last_error = Some(why);
        host.serving = false;
        if matches!(host.retry, Retry::At(t) if t > now) || host.retry == Retry::Never {
            return;
        }
        host.status.failures = host.status.failures.saturating_add(1);
        host.retry = match self.cfg.backoff_after(host.status.failures) {
            Some(wait) => now.checked_add(wait).map_or(Retry::Never, Retry::At),
            None => Retry::Never,
        };
    }

    /// Host `h` failed with `e`: an authentication failure of settings
    /// (a wrong secret, a missing one) refuses it for good, naming the
    /// cause; anything else backs off.
    fn failed_with(&mut self, h: usize, e: &Error, now: Instant) {
        match e {
            Error::Auth { reason, .. } if reason.is_setting() => {
                let host = &mut self.hosts[h];
                host.status.refused = true;
                host.serving = false;
                host.retry = Retry::Never;
                host.status.failures = host.status.failures.saturating_add(1);
                host.status.last_error = Some(e.to_string());
            }
            _ => self.failed(h, e.to_string(), now),
        }
    }

    /// Connections host `h` should have now: none once drained, its share
    /// when healthy, one to probe it while it has failures.
    fn wanted(&self, h: usize) -> usize {
        let host = &self.hosts[h];
        if host.status.state != HostState::Serving {
            0
        } else if host.status.failures == 0 {
            host.cap
                .map_or(self.cfg.per_host, |c| c.min(self.cfg.per_host))
        } else {
            1
        }
    }

    fn describe(&self) -> String {
        let hosts: Vec<String> = self
            .hosts
            .iter()
            .filter(|h| h.status.state != HostState::Gone)
            .map(|h| h.status.to_string())
            .collect();
        match (hosts.is_empty(), &self.cfg.source) {
            (false, _) => hosts.join("; "),
            (true, Some(source)) if self.hosts.is_empty() => {
                format!("no host yet from {source:?}")
            }
            (true, _) => "every host drained".to_string(),
        }
    }

    /// Host `h` answered (a call, or its hello): it works.
    fn works(&mut self, h: usize) {
        let host = &mut self.hosts[h];
        if !host.serving {
            // Back: its full share again, at once.
            host.retry = Retry::Now;
        }
        host.serving = true;
        host.status.failures = 0;
        if host.cap.is_none() {
            host.status.last_error = None;
        }
        host.suspect = false;
        host.probe_out = false;
        self.all_down_since = None;
    }

    /// Connects that finished become workers; failed or late ones count
    /// against their host.
    fn progress_connects(
        &mut self,
        reactor: &mut Reactor,
        now: Instant,
        started: &mut Vec<Started>,
    ) {
        for p in std::mem::take(&mut self.pending) {
            let h = p.host;
            match reactor.connect_progress(p.worker, &self.cfg.connect) {
                Ok(false) if p.until.is_none_or(|u| u > now) => {
                    self.pending.push(p);
                    continue;
                }
                Ok(false) => {
                    // Late: why (no challenge from a host without a secret,
                    // no verdict, or just late).
                    match reactor.connect_abandon(p.worker) {
                        Error::Timeout => {
                            let why =
                                format!("connect timed out after {:?}", self.cfg.connect_timeout);
                            self.failed(h, why, now);
                        }
                        e => self.failed_with(h, &e, now),
                    }
                }
                Ok(true) => {
                    self.hosts[h].status.connections += 1;
                    let proto = match self.hosts[h].status.framed {
                        Some(true) | None if self.cfg.protocol == Protocol::Auto => Proto::Hello,
                        _ => Proto::Plain,
                    };
                    started.push(Started {
                        worker: p.worker,
                        proto,
                        host: Some(h),
                        kind: None,
                    });
                }
                Err(e) => self.failed_with(h, &e, now),
            }
            let c = &mut self.hosts[h].connecting;
            *c = c.saturating_sub(1);
        }
    }
}

impl Supply for HostsSupply {
    /// Applies the source's changes, finishes connects under way, then
    /// starts connects to hosts that are due, healthy ones (then the least
    /// connected) first, up to each one's wanted connections.
    fn top_up(&mut self, reactor: &mut Reactor, now: Instant, started: &mut Vec<Started>) {
        self.follow(reactor);
        self.progress_connects(reactor, now, started);
        if self.stopped {
            return;
        }
        let mut order: Vec<usize> = (0..self.hosts.len())
            .filter(|&h| self.hosts[h].due(now))
            .collect();
        order.sort_by_key(|&h| {
            let s = &self.hosts[h].status;
            (s.failures, s.connections)
        });
        let until = now.checked_add(self.cfg.connect_timeout);
        for h in order {
            while self.hosts[h].status.connections + self.hosts[h].connecting < self.wanted(h) {
                let addr = self.hosts[h].status.addr;
                match reactor.connect_start(addr, &self.cfg.connect) {
                    Ok(worker) => {
                        self.hosts[h].connecting += 1;
                        self.pending.push(Pending {
                            worker,
                            host: h,
                            until,
                        });
                    }
                    Err(e) => {
                        self.failed(h, e.to_string(), now);
                        break;
                    }
                }
            }
        }
    }

    fn ended(&mut self, end: &End, now: Instant) {
        let Some(h) = end.host else {
            return;
        };
        let host = &mut self.hosts[h];
        host.status.connections = host.status.connections.saturating_sub(1);
        host.probe_out = false;
        if host.status.state != HostState::Serving {
            // Leaving: no failure to count, nothing to reconnect.
            host.settle();
            return;
        }
        if let Some(e) = &end.broke {
            return self.failed_with(h, e, now);
        }
        if end.hello_unanswered && host.status.framed.is_none() {
            // It closed on our hello: a plain peer choking on it, or a host
            // that closes connections for another reason (a limit, a
            // secret). Twice in a row, and never a hello answered: plain,
            // and its next connections speak plainly.
            host.hello_closed += 1;
            if host.hello_closed >= HELLO_TRIES {
                host.status.framed = Some(false);
                host.retry = Retry::Now;
                return;
            }
        }
        if end.on_purpose || matches!(end.stopped, Some(Stop::Owner | Stop::Cancelled)) {
            return;
        }
        if end.answers == 0 && end.stopped.is_none() && host.status.connections > 0 {
            // Closed at once while its other connections serve: the host
            // takes no more than those (a connection limit below per_host).
            // Keep it at what it serves rather than reconnect in a loop.
            host.cap = Some(host.status.connections);
            host.status.last_error = Some(format!(
                "closed a connection before any answer while {} others serve: kept at {}",
                host.status.connections, host.status.connections
            ));
            return;
        }
        let why = match end.stopped {
            Some(Stop::Deadline) => "a task's deadline passed: connection dropped",
            Some(Stop::OutOfSync) => "the host lost step: connection dropped",
            _ if end.answers == 0 => "connection closed before any answer",
            _ => "connection lost (EOF or reset)",
        };
        self.failed(h, why.to_string(), now);
    }

    fn answered(&mut self, host: Option<usize>) {
        if let Some(h) = host {
            let n = &mut self.hosts[h].status.answered;
            *n = n.saturating_add(1);
            self.works(h);
        }
    }

    fn deadline_hit(&mut self, host: Option<usize>) {
        if let Some(h) = host {
            self.hosts[h].suspect = true;
        }
    }

    fn may_take(&self, host: Option<usize>) -> bool {
        host.is_none_or(|h| !(self.hosts[h].suspect && self.hosts[h].probe_out))
    }

    fn dispatched(&mut self, host: Option<usize>) {
        if let Some(h) = host {
            if self.hosts[h].suspect {
                self.hosts[h].probe_out = true;
            }
        }
    }

    fn retiring(&self, host: Option<usize>) -> bool {
        host.is_some_and(|h| self.hosts[h].status.state != HostState::Serving)
    }

    fn wake_at(&self, now: Instant) -> Option<Instant> {
        let connects = (!self.pending.is_empty()).then(|| now + CONNECT_TICK);
        let retry = self
            .hosts
            .iter()
            .filter(|h| h.status.state == HostState::Serving)
            .filter_map(|h| match h.retry {
                Retry::At(t) => Some(t),
                _ => None,
            })
            .min();
        let give_up = self
            .all_down_since
            .and_then(|s| s.checked_add(self.cfg.give_up_after));
        [connects, retry, give_up].into_iter().flatten().min()
    }

    fn outlook(&mut self, now: Instant) -> Outlook {
        // Every host refused us for its settings: no use waiting (a source
        // may still add others).
        let mut live = self
            .hosts
            .iter()
            .filter(|h| h.status.state != HostState::Gone)
            .peekable();
        if live.peek().is_some() && live.all(|h| h.status.refused) && self.cfg.source.is_none() {
            return Outlook::GaveUp(format!("every host refused: {}", self.describe()));
        }
        // Only a host that answered counts as up: connections that open and
        // close unanswered do not stop the clock. A draining host still
        // finishing its tries counts.
        if self
            .hosts
            .iter()
            .any(|h| h.serving && h.status.connections > 0)
        {
            self.all_down_since = None;
            return Outlook::Working;
        }
        let since = *self.all_down_since.get_or_insert(now);
        match since.checked_add(self.cfg.give_up_after) {
            Some(give_up) if give_up <= now => Outlook::GaveUp(format!(
                "no host served for {:?}: {}",
                now.duration_since(since),
                self.describe()
            )),
            _ => Outlook::Working,
        }
    }

    fn stop(&mut self) {
        self.stopped = true;
    }

    fn starting(&self) -> bool {
        !self.pending.is_empty()
    }

    fn spoke(&mut self, host: Option<usize>, framed: bool) {
        if let Some(h) = host {
            self.hosts[h].status.framed = Some(framed);
            self.hosts[h].hello_closed = 0;
            self.works(h);
        }
    }

    fn host_addr(&self, host: usize) -> Option<SocketAddr> {
        self.hosts.get(host).map(|h| h.status.addr)
    }

    fn host_statuses(&self) -> Vec<HostStatus> {
        self.hosts.iter().map(|h| h.status.clone()).collect()
    }

    /// The hosts that take calls now (a retry may avoid its host only
    /// while another one does).
    fn hosts(&self) -> usize {
        self.hosts
            .iter()
            .filter(|h| h.status.state == HostState::Serving)
            .count()
    }

    fn host_source(&self) -> Option<&dyn Any> {
        self.membership.as_ref().map(Membership::source)
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Feed;
    use std::sync::{Arc, Mutex};

    #[test]
    fn give_up_after_max_never_gives_up() {
        let cfg = Hosts::new(["127.0.0.2:7000"])
            .expect("resolve")
            .give_up_after(Duration::MAX);
        let mut s = HostsSupply::new(&cfg);
        let now = Instant::now();
        assert!(matches!(s.outlook(now), Outlook::Working));
        assert!(matches!(
            s.outlook(now + Duration::from_secs(3600)),
            Outlook::Working
        ));
        let soon = Hosts::new(["127.0.0.2:7000"])
            .expect("resolve")
            .give_up_after(Duration::from_millis(10));
        let mut s = HostsSupply::new(&soon);
        assert!(matches!(s.outlook(now), Outlook::Working));
        assert!(matches!(
            s.outlook(now + Duration::from_secs(1)),
            Outlook::GaveUp(_)
        ));
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    fn states(s: &HostsSupply) -> Vec<(SocketAddr, HostState)> {
        s.host_statuses()
            .into_iter()
            .map(|h| (h.addr, h.state))
            .collect()
    }

    #[test]
    fn a_feed_wakes_the_reactor_and_hosts_keep_their_numbers() {
        let slot: Arc<Mutex<Option<Feed>>> = Arc::new(Mutex::new(None));
        let kept = slot.clone();
        let cfg = Hosts::source(move |feed| {
            *kept.lock().expect("lock") = Some(feed);
            Ok(7u32)
        })
        .give_up_after(Duration::from_millis(10));
        let mut r = Reactor::new().expect("reactor");
        let mut s = HostsSupply::new(&cfg);
        s.start(&mut r).expect("start");
        let feed = slot
            .lock()
            .expect("lock")
            .take()
            .expect("started with a feed");
        assert_eq!(
            s.host_source().and_then(|g| g.downcast_ref::<u32>()),
            Some(&7)
        );
        let now = Instant::now();
        assert!(matches!(s.outlook(now), Outlook::Working));
        match s.outlook(now + Duration::from_secs(1)) {
            Outlook::GaveUp(why) => {
                assert!(why.ends_with("no host yet from a host source"), "{why}")
            }
            Outlook::Working => panic!("no host, and past the bound"),
        }

        let (a, b) = (addr("127.0.0.2:9"), addr("127.0.0.3:9"));
        assert!(feed.send(HostChange::Add(a)) && feed.send(HostChange::Add(b)));
        // The wake-up ends a wait at once, as a user event of the pool's.
        let t = Instant::now();
        r.wait_any(Some(Duration::from_secs(5))).expect("wait");
        assert!(t.elapsed() < Duration::from_secs(2), "not woken");
        assert!(!r.take_user_events().is_empty());
        let mut started = Vec::new();
        s.top_up(&mut r, Instant::now(), &mut started);
        assert_eq!(
            states(&s),
            [(a, HostState::Serving), (b, HostState::Serving)]
        );
        assert_eq!(s.hosts(), 2);
        assert!(s.starting(), "connects to both under way");

        // A drain: its connect under way dropped, gone, still numbered 0.
        assert!(feed.send(HostChange::Drain(a)));
        assert!(feed.send(HostChange::Drain(addr("127.0.0.4:9"))));
        s.top_up(&mut r, Instant::now(), &mut started);
        assert_eq!(states(&s), [(a, HostState::Gone), (b, HostState::Serving)]);
        assert!(s.retiring(Some(0)) && !s.retiring(Some(1)) && !s.retiring(None));
        assert_eq!(s.hosts(), 1);
        assert_eq!(s.host_addr(0), Some(a));
        assert_eq!(s.pending.len(), 1, "only b's connect is left");

        // Added again: back in its place, with a clean record.
        assert!(feed.send(HostChange::Add(a)));
        s.top_up(&mut r, Instant::now(), &mut started);
        assert_eq!(
            states(&s),
            [(a, HostState::Serving), (b, HostState::Serving)]
        );
        assert_eq!(s.host_statuses()[0].failures, 0);
        assert!(!s.retiring(Some(0)));
        for p in std::mem::take(&mut s.pending) {
            r.remove_conn(p.worker);
        }
    }
}
