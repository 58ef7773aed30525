//! Remote workers: connections to `serve` hosts ([`Hosts`]), each a worker
//! of the pool, supervised host by host.
//!
//! How hosts are supervised is told on [`Hosts`]. A host's health moves
//! only on what it did: a connection that answered something (its hello,
//! or a call) resets its failures and the all-down clock; a connection
//! that closed before any answer, a refused or late connect, count as a
//! failure; a call that hit its deadline leaves the host probed by one
//! call at a time until it answers again.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::{End, Outlook, Started, Supply};
use crate::client::{ConnectOptions, Keepalive};
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

/// Whether a pool asks its hosts to speak frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Protocol {
    /// Ask with a hello (`#h0 miniray/1`) on every new connection: a
    /// miniray host accepts and its connection carries frames (replies
    /// matched by id, chunks, several requests at once); any other answer,
    /// or the connection closing on it, makes the host plain (remembered
    /// for the host's later connections). The default.
    #[default]
    Auto,
    /// Plain lines only, no hello: for peers that would choke on one (the
    /// original Python library's server sees a line it cannot read once per
    /// connection otherwise).
    Plain,
}

/// The endpoints of a [`Pool::remote`](crate::pool::Pool::remote) and how
/// to reach them.
///
/// Every address a name resolves to is a host of its own, so one DNS name
/// of a Kubernetes headless Service (which resolves to every pod) spreads
/// the pool over all its pods. Names are resolved once, by [`Hosts::new`].
///
/// Supervision, host by host:
/// * A connection that ends (EOF, a reset, keepalive giving up) fails
///   exactly its tries in flight, which run again on other connections
///   (another host when there is one); the connection is replaced by
///   reconnecting, healthy hosts first.
/// * A host that refuses, or whose connection closed before answering
///   anything, is retried with exponential backoff ([`Hosts::backoff`],
///   50 ms doubling to 5 s by default) and meanwhile given no work; while
///   it has failures it gets one probing connection, and its full share
///   again after its first answer. Tries lost on a connection that never
///   answered are not counted against their tasks. Other hosts go on.
/// * A host whose try hit its deadline gets one probing task at a time
///   until it answers again.
/// * A host that goes silent without closing (a stopped process) is found
///   by the task deadline ([`PoolOptions::timeout`](crate::pool::PoolOptions::timeout):
///   the connection is dropped and the tries retried elsewhere); a network
///   partition also by TCP keepalive ([`Keepalive`]).
/// * When no connection is left and every host stayed unreachable for
///   [`Hosts::give_up_after`], the waiting tasks fail with
///   [`Cause::NoWorkers`](crate::task::Cause::NoWorkers) naming each host
///   and its last error; the pool keeps trying, and takes work again once
///   a host is back.
///
/// Connects are non-blocking: while one is under way (each bounded by
/// [`Hosts::connect_timeout`]) the pool goes on with the other hosts.
///
/// ```no_run
/// use std::time::Duration;
/// use miniray::pool::{Hosts, Pool, PoolOptions};
///
/// # fn main() -> miniray::Result<()> {
/// // Each host runs a server answering a line per request while its reactor
/// // is waited on: see `Reactor::listen` for a complete host program.
/// let hosts = Hosts::new(["10.0.0.5:7000", "10.0.0.6:7000"])?.per_host(8);
/// // Or every pod behind one name: Hosts::new(["workers.default.svc.cluster.local:7000"])?
/// let opts = PoolOptions::new().timeout(Duration::from_secs(30)).chunk_size_auto();
/// let mut pool: Pool<u64, u64> = Pool::remote(&opts, &hosts)?;
/// let sum: u64 = pool.map(0..1000u64).map(|r| r.expect("no task failed")).sum();
/// # let _ = sum;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Hosts {
    addrs: Vec<SocketAddr>,
    per_host: usize,
    connect: ConnectOptions,
    connect_timeout: Duration,
    backoff_first: Duration,
    backoff_max: Duration,
    give_up_after: Duration,
    protocol: Protocol,
}

