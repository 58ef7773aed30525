//! [`Hosts`]: which `serve` hosts a pool connects to (a fixed list, or a
//! source that adds and drains them while the pool runs) and how it
//! reaches them; [`HostStatus`], one host as the pool sees it.

use std::any::Any;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use crate::client::{ConnectOptions, Keepalive};
use crate::cluster::{ClusterError, DnsSource, Feed, SlurmLauncher, DEFAULT_DNS_INTERVAL};
use crate::error::{Error, Result};

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

/// What a started host source leaves with the pool, dropped with it (a
/// [`DnsSource`], a [`SlurmLauncher`]).
pub(crate) type Guard = Box<dyn Any>;

/// How a host source is started, once per pool built.
type Start = dyn Fn(Feed) -> std::result::Result<Guard, ClusterError> + Send + Sync;

/// A host source as [`Hosts`] keeps it: what it is (for errors) and how to
/// start one.
#[derive(Clone)]
pub(crate) struct Source {
    what: String,
    start: Arc<Start>,
}

impl Source {
    /// Starts the source, feeding `feed`; errors name the source.
    pub(crate) fn start(&self, feed: Feed) -> Result<Guard> {
        (self.start)(feed).map_err(|e| {
            Error::io(
                "start the host source",
                io::Error::other(format!("{}: {e}", self.what)),
            )
        })
    }
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)
    }
}

/// The endpoints of a [`Pool::remote`](crate::pool::Pool::remote) and how
/// to reach them: a fixed list ([`Hosts::new`]), or hosts that come and go
/// while the pool runs: a DNS name followed ([`Hosts::dns`]), workers
/// launched under Slurm ([`Hosts::slurm`]), any source of
/// [`HostChange`](crate::cluster::HostChange)s ([`Hosts::source`]).
///
/// Every address is a host of its own, so one DNS name of a Kubernetes
/// headless Service (which resolves to every pod) spreads the pool over all
/// its pods.
///
/// Membership, while the pool runs (a source's changes):
/// * An added host is connected to at once, [`Hosts::per_host`] times.
/// * A drained host gets no new task; the tries it has in flight finish
///   (or, if it dies first, run again elsewhere), each of its connections
///   is closed once idle, and the pool stops reconnecting to it. A host
///   with no connection left is gone ([`HostState::Gone`]).
/// * A host keeps its place in [`Pool::hosts`](crate::pool::Pool::hosts)
///   for the pool's life: a gone host stays listed, and an address added
///   again after its drain comes back in its old place, with a clean
///   record.
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
/// * A host that refuses us for a reason of settings (a wrong secret, a
///   secret it requires and we lack, encryption it requires:
///   [`AuthFailure::is_setting`](crate::AuthFailure::is_setting)) is not
///   retried: retrying fails the same way. Its status keeps the verdict
///   ([`HostStatus::refused`], [`HostStatus::last_error`]), and when every fixed host refused so, waiting tasks
///   fail at once with [`Cause::NoWorkers`](crate::task::Cause::NoWorkers)
///   quoting it, not after [`Hosts::give_up_after`].
/// * A host whose try hit its deadline gets one probing task at a time
///   until it answers again.
/// * A host that goes silent without closing (a stopped process) is found
///   by the task deadline ([`PoolOptions::timeout`](crate::pool::PoolOptions::timeout):
///   the connection is dropped and the tries retried elsewhere); a network
///   partition also by TCP keepalive ([`Keepalive`]).
/// * When no host serves and none answered for [`Hosts::give_up_after`]
///   (every host down, or a source that gave none), the waiting tasks fail
///   with [`Cause::NoWorkers`](crate::task::Cause::NoWorkers) naming each
///   host and its last error; the pool keeps trying, and takes work again
///   once a host is back.
///
/// Connects are non-blocking: while one is under way (each bounded by
/// [`Hosts::connect_timeout`]) the pool goes on with the other hosts. Only
/// [`Pool::remote`](crate::pool::Pool::remote) itself waits for the first
/// connections, up to that timeout.
///
/// ```no_run
/// use std::time::Duration;
/// use miniray::pool::{Hosts, Pool, PoolOptions};
///
/// # fn main() -> miniray::Result<()> {
/// // Each host runs a server answering a line per request while its reactor
/// // is waited on: see `Reactor::listen` for a complete host program.
/// let hosts = Hosts::new(["10.0.0.5:7000", "10.0.0.6:7000"])?.per_host(8);
/// // Or every pod behind a headless Service, followed as it scales:
/// // Hosts::dns("workers.default.svc.cluster.local", 7000)
/// let opts = PoolOptions::new().timeout(Duration::from_secs(30)).chunk_size_auto();
/// let mut pool: Pool<u64, u64> = Pool::remote(&opts, &hosts)?;
/// let sum: u64 = pool.map(0..1000u64).map(|r| r.expect("no task failed")).sum();
/// # let _ = sum;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Hosts {
    // Read by the supply (`remote.rs`); private outside this module.
    pub(super) addrs: Vec<SocketAddr>,
    pub(super) source: Option<Source>,
    pub(super) per_host: usize,
    pub(super) connect: ConnectOptions,
    pub(super) connect_timeout: Duration,
    backoff_first: Duration,
    backoff_max: Duration,
    pub(super) give_up_after: Duration,
    pub(super) protocol: Protocol,
}

