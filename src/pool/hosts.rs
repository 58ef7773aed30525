//! A pool over many hosts: [`Pool::remote`] keeps [`Hosts::per_host`]
//! connections to each `serve` endpoint (a [`Server`](crate::Server) of
//! miniray, or the original Python library's), and each connection is a
//! worker of the pool, so `map`, `submit`, `get`, deadlines and retries work
//! exactly as over local workers.
//!
//! How hosts are supervised is told on [`Hosts`].

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Pool, PoolOptions, Slot};
use crate::client::{ConnectOptions, Keepalive};
use crate::error::{Error, Result};
use crate::task::{Attempt, Cause, Ended};
use crate::worker::Worker;

/// How often connects under way are looked at (their completion wakes no
/// wait of the pool's).
const CONNECT_TICK: Duration = Duration::from_millis(5);

/// The endpoints of a [`Pool::remote`] and how to reach them.
///
/// Every address a name resolves to is a host of its own, so one DNS name
/// of a Kubernetes headless Service (which resolves to every pod) spreads
/// the pool over all its pods. Names are resolved once, by [`Hosts::new`].
///
/// Supervision, host by host:
/// * A connection that ends (EOF, a reset, keepalive giving up) fails
///   exactly its tries in flight, which run again on other connections; the
///   connection is replaced by reconnecting, healthy hosts first.
/// * A host that refuses, or whose connection was lost, is retried with
///   exponential backoff ([`Hosts::backoff`], 50 ms doubling to 5 s by
///   default) and meanwhile given no work; while it has failures it gets one
///   probing connection, and its full share again after its first reply.
///   Other hosts go on.
/// * A host that goes silent without closing (a stopped process, a network
///   partition) is found by the task deadline
///   ([`PoolOptions::timeout`]: the connection is dropped and the tries
///   retried elsewhere) and by tuned TCP keepalive ([`Keepalive`]).
/// * When no connection is left and every host stayed unreachable for
///   [`Hosts::give_up_after`], the waiting tasks fail with
///   [`Cause::NoWorkers`] naming each host and its last error; the pool
///   keeps trying, and takes work again once a host is back.
///
/// Connects are non-blocking: while one is under way (each bounded by
/// [`Hosts::connect_timeout`]) the pool goes on with the other hosts, so a
/// host cut off by the network costs no one else anything.
/// [`Pool::remote`] itself waits up to the connect timeout for its first
/// connections.
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
/// let opts = PoolOptions::new().timeout(Duration::from_secs(30));
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
}

impl Hosts {
    /// The hosts at `addrs`: each entry (`"host:port"`, a [`SocketAddr`],
    /// `("name", port)`) is resolved and every address it yields is one host
    /// (duplicates once). Defaults: 1 connection per host, JSON with
    /// [`Keepalive::default`], a 2 s connect timeout, backoff from 50 ms
    /// doubling to 5 s, giving up after 10 s with every host down.
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
        })
    }

    /// Connections kept to each host (at least 1; default 1): each is one
    /// worker of the pool, with
    /// [`PoolOptions::in_flight_per_worker`] tasks in flight. A server
    /// forks one child per connection, so this is the host's parallelism.
    pub fn per_host(mut self, n: usize) -> Self {
        self.per_host = n.max(1);
        self
    }

    /// How to connect: format, secret, buffers, keepalive (default: JSON,
    /// no secret, [`Keepalive::default`]). Taken as given: options without
    /// keepalive turn it off.
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
    /// `max` (default 50 ms and 5 s). A reply from the host starts over.
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.backoff_first = first;
        self.backoff_max = max.max(first);
        self
    }

    /// With no connection left, how long every host may stay unreachable
    /// before the waiting tasks fail with [`Cause::NoWorkers`] (default
    /// 10 s).
    pub fn give_up_after(mut self, bound: Duration) -> Self {
        self.give_up_after = bound;
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

    fn backoff_after(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.backoff_first
            .saturating_mul(1u32 << doublings)
            .min(self.backoff_max)
    }
}