impl Hosts {
    /// The hosts at `addrs`: each entry (`"host:port"`, a [`SocketAddr`],
    /// `("name", port)`) is resolved and every address it yields is one host
    /// (duplicates once). Defaults: 1 connection per host, JSON with
    /// [`Keepalive::default`], a 2 s connect timeout, backoff from 50 ms
    /// doubling to 5 s, giving up after 10 s with every host down, frames
    /// asked for ([`Protocol::Auto`]).
    ///
    /// Errors: [`Error::Io`] with `op` `"resolve"`: an entry that does not
    /// resolve (naming it by position), or no address at all.
    pub fn new<I>(addrs: I) -> Result<Self>
    where
        I: IntoIterator,
        I::Item: ToSocketAddrs,
    {
        let mut all: Vec<SocketAddr> = Vec::new();
        for (n, a) in addrs.into_iter().enumerate() {
            let resolved = a.to_socket_addrs().map_err(|e| {
                Error::io(
                    "resolve",
                    io::Error::new(e.kind(), format!("host entry {n}: {e}")),
                )
            })?;
            for addr in resolved {
                if !all.contains(&addr) {
                    all.push(addr);
                }
            }
        }
        if all.is_empty() {
            return Err(Error::io(
                "resolve",
                io::Error::new(io::ErrorKind::NotFound, "no host address"),
            ));
        }
        Ok(Hosts {
            addrs: all,
            per_host: 1,
            connect: ConnectOptions::new().keepalive(Some(Keepalive::default())),
            connect_timeout: Duration::from_secs(2),
            backoff_first: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            give_up_after: Duration::from_secs(10),
            protocol: Protocol::Auto,
        })
    }

    /// Connections kept to each host (at least 1; default 1): each is one
    /// worker of the pool, with
    /// [`PoolOptions::in_flight_per_worker`](crate::pool::PoolOptions::in_flight_per_worker)
    /// requests in flight. A server forks one child per connection, so this
    /// is the host's parallelism.
    pub fn per_host(mut self, n: usize) -> Self {
        self.per_host = n.max(1);
        self
    }

    /// How to connect: format, secret, buffers, keepalive (default: JSON,
    /// no secret, [`Keepalive::default`]).
    pub fn connect_options(mut self, opts: ConnectOptions) -> Self {
        self.connect = opts;
        self
    }

    /// The bound on one connection attempt (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a failing host waits before it is tried again: `first`
    /// after one failure, doubling with each failure in a row, at most
    /// `max` (default 50 ms and 5 s; `Duration::MAX`: never again). An
    /// answer from the host starts over.
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.backoff_first = first;
        self.backoff_max = max.max(first);
        self
    }

    /// With no connection left, how long every host may stay unreachable
    /// before the waiting tasks fail with
    /// [`Cause::NoWorkers`](crate::task::Cause::NoWorkers) (default 10 s;
    /// `Duration::MAX`: wait for a host for ever).
    pub fn give_up_after(mut self, bound: Duration) -> Self {
        self.give_up_after = bound;
        self
    }

    /// Whether to ask hosts for frames (default [`Protocol::Auto`]).
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// The hosts' addresses, as resolved.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Connections in all: hosts × [`Hosts::per_host`].
    pub fn connections(&self) -> usize {
        self.addrs.len().saturating_mul(self.per_host)
    }

    /// The wait after `failures` failures in a row (`None`: never again).
    fn backoff_after(&self, failures: u32) -> Option<Duration> {
        let doublings = failures.saturating_sub(1).min(30);
        let wait = self
            .backoff_first
            .saturating_mul(1u32 << doublings)
            .min(self.backoff_max);
        (wait != Duration::MAX).then_some(wait)
    }
}

/// One host as the pool sees it ([`Pool::hosts`](crate::pool::Pool::hosts)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostStatus {
    /// Its address.
    pub addr: SocketAddr,
    /// Connections open to it now.
    pub connections: usize,
    /// Failures in a row (refused connects, connections that closed before
    /// answering) since its last answer.
    pub failures: u32,
    /// Why it last failed (cleared by an answer).
    pub last_error: Option<String>,
    /// Whether its connections speak frames (`None`: not known yet).
    pub framed: Option<bool>,
}

impl fmt::Display for HostStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.addr)?;
        match &self.last_error {
            Some(e) => write!(f, "{e} ({} failures in a row)", self.failures),
            None => write!(f, "{} connections", self.connections),
        }
    }
}

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
    /// It refused us for a reason of settings (a wrong secret, a secret it
    /// requires): not tried again.
    refused: bool,
}

