//! `DnsSource` against a real resolver, as root: dnsmasq on 127.0.0.53
//! serving `svc.cluster.test` from a hosts directory (`--hostsdir`,
//! `--local-ttl=1`), in a private mount namespace (`unshare -m`) whose
//! `/etc/resolv.conf` names it. The test re-runs its own binary inside
//! (`inner_dns`); the outer test bounds it with a watchdog that kills its
//! process group (dnsmasq included). An address added is reported within
//! 2 intervals, one removed is drained, and with dnsmasq stopped (SIGSTOP:
//! queries time out) the source keeps its last set, says what failed, and
//! neither `status` nor dropping the source waits for the resolver. Skips
//! with a message off root or without `unshare` and `dnsmasq`.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use miniray::cluster::{DnsSource, Feed, HostChange};

#[path = "common/hosts.rs"]
mod hosts;

/// Set (to the work directory) for the run inside the namespace.
const INNER_ENV: &str = "MINIRAY_TEST_DNS_DIR";
const NAME: &str = "svc.cluster.test";
/// The test resolver's address (each namespace binds its own).
const RESOLVER: &str = "127.0.0.53";
const INTERVAL: Duration = Duration::from_millis(500);

fn found(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs this test binary's `inner` test in a private mount namespace
/// (`unshare -m`) with its own work directory, under a watchdog of
/// `bound`; skips (said why) off root or without the tools.
fn in_namespace(test: &str, inner: &str, bound: Duration) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED {test}: needs root for unshare -m and dnsmasq");
        return;
    }
    for tool in ["unshare", "dnsmasq", "mount"] {
        if !found(tool) {
            eprintln!("SKIPPED {test}: {tool} not installed");
            return;
        }
    }
    let dir = PathBuf::from(format!("/tmp/miniray-dns-{}-{inner}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("hosts.d")).expect("work dir");
    let exe = std::env::current_exe().expect("exe");
    let mut child = Command::new("unshare")
        .args(["-m", "--propagation", "private"])
        .arg(&exe)
        .args([
            "--exact",
            inner,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(INNER_ENV, &dir)
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("unshare");
    let dog = hosts::Watchdog::arm(test, bound);
    dog.group(child.id() as libc::pid_t);
    let status = child.wait().expect("wait");
    drop(dog);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        status.success(),
        "the run in the namespace failed: {status}"
    );
}

#[test]
fn dns_source_follows_a_name_and_survives_a_stopped_resolver() {
    in_namespace(
        "dns_source_follows_a_name_and_survives_a_stopped_resolver",
        "inner_dns",
        Duration::from_secs(90),
    );
}

/// dnsmasq, killed (its group is the test's) and reaped on drop.
struct Dnsmasq(Child);

impl Dnsmasq {
    /// dnsmasq on `ip`:53 answering for [`NAME`] with `ips` from `dir`'s
    /// hosts directory, made this namespace's resolver (`/etc/resolv.conf`
    /// bound over: one try of 2 s per query); returns once it answers, with
    /// its pid.
    fn start(dir: &Path, ip: &str, ips: &[&str]) -> (Dnsmasq, libc::pid_t) {
        let resolv = dir.join("resolv.conf");
        std::fs::write(
            &resolv,
            format!("nameserver {ip}\noptions timeout:2 attempts:1\n"),
        )
        .expect("resolv.conf");
        let mounted = Command::new("mount")
            .arg("--bind")
            .arg(&resolv)
            .arg("/etc/resolv.conf")
            .status()
            .expect("mount");
        assert!(mounted.success(), "mount --bind resolv.conf");
        write_hosts(dir, ips);
        let pid_file = dir.join("dnsmasq.pid");
        let dnsmasq = Dnsmasq(
            Command::new("dnsmasq")
                .args([
                    "--keep-in-foreground",
                    "--bind-interfaces",
                    "--port=53",
                    "--no-resolv",
                    "--no-hosts",
                    "--local-ttl=1",
                    "--local=/cluster.test/",
                    "--user=root",
                    "--log-facility=-",
                ])
                .arg(format!("--listen-address={ip}"))
                .arg(format!("--hostsdir={}", dir.join("hosts.d").display()))
                .arg(format!("--pid-file={}", pid_file.display()))
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("dnsmasq"),
        );
        // Up once it answers.
        let until = Instant::now() + Duration::from_secs(10);
        while dns_lookup::lookup_host(NAME).is_err() {
            assert!(Instant::now() < until, "dnsmasq did not answer within 10 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        let pid = std::fs::read_to_string(&pid_file)
            .expect("pid file")
            .trim()
            .parse()
            .expect("pid");
        (dnsmasq, pid)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn write_hosts(dir: &Path, ips: &[&str]) {
    let text: String = ips.iter().map(|ip| format!("{ip} {NAME}\n")).collect();
    // Written whole, then renamed: dnsmasq never reads half a file.
    let tmp = dir.join("hosts.tmp");
    std::fs::write(&tmp, text).expect("write hosts");
    std::fs::rename(&tmp, dir.join("hosts.d/svc")).expect("rename hosts");
}

fn next(rx: &std::sync::mpsc::Receiver<HostChange>, within: Duration) -> HostChange {
    rx.recv_timeout(within)
        .unwrap_or_else(|e| panic!("no change within {within:?}: {e}"))
}

fn addr(ip: &str) -> std::net::SocketAddr {
    format!("{ip}:7000").parse().expect("addr")
}

#[test]
#[ignore = "run inside a mount namespace by dns_source_follows_a_name..."]
fn inner_dns() {
    let Some(dir) = std::env::var_os(INNER_ENV).map(PathBuf::from) else {
        return;
    };
    let (dnsmasq, pid) = Dnsmasq::start(&dir, RESOLVER, &["127.0.0.21"]);
    let (feed, rx) = Feed::channel();
    let started = Instant::now();
    let source = DnsSource::start_every(NAME, 7000, INTERVAL, feed).expect("start");
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "start waited"
    );
    assert_eq!(next(&rx, 2 * INTERVAL), HostChange::Add(addr("127.0.0.21")));

    // An address added: reported within 2 intervals.
    write_hosts(&dir, &["127.0.0.21", "127.0.0.22"]);
    let added = Instant::now();
    assert_eq!(
        next(&rx, 2 * INTERVAL + Duration::from_millis(200)),
        HostChange::Add(addr("127.0.0.22"))
    );
    eprintln!("added address seen after {:?}", added.elapsed());

    // One removed: drained.
    write_hosts(&dir, &["127.0.0.22"]);
    let removed = Instant::now();
    assert_eq!(
        next(&rx, 2 * INTERVAL + Duration::from_millis(200)),
        HostChange::Drain(addr("127.0.0.21"))
    );
    eprintln!("removed address drained after {:?}", removed.elapsed());
    assert_eq!(source.status().addrs(), &[addr("127.0.0.22")]);

    // The resolver stopped: queries time out.
    // SAFETY: kill(2) with plain integers on the dnsmasq we started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let stopped = Instant::now();
    // A resolution that hangs on it shows; nothing changes meanwhile.
    let mut hung = false;
    let mut failed = false;
    while stopped.elapsed() < Duration::from_secs(8) && !(hung && failed) {
        let asked = Instant::now();
        let s = source.status();
        assert!(
            asked.elapsed() < Duration::from_millis(50),
            "status waited on the resolver"
        );
        hung |= s
            .resolving_since()
            .is_some_and(|t| t.elapsed() > Duration::from_secs(1));
        failed |= s.last_error().is_some();
        assert_eq!(s.addrs(), &[addr("127.0.0.22")], "the last set is kept");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        hung,
        "no resolution was seen waiting on the stopped resolver"
    );
    let s = source.status();
    assert!(failed, "a failed resolution shows in the status: {s:?}");
    eprintln!(
        "resolver stopped: last error {:?}, {} failures in a row",
        s.last_error(),
        s.failures_in_a_row()
    );
    assert!(
        rx.try_recv().is_err(),
        "no change while the resolver is down"
    );
    // Dropping the source never waits for the hung resolution.
    let dropping = Instant::now();
    drop(source);
    assert!(
        dropping.elapsed() < Duration::from_millis(50),
        "drop waited"
    );
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    drop(dnsmasq);
}

/// The servers behind the name in the pool test: this test binary re-run.
#[test]
#[ignore = "a server process of the pool test"]
fn inner_serve() {
    hosts::serve_if_asked();
}

#[test]
fn a_pool_follows_a_name_and_keeps_serving_with_the_resolver_stopped() {
    in_namespace(
        "a_pool_follows_a_name_and_keeps_serving_with_the_resolver_stopped",
        "inner_dns_pool",
        Duration::from_secs(120),
    );
}

/// A port free on both addresses (nothing listens on it now).
fn free_port_on(a: &str, b: &str) -> u16 {
    for _ in 0..100 {
        let first = std::net::TcpListener::bind((a, 0)).expect("bind");
        let port = first.local_addr().expect("addr").port();
        if std::net::TcpListener::bind((b, port)).is_ok() {
            return port;
        }
    }
    panic!("no port free on both {a} and {b}");
}

/// Where the pool test stands.
#[derive(Clone, Copy, Debug)]
enum Phase {
    /// One address behind the name.
    Start,
    /// A second address written at this time: it must get work.
    Adding(Instant),
    /// Both work, since result n.
    Both(u64),
    /// The first address removed at this time: it must be gone.
    Removing(Instant),
    /// The resolver stopped at this time.
    Stopped(Instant),
    /// The resolver back, at result n.
    Resumed(u64),
}

#[test]
#[ignore = "run inside a mount namespace by a_pool_follows_a_name..."]
fn inner_dns_pool() {
    use miniray::pool::{HostState, Pool, PoolOptions};

    let Some(dir) = std::env::var_os(INNER_ENV).map(PathBuf::from) else {
        return;
    };
    let (first, second) = ("127.0.0.31", "127.0.0.32");
    let port = free_port_on(first, second);
    let a = hosts::Host::start(&[], &format!("{first}:{port}"), 1);
    let b = hosts::Host::start(&[], &format!("{second}:{port}"), 1);
    let (dnsmasq, pid) = Dnsmasq::start(&dir, "127.0.0.54", &[first]);

    let opts = PoolOptions::new().timeout(Duration::from_secs(10));
    let hosts = miniray::pool::Hosts::dns_every(NAME, port, INTERVAL).per_host(2);
    let mut pool: Pool<u64, u64> = Pool::remote(&opts, &hosts).expect("pool");
    let mut phase = Phase::Start;
    let (mut added_in, mut gone_in) = (None, None);
    let (mut hung, mut served_while_stopped) = (false, 0u64);
    let mut longest = Duration::ZERO;
    let mut last = Instant::now();
    let mut map = pool.map(0..10_000_000u64);
    let mut n = 0u64;
    while let Some(r) = map.next() {
        match r {
            Ok(v) => assert_eq!(v, 2 * n + 1, "task {n}"),
            Err(e) => panic!("task {n} lost: {e}"),
        }
        n += 1;
        let host = |addr| map.pool().hosts().into_iter().find(|h| h.addr == addr);
        match phase {
            Phase::Start if n == 500 => {
                write_hosts(&dir, &[first, second]);
                phase = Phase::Adding(Instant::now());
            }
            Phase::Adding(at) if host(b.addr).is_some_and(|h| h.answered > 0) => {
                added_in = Some(at.elapsed());
                phase = Phase::Both(n);
            }
            Phase::Both(since) if n >= since + 1000 => {
                write_hosts(&dir, &[second]);
                phase = Phase::Removing(Instant::now());
            }
            Phase::Removing(at) if host(a.addr).is_some_and(|h| h.state == HostState::Gone) => {
                gone_in = Some(at.elapsed());
                // SAFETY: kill(2) with plain integers on the dnsmasq we started.
                assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
                phase = Phase::Stopped(Instant::now());
                last = Instant::now();
            }
            Phase::Stopped(at) => {
                // The pool's thread never waits for the resolver.
                longest = longest.max(last.elapsed());
                last = Instant::now();
                served_while_stopped += 1;
                let source = map.pool().host_source::<DnsSource>().expect("source");
                hung |= source
                    .status()
                    .resolving_since()
                    .is_some_and(|t| t.elapsed() > Duration::from_secs(1));
                if at.elapsed() > Duration::from_secs(3) {
                    // SAFETY: as above.
                    unsafe { libc::kill(pid, libc::SIGCONT) };
                    phase = Phase::Resumed(n);
                }
            }
            Phase::Resumed(since) if n >= since + 500 => break,
            _ => {}
        }
        if let Phase::Adding(at) | Phase::Removing(at) = phase {
            assert!(
                at.elapsed() < Duration::from_secs(20),
                "stuck in {phase:?}: {:?}",
                map.pool().hosts()
            );
        }
    }
    drop(map);
    let stats = pool.stats();
    eprintln!(
        "{n} results: added address working after {added_in:?}, removed one gone after \
         {gone_in:?}, {served_while_stopped} results in 3 s with the resolver stopped (longest \
         wait for one {longest:?}), {} retried",
        stats.retried
    );
    let added_in = added_in.expect("the added address got work");
    assert!(
        added_in <= 2 * INTERVAL,
        "an added address got work within 2 re-resolve intervals: {added_in:?}"
    );
    assert!(gone_in.is_some(), "the removed address was drained");
    assert_eq!(stats.retried, 0, "the drain lost no try");
    assert!(
        hung,
        "a resolution was seen waiting on the stopped resolver"
    );
    assert!(
        longest < Duration::from_millis(500) && served_while_stopped > 100,
        "the pool served on with the resolver stopped: {served_while_stopped} results, longest \
         wait {longest:?}"
    );
    let all = pool.hosts();
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(
        (all[0].addr, all[0].state, all[1].addr, all[1].state),
        (a.addr, HostState::Gone, b.addr, HostState::Serving),
        "the drained host keeps its place"
    );
    drop(pool);
    drop(dnsmasq);
}