/// One host as the pool sees it ([`Pool::hosts`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostStatus {
    /// Its address.
    pub addr: SocketAddr,
    /// Connections open to it now.
    pub connections: usize,
    /// Failures in a row (refused connects, lost connections) since its
    /// last reply.
    pub failures: u32,
    /// Why it last failed.
    pub last_error: Option<String>,
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

#[derive(Debug)]
struct Host {
    status: HostStatus,
    /// Not tried before this.
    retry_at: Option<Instant>,
    /// Connects under way.
    connecting: usize,
}

/// A connect under way: the worker to be, its host, its deadline.
#[derive(Debug)]
struct Pending {
    worker: Worker,
    host: usize,
    until: Option<Instant>,
}

/// A remote pool's hosts and which connection goes to which.
#[derive(Debug)]
pub(super) struct Remote {
    cfg: Hosts,
    hosts: Vec<Host>,
    by_worker: HashMap<Worker, usize>,
    pending: Vec<Pending>,
    /// Since when no connection was open (while some task waited).
    all_down_since: Option<Instant>,
}

impl Remote {
    fn new(cfg: &Hosts) -> Self {
        let hosts = cfg
            .addrs
            .iter()
            .map(|&addr| Host {
                status: HostStatus {
                    addr,
                    connections: 0,
                    failures: 0,
                    last_error: None,
                },
                retry_at: None,
                connecting: 0,
            })
            .collect();
        Remote {
            cfg: cfg.clone(),
            hosts,
            by_worker: HashMap::new(),
            pending: Vec::new(),
            all_down_since: None,
        }
    }

    /// A failure of host `h`: back off. Several connections lost (or
    /// connects failed) together, as when the host died, count once: only
    /// a host not already waiting counts.
    fn failed(&mut self, h: usize, why: String, now: Instant) {
        let host = &mut self.hosts[h];
        host.status.last_error = Some(why);
        if host.retry_at.is_some_and(|t| t > now) {
            return;
        }
        host.status.failures = host.status.failures.saturating_add(1);
        let wait = self.cfg.backoff_after(host.status.failures);
        host.retry_at = now.checked_add(wait);
    }

    /// Connections host `h` should have now: its share when healthy, one to
    /// probe it while it has failures.
    fn wanted(&self, h: usize) -> usize {
        if self.hosts[h].status.failures == 0 {
            self.cfg.per_host
        } else {
            1
        }
    }

    fn describe(&self) -> String {
        let hosts: Vec<String> = self.hosts.iter().map(|h| h.status.to_string()).collect();
        hosts.join("; ")
    }
}

impl<Req, Rep> Pool<Req, Rep>
where
    Req: Serialize,
    Rep: DeserializeOwned,
{
    /// A pool whose workers are connections to `hosts` ([`Hosts::per_host`]
    /// to each; `opts.workers` is ignored, the size is
    /// [`Hosts::connections`]). Everything else of `opts` applies: set
    /// [`PoolOptions::timeout`], the only way a host that stops answering
    /// without closing (a stopped process) is found while a task waits on
    /// it. See [`Hosts`] for what happens when hosts fail.
    ///
    /// Hosts that cannot be reached now are not an error: they are retried
    /// with backoff, and tasks wait for a host within
    /// [`Hosts::give_up_after`].
    pub fn remote(opts: &PoolOptions, hosts: &Hosts) -> Result<Self> {
        let mut opts = opts.clone();
        opts.workers = hosts.connections().max(1);
        let no_spawn: super::Spawner = Box::new(|_| {
            Err(Error::io(
                "spawn",
                io::Error::new(io::ErrorKind::Unsupported, "a remote pool connects"),
            ))
        });
        let mut pool = Self::unstarted(&opts, no_spawn)?;
        pool.remote = Some(Box::new(Remote::new(hosts)));
        pool.top_up_remote();
        // The first connections, within the connect timeout.
        let until = Instant::now().checked_add(hosts.connect_timeout);
        while pool.remote.as_ref().is_some_and(|r| !r.pending.is_empty())
            && until.is_none_or(|u| Instant::now() < u)
        {
            pool.tasks.reactor_mut().wait_any(Some(CONNECT_TICK))?;
            pool.top_up_remote();
        }
        Ok(pool)
    }
}