impl Hosts {
    /// The hosts at `addrs`: each entry (`"host:port"`, a [`SocketAddr`],
    /// `("name", port)`) is resolved here, once, and every address it
    /// yields is one host (duplicates once). Defaults: 1 connection per
    /// host, JSON with [`Keepalive::default`], a 2 s connect timeout,
    /// backoff from 50 ms doubling to 5 s, giving up after 10 s with every
    /// host down, frames asked for ([`Protocol::Auto`]).
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
        Ok(Self::with(all, None))
    }

    /// Hosts fed while the pool runs by a source of your own: each pool
    /// built from these `Hosts` calls `start` once with a [`Feed`] into the
    /// pool (sending wakes the pool's reactor) and keeps what it returns
    /// (the source's handle) until the pool is dropped. The pool starts
    /// with no host; each [`HostChange::Add`](crate::cluster::HostChange::Add)
    /// adds one, each [`HostChange::Drain`](crate::cluster::HostChange::Drain)
    /// drains one (see [`Hosts`]). `start` runs on the thread that builds
    /// the pool and must not wait for hosts: a source sends from threads
    /// of its own. Its error fails the build ([`Error::Io`], `op` `"start
    /// the host source"`). [`Pool::host_source`](crate::pool::Pool::host_source)
    /// lends the handle back while the pool runs.
    ///
    /// Defaults as for [`Hosts::new`].
    pub fn source<F, S>(start: F) -> Self
    where
        F: Fn(Feed) -> std::result::Result<S, ClusterError> + Send + Sync + 'static,
        S: 'static,
    {
        Self::from_source("a host source", move |feed| {
            start(feed).map(|s| Box::new(s) as Guard)
        })
    }

    /// The addresses of the DNS name `name`, each a host on `port`,
    /// followed while the pool runs: a [`DnsSource`] re-resolves the name
    /// every [`DEFAULT_DNS_INTERVAL`] (5 s) on a thread of its own, never
    /// the pool's; new addresses are added, vanished ones drained, and a
    /// failed resolution changes nothing. For a Kubernetes headless
    /// Service, scaling the workers (`kubectl scale`, an autoscaler)
    /// changes the pool's hosts.
    pub fn dns(name: impl Into<String>, port: u16) -> Self {
        Self::dns_every(name, port, DEFAULT_DNS_INTERVAL)
    }

    /// [`Hosts::dns`] re-resolving every `interval`.
    pub fn dns_every(name: impl Into<String>, port: u16, interval: Duration) -> Self {
        let name = name.into();
        let what = format!("DNS name {name}:{port}");
        Self::from_source(what, move |feed| {
            DnsSource::start_every(&name, port, interval, feed).map(|s| Box::new(s) as Guard)
        })
    }

    /// Workers launched under Slurm for the pool: `launcher(feed)` makes a
    /// [`SlurmLauncher`] (the worker program, its arguments, `srun`'s
    /// environment) feeding the pool, and one step is started with
    /// `srun_args` (`["-N4", "-n4", "--signal=USR1@120"]`). The pool owns
    /// the launcher: each task's address is added as it prints it, a task
    /// or step that ends is drained, and dropping the pool ends its steps
    /// (waiting up to the launcher's
    /// [`teardown`](SlurmLauncher::teardown) bound, 10 s by default, for
    /// `squeue` to drop them).
    /// Start more steps, or cancel one, through
    /// [`Pool::host_source`](crate::pool::Pool::host_source)`::<SlurmLauncher>()`.
    /// `srun` is started, never waited for.
    pub fn slurm<I, S, F>(srun_args: I, launcher: F) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
        F: Fn(Feed) -> SlurmLauncher + Send + Sync + 'static,
    {
        let args: Vec<OsString> = srun_args
            .into_iter()
            .map(|a| a.as_ref().to_os_string())
            .collect();
        let what = format!("srun {}", shown(&args));
        Self::from_source(what, move |feed| {
            let slurm = launcher(feed);
            slurm.start_step(&args)?;
            Ok(Box::new(slurm) as Guard)
        })
    }

    fn from_source<F>(what: impl Into<String>, start: F) -> Self
    where
        F: Fn(Feed) -> std::result::Result<Guard, ClusterError> + Send + Sync + 'static,
    {
        let source = Source {
            what: what.into(),
            start: Arc::new(start),
        };
        Self::with(Vec::new(), Some(source))
    }

    fn with(addrs: Vec<SocketAddr>, source: Option<Source>) -> Self {
        Hosts {
            addrs,
            source,
            per_host: 1,
            connect: ConnectOptions::new().keepalive(Some(Keepalive::default())),
            connect_timeout: Duration::from_secs(2),
            backoff_first: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            give_up_after: Duration::from_secs(10),
            protocol: Protocol::Auto,
        }
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

    /// With no host serving, how long the pool waits for one before the
    /// waiting tasks fail with
    /// [`Cause::NoWorkers`](crate::task::Cause::NoWorkers) (default 10 s;
    /// `Duration::MAX`: wait for a host for ever). With a source, this
    /// also bounds the wait for its first host (a Slurm job waiting in the
    /// queue may need more).
    pub fn give_up_after(mut self, bound: Duration) -> Self {
        self.give_up_after = bound;
        self
    }

    /// Whether to ask hosts for frames (default [`Protocol::Auto`]).
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// The fixed hosts' addresses, as resolved (empty for a source's
    /// hosts, which are known only while a pool runs).
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Connections in all to the fixed hosts: hosts × [`Hosts::per_host`].
    pub fn connections(&self) -> usize {
        self.addrs.len().saturating_mul(self.per_host)
    }

    /// The keepalive `TCP_USER_TIMEOUT` its connections get, if any.
    pub(crate) fn user_timeout(&self) -> Option<Duration> {
        self.connect
            .keepalive_settings()
            .and_then(|k| k.user_timeout)
    }

    /// The wait after `failures` failures in a row (`None`: never again).
    pub(super) fn backoff_after(&self, failures: u32) -> Option<Duration> {
        let doublings = failures.saturating_sub(1).min(30);
        let wait = self
            .backoff_first
            .saturating_mul(1u32 << doublings)
            .min(self.backoff_max);
        (wait != Duration::MAX).then_some(wait)
    }
}

