//! [`DnsSource`]: one name re-resolved on a thread of its own; addresses
//! that appear are added, addresses that vanish are drained.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use dns_lookup::LookupErrorKind;

use super::error::ClusterError;
use super::feed::{Feed, HostChange};

/// How often a [`DnsSource`] re-resolves unless told otherwise: 5 s, the
/// TTL of a Kubernetes headless Service's records.
pub const DEFAULT_DNS_INTERVAL: Duration = Duration::from_secs(5);

/// Follows the addresses of one DNS name (a Kubernetes headless Service,
/// a round-robin name), each address a host on `port`.
///
/// The name is resolved with `getaddrinfo` (so `/etc/hosts` and the
/// system's resolver configuration apply) on a thread of the source's own,
/// at once and then every interval, never on the caller's thread: with the
/// resolver unreachable, glibc waits 5 s per try, and a pool's reactor must
/// never wait for it. After each answer the source sends
/// [`HostChange::Add`] for every address that is new and
/// [`HostChange::Drain`] for every address that is gone.
///
/// An answer that the name does not exist or has no address (`EAI_NONAME`,
/// `EAI_NODATA`: a headless Service scaled to zero) is an empty set, so
/// every host is drained. Any other failure (the resolver timed out or
/// refused, `EAI_AGAIN`, `EAI_FAIL`, a system error) changes nothing: the
/// last set stays, and [`DnsSource::status`] says what failed and since
/// when. Nothing is printed.
///
/// The thread stops when the source is dropped (after a resolution under
/// way returns; dropping never waits for it) or when a change finds the
/// feed's receiver gone.
pub struct DnsSource {
    name: String,
    status: Arc<Mutex<DnsStatus>>,
    // Dropping it ends the thread's wait between resolutions.
    _stop: mpsc::Sender<()>,
}

/// What a [`DnsSource`] knows now: the addresses it added and has not
/// drained, and how its resolutions went.
#[derive(Clone, Debug, Default)]
pub struct DnsStatus {
    addrs: Vec<SocketAddr>,
    resolutions: u64,
    failures_in_a_row: u32,
    last_error: Option<String>,
    last_answer: Option<Instant>,
    resolving_since: Option<Instant>,
}

impl DnsStatus {
    /// The hosts added and not drained, sorted.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Resolutions finished (answered or failed).
    pub fn resolutions(&self) -> u64 {
        self.resolutions
    }

    /// Resolutions that failed since the last answer.
    pub fn failures_in_a_row(&self) -> u32 {
        self.failures_in_a_row
    }

    /// The last failure's words (`"Temporary failure in name
    /// resolution"`), until an answer comes.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// When the last answer (an empty one included) came.
    pub fn last_answer(&self) -> Option<Instant> {
        self.last_answer
    }

    /// When the resolution under way started, if one is (a resolver that
    /// does not answer shows here for as long as it keeps the thread).
    pub fn resolving_since(&self) -> Option<Instant> {
        self.resolving_since
    }
}

impl DnsSource {
    /// Starts following `name` (a host name or an IP literal) every
    /// [`DEFAULT_DNS_INTERVAL`]. Returns at once; the first resolution runs
    /// on the source's thread.
    pub fn start(name: &str, port: u16, feed: Feed) -> Result<DnsSource, ClusterError> {
        Self::start_every(name, port, DEFAULT_DNS_INTERVAL, feed)
    }

    /// [`DnsSource::start`] re-resolving every `interval` (from the end of
    /// one resolution to the start of the next).
    pub fn start_every(
        name: &str,
        port: u16,
        interval: Duration,
        feed: Feed,
    ) -> Result<DnsSource, ClusterError> {
        if name.is_empty() {
            return Err(ClusterError::config("DNS name", "empty"));
        }
        let status = Arc::new(Mutex::new(DnsStatus::default()));
        let (stop, stopped) = mpsc::channel();
        let follow = Follow {
            name: name.to_string(),
            port,
            interval,
            feed,
            status: status.clone(),
            stopped,
        };
        thread::Builder::new()
            .name(format!("miniray-dns {name}"))
            .spawn(move || follow.run())
            .map_err(|source| ClusterError::Io {
                op: "start the DNS thread",
                source,
            })?;
        Ok(DnsSource {
            name: name.to_string(),
            status,
            _stop: stop,
        })
    }