impl<Req, Rep> Pool<Req, Rep> {
    /// The host a remote worker is connected to (`None` for a local worker
    /// or one that ended).
    pub fn host_of(&self, w: Worker) -> Option<SocketAddr> {
        let remote = self.remote.as_ref()?;
        let &h = remote.by_worker.get(&w)?;
        Some(remote.hosts[h].status.addr)
    }

    /// Each host of a [`Pool::remote`] as it stands (empty for a local pool).
    pub fn hosts(&self) -> Vec<HostStatus> {
        self.remote.as_ref().map_or_else(Vec::new, |r| {
            r.hosts.iter().map(|h| h.status.clone()).collect()
        })
    }

    /// Finishes connects under way, then starts connects to hosts that
    /// are due, healthy ones (then the least connected) first, up to each
    /// one's wanted connections.
    pub(super) fn top_up_remote(&mut self) {
        if self.closed {
            return;
        }
        let Some(mut remote) = self.remote.take() else {
            return;
        };
        self.progress_connects(&mut remote);
        let now = Instant::now();
        let mut order: Vec<usize> = (0..remote.hosts.len())
            .filter(|&h| remote.hosts[h].retry_at.is_none_or(|t| t <= now))
            .collect();
        order.sort_by_key(|&h| {
            let s = &remote.hosts[h].status;
            (s.failures, s.connections)
        });
        let until = now.checked_add(remote.cfg.connect_timeout);
        for h in order {
            while remote.hosts[h].status.connections + remote.hosts[h].connecting < remote.wanted(h)
            {
                let addr = remote.hosts[h].status.addr;
                match self
                    .tasks
                    .reactor_mut()
                    .connect_start(addr, &remote.cfg.connect)
                {
                    Ok(worker) => {
                        remote.hosts[h].connecting += 1;
                        remote.pending.push(Pending {
                            worker,
                            host: h,
                            until,
                        });
                    }
                    Err(e) => {
                        remote.failed(h, e.to_string(), now);
                        break;
                    }
                }
            }
        }
        if !self.slots.is_empty() {
            remote.all_down_since = None;
        }
        self.remote = Some(remote);
    }

    /// Connects that finished become workers; failed or late ones count
    /// against their host.
    fn progress_connects(&mut self, remote: &mut Remote) {
        let now = Instant::now();
        let timeout = remote.cfg.connect_timeout;
        for p in std::mem::take(&mut remote.pending) {
            let reactor = self.tasks.reactor_mut();
            let h = p.host;
            match reactor.connect_progress(p.worker, &remote.cfg.connect) {
                Ok(false) if p.until.is_none_or(|u| u > now) => {
                    remote.pending.push(p);
                    continue;
                }
                Ok(false) => {
                    reactor.remove_conn(p.worker);
                    let why = format!("connect timed out after {timeout:?}");
                    remote.failed(h, why, now);
                }
                Ok(true) => {
                    remote.hosts[h].status.connections += 1;
                    remote.by_worker.insert(p.worker, h);
                    self.slots.insert(p.worker, Slot::default());
                    for _ in 0..self.opts.in_flight_per_worker.max(1) {
                        self.free.push(p.worker);
                    }
                }
                Err(e) => remote.failed(h, e.to_string(), now),
            }
            let c = &mut remote.hosts[h].connecting;
            *c = c.saturating_sub(1);
        }
    }

    /// How long a turn may wait: briefly while connects are under way (their
    /// completion wakes no wait).
    pub(super) fn remote_wait(&self, timeout: Option<Duration>) -> Option<Duration> {
        match &self.remote {
            Some(r) if !r.pending.is_empty() => {
                Some(timeout.map_or(CONNECT_TICK, |t| t.min(CONNECT_TICK)))
            }
            _ => timeout,
        }
    }