/// Arguments as a person would type them (for errors).
fn shown(args: &[OsString]) -> String {
    let words: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    words.join(" ")
}

/// Where a host stands in the pool's membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostState {
    /// Connected to (or being), given tasks.
    Serving,
    /// Drained: no new tasks; its connections close as their tries finish.
    Draining,
    /// Drained and without connections: kept only so that host numbers
    /// stay stable (and so that it comes back in its place if added again).
    Gone,
}

/// One host as the pool sees it ([`Pool::hosts`](crate::pool::Pool::hosts)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostStatus {
    /// Its address.
    pub addr: SocketAddr,
    /// Where it stands in the membership.
    pub state: HostState,
    /// Connections open to it now.
    pub connections: usize,
    /// Calls it answered (a reply, an error reply or a chunk's reply each
    /// count one) since it was last added.
    pub answered: u64,
    /// Failures in a row (refused connects, connections that closed before
    /// answering) since its last answer.
    pub failures: u32,
    /// Why it last failed (cleared by an answer).
    pub last_error: Option<String>,
    /// Whether its connections speak frames (`None`: not known yet).
    pub framed: Option<bool>,
    /// It refused us for a reason of settings (a wrong secret, a secret or
    /// encryption it requires, a secret we hold that it does not know):
    /// it is not tried again until it is added again, and `last_error`
    /// quotes its verdict.
    pub refused: bool,
}

impl fmt::Display for HostStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.addr)?;
        match (&self.last_error, self.state) {
            (_, HostState::Gone) => write!(f, "gone (drained)"),
            (Some(e), _) if self.refused => write!(f, "refused, not tried again: {e}"),
            (Some(e), _) if self.failures == 1 => write!(f, "{e} (1 failure)"),
            (Some(e), _) => write!(f, "{e} ({} failures in a row)", self.failures),
            (None, HostState::Draining) => {
                write!(f, "draining, {} connections", self.connections)
            }
            (None, _) => write!(f, "{} connections", self.connections),
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
        assert!(h.source.is_none());
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
    fn hosts_move_to_a_pool_thread() {
        // `PoolHandle::spawn(move || Pool::remote(&opts, &hosts))`.
        fn check<T: Send + Sync + Clone>() {}
        check::<Hosts>();
    }

    #[test]
    fn a_source_starts_nothing_until_a_pool_does_and_its_error_names_it() {
        let h = Hosts::dns("", 7000);
        assert!(h.addrs().is_empty());
        let source = h.source.as_ref().expect("a source");
        assert_eq!(format!("{source:?}"), "DNS name :7000");
        let (feed, _rx) = Feed::channel();
        let e = source.start(feed).expect_err("an empty name");
        assert!(
            matches!(
                &e,
                Error::Io {
                    op: "start the host source",
                    ..
                }
            ) && e.to_string().contains("DNS name :7000"),
            "{e}"
        );
        let s = Hosts::slurm(["-N4", "-n4"], |feed| {
            SlurmLauncher::new("/bin/true", Vec::<String>::new(), feed)
        });
        assert_eq!(
            format!("{:?}", s.source.as_ref().expect("a source")),
            "srun -N4 -n4"
        );
    }
}