impl Host {
    fn due(&self, now: Instant) -> bool {
        match self.retry {
            Retry::Now => true,
            Retry::At(t) => t <= now,
            Retry::Never => false,
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
    pending: Vec<Pending>,
    /// Since when no connection was open (nor answered).
    all_down_since: Option<Instant>,
    stopped: bool,
}

impl HostsSupply {
    pub(crate) fn new(cfg: &Hosts) -> Self {
        let hosts = cfg
            .addrs
            .iter()
            .map(|&addr| Host {
                status: HostStatus {
                    addr,
                    connections: 0,
                    failures: 0,
                    last_error: None,
                    framed: (cfg.protocol == Protocol::Plain).then_some(false),
                },
                retry: Retry::Now,
                connecting: 0,
                serving: false,
                cap: None,
                suspect: false,
                probe_out: false,
                hello_closed: 0,
                refused: false,
            })
            .collect();
        HostsSupply {
            cfg: cfg.clone(),
            hosts,
            pending: Vec::new(),
            all_down_since: None,
            stopped: false,
        }
    }

    /// The bound on one connection attempt.
    pub(crate) fn connect_timeout(&self) -> Duration {
        self.cfg.connect_timeout
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
                host.refused = true;
                host.serving = false;
                host.retry = Retry::Never;
                host.status.failures = host.status.failures.saturating_add(1);
                host.status.last_error = Some(e.to_string());
            }
            _ => self.failed(h, e.to_string(), now),
        }
    }

    /// Connections host `h` should have now: its share when healthy, one to
    /// probe it while it has failures.
    fn wanted(&self, h: usize) -> usize {
        let host = &self.hosts[h];
        if host.status.failures == 0 {
            host.cap
                .map_or(self.cfg.per_host, |c| c.min(self.cfg.per_host))
        } else {
            1
        }
    }

    fn describe(&self) -> String {
        let hosts: Vec<String> = self.hosts.iter().map(|h| h.status.to_string()).collect();
        hosts.join("; ")
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
    /// Finishes connects under way, then starts connects to hosts that
    /// are due, healthy ones (then the least connected) first, up to each
    /// one's wanted connections.
    fn top_up(&mut self, reactor: &mut Reactor, now: Instant, started: &mut Vec<Started>) {
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
        if let Some(e) = &end.broke {
            self.hosts[h].status.connections = self.hosts[h].status.connections.saturating_sub(1);
            self.hosts[h].probe_out = false;
            return self.failed_with(h, e, now);
        }
        let host = &mut self.hosts[h];
        host.status.connections = host.status.connections.saturating_sub(1);
        host.probe_out = false;
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
        let Some(h) = host else {
            return;
        };
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

    fn wake_at(&self, now: Instant) -> Option<Instant> {
        let connects = (!self.pending.is_empty()).then(|| now + CONNECT_TICK);
        let retry = self
            .hosts
            .iter()
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
        // Every host refused us for its settings: no use waiting.
        if self.hosts.iter().all(|h| h.refused) {
            return Outlook::GaveUp(format!("every host refused: {}", self.describe()));
        }
        // Only a host that answered counts as up: connections that open and
        // close unanswered do not stop the clock.
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
                "every host unreachable for {:?}: {}",
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
        }
        self.answered(host);
    }

    fn host_addr(&self, host: usize) -> Option<SocketAddr> {
        self.hosts.get(host).map(|h| h.status.addr)
    }

    fn host_statuses(&self) -> Vec<HostStatus> {
        self.hosts.iter().map(|h| h.status.clone()).collect()
    }

    fn hosts(&self) -> usize {
        self.hosts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_address_is_one_host_once() {
        let h = Hosts::new(["127.0.0.2:7000", "127.0.0.3:7000", "127.0.0.2:7000"])
            .expect("resolve")
            .per_host(4);
        let want: Vec<SocketAddr> = vec![
            "127.0.0.2:7000".parse().expect("addr"),
            "127.0.0.3:7000".parse().expect("addr"),
        ];
        assert_eq!(h.addrs(), want.as_slice());
        assert_eq!(h.connections(), 8);
    }

    #[test]
    fn an_entry_that_does_not_resolve_is_named() {
        let e = Hosts::new(["127.0.0.2:7000", "127.0.0.3"]).expect_err("no port");
        assert!(
            matches!(&e, Error::Io { op: "resolve", .. }) && e.to_string().contains("host entry 1"),
            "{e}"
        );
        let none: [SocketAddr; 0] = [];
        assert!(Hosts::new(none).is_err());
    }

    #[test]
    fn backoff_doubles_up_to_its_bound_and_max_means_never() {
        let h = Hosts::new(["127.0.0.2:7000"])
            .expect("resolve")
            .backoff(Duration::from_millis(50), Duration::from_secs(5));
        let ms: Vec<u128> = (1..=10)
            .map(|f| h.backoff_after(f).expect("bounded").as_millis())
            .collect();
        assert_eq!(ms, [50, 100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        assert_eq!(h.backoff_after(u32::MAX), Some(Duration::from_secs(5)));
        let never = h.backoff(Duration::MAX, Duration::MAX);
        assert_eq!(never.backoff_after(1), None);
    }

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
}