    /// A remote worker ended: one connection fewer; unless it was closed on
    /// purpose, its host failed.
    pub(super) fn remote_ended(&mut self, e: &Ended) {
        let on_purpose = self.closed || self.retired.contains(&e.worker);
        let Some(remote) = self.remote.as_mut() else {
            return;
        };
        let Some(h) = remote.by_worker.remove(&e.worker) else {
            return;
        };
        let conns = &mut remote.hosts[h].status.connections;
        *conns = conns.saturating_sub(1);
        if on_purpose {
            return;
        }
        let why = if e.killed_for_deadline {
            "a task's deadline passed: connection dropped"
        } else if e.replies == 0 {
            "connection closed before any reply"
        } else {
            "connection lost (EOF or reset)"
        };
        remote.failed(h, why.to_string(), Instant::now());
    }

    /// A reply came from remote worker `w`: its host is healthy.
    pub(super) fn remote_replied(&mut self, w: Worker) {
        let Some(remote) = self.remote.as_mut() else {
            return;
        };
        if let Some(&h) = remote.by_worker.get(&w) {
            let host = &mut remote.hosts[h];
            if host.status.failures > 0 {
                host.status.failures = 0;
                host.retry_at = None;
            }
        }
    }
}

impl<Req, Rep> Pool<Req, Rep>
where
    Req: Serialize,
    Rep: DeserializeOwned,
{
    /// No connection is open: sleeps until the next host is due (within
    /// `timeout`), or fails the waiting tasks once every host was down for
    /// [`Hosts::give_up_after`].
    pub(super) fn remote_stalled(&mut self, timeout: Option<Duration>) {
        let Some(remote) = self.remote.as_mut() else {
            return;
        };
        if self.queue.is_empty() {
            return;
        }
        let now = Instant::now();
        let since = *remote.all_down_since.get_or_insert(now);
        let give_up = since.checked_add(remote.cfg.give_up_after);
        if give_up.is_none_or(|g| g <= now) {
            let message = format!(
                "every host unreachable for {:?}: {}",
                now.duration_since(since),
                remote.describe()
            );
            while let Some(id) = self.queue.pop_front() {
                let cause = Cause::NoWorkers {
                    message: message.clone(),
                };
                self.finish(
                    id,
                    Err(Some(Attempt {
                        worker: None,
                        cause,
                    })),
                );
            }
            return;
        }
        let next_try = remote.hosts.iter().filter_map(|h| h.retry_at).min();
        let mut until = [give_up, next_try].into_iter().flatten().min();
        if let Some(t) = timeout.and_then(|t| now.checked_add(t)) {
            until = Some(until.map_or(t, |u| u.min(t)));
        }
        let wait = until.map_or(Duration::ZERO, |u| u.saturating_duration_since(now));
        if !remote.pending.is_empty() {
            // Connects under way: poll, so they finish.
            let waited = self
                .tasks
                .reactor_mut()
                .wait_any(Some(wait.min(CONNECT_TICK)));
            if let Err(e) = waited {
                // The reactor itself failed (epoll): nothing will come.
                self.terminate_with(Cause::NoWorkers {
                    message: format!("the pool's reactor failed: {e}"),
                });
            }
            return;
        }
        // Nothing is open to wait on: sleep (at least a moment, so a caller
        // looping on a zero timeout does not spin on a host due now), but
        // never when asked not to wait (the async pool's steps).
        if timeout != Some(Duration::ZERO) {
            std::thread::sleep(wait.max(Duration::from_millis(1)));
        }
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
    fn backoff_doubles_up_to_its_bound() {
        let h = Hosts::new(["127.0.0.2:7000"])
            .expect("resolve")
            .backoff(Duration::from_millis(50), Duration::from_secs(5));
        let ms: Vec<u128> = (1..=10).map(|f| h.backoff_after(f).as_millis()).collect();
        assert_eq!(ms, [50, 100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        assert_eq!(h.backoff_after(u32::MAX), Duration::from_secs(5));
    }
}