    /// The name followed.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A copy of the source's status (never waits for a resolution).
    pub fn status(&self) -> DnsStatus {
        lock(&self.status).clone()
    }
}

impl fmt::Debug for DnsSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsSource")
            .field("name", &self.name)
            .field("status", &self.status())
            .finish()
    }
}

fn lock(status: &Mutex<DnsStatus>) -> std::sync::MutexGuard<'_, DnsStatus> {
    // The status holds plain values; one a panicking thread left is still whole.
    status.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The source's thread.
struct Follow {
    name: String,
    port: u16,
    interval: Duration,
    feed: Feed,
    status: Arc<Mutex<DnsStatus>>,
    stopped: mpsc::Receiver<()>,
}

impl Follow {
    fn run(self) {
        let mut known: BTreeSet<SocketAddr> = BTreeSet::new();
        loop {
            lock(&self.status).resolving_since = Some(Instant::now());
            let answer = resolve(&self.name);
            {
                let mut s = lock(&self.status);
                s.resolving_since = None;
                s.resolutions += 1;
                match &answer {
                    Ok(_) => {
                        s.failures_in_a_row = 0;
                        s.last_error = None;
                        s.last_answer = Some(Instant::now());
                    }
                    Err(e) => {
                        s.failures_in_a_row = s.failures_in_a_row.saturating_add(1);
                        s.last_error = Some(e.clone());
                    }
                }
            }
            if let Ok(ips) = answer {
                let now: BTreeSet<SocketAddr> = ips
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, self.port))
                    .collect();
                if !self.apply(&mut known, now) {
                    return;
                }
            }
            match self.stopped.recv_timeout(self.interval) {
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                _ => return,
            }
        }
    }

    /// Sends the differences from `known` to `now`; false once the
    /// receiver is gone. The status says `now` first, so a receiver that
    /// reads it after a change sees that change in it.
    fn apply(&self, known: &mut BTreeSet<SocketAddr>, now: BTreeSet<SocketAddr>) -> bool {
        lock(&self.status).addrs = now.iter().copied().collect();
        for gone in known.difference(&now) {
            if !self.feed.send(HostChange::Drain(*gone)) {
                return false;
            }
        }
        for new in now.difference(known) {
            if !self.feed.send(HostChange::Add(*new)) {
                return false;
            }
        }
        *known = now;
        true
    }
}

/// The name's addresses; a name that does not exist has none. Every other
/// failure is an error, in the resolver's words.
fn resolve(name: &str) -> Result<Vec<IpAddr>, String> {
    match dns_lookup::lookup_host(name) {
        Ok(ips) => Ok(ips.collect()),
        Err(e) => match e.kind() {
            LookupErrorKind::NoName | LookupErrorKind::NoData => Ok(Vec::new()),
            _ => Err(std::io::Error::from(e).to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ip_literal_is_added_once_and_never_again() {
        let (feed, rx) = Feed::channel();
        let src = DnsSource::start_every("127.0.0.7", 9000, Duration::from_millis(20), feed)
            .expect("start");
        let first = rx.recv_timeout(Duration::from_secs(10)).expect("an add");
        assert_eq!(
            first,
            HostChange::Add("127.0.0.7:9000".parse().expect("addr"))
        );
        // Several more resolutions, no more changes.
        std::thread::sleep(Duration::from_millis(100));
        assert!(rx.try_recv().is_err());
        assert!(src.status().resolutions() >= 2);
        assert_eq!(src.status().addrs().len(), 1);
    }

    #[test]
    fn an_empty_name_is_refused() {
        let (feed, _rx) = Feed::channel();
        assert!(matches!(
            DnsSource::start("", 1, feed),
            Err(ClusterError::Config { .. })
        ));
    }
}
