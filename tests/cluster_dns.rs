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
const INTERVAL: Duration = Duration::from_millis(500);

fn found(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn dns_source_follows_a_name_and_survives_a_stopped_resolver() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED dns_source_follows_a_name...: needs root for unshare -m and dnsmasq");
        return;
    }
    for tool in ["unshare", "dnsmasq", "mount"] {
        if !found(tool) {
            eprintln!("SKIPPED dns_source_follows_a_name...: {tool} not installed");
            return;
        }
    }
    let dir = PathBuf::from(format!("/tmp/miniray-dns-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("hosts.d")).expect("work dir");
    let exe = std::env::current_exe().expect("exe");
    let mut inner = Command::new("unshare")
        .args(["-m", "--propagation", "private"])
        .arg(&exe)
        .args([
            "--exact",
            "inner_dns",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(INNER_ENV, &dir)
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("unshare");
    let dog = hosts::Watchdog::arm("dns_source_follows_a_name", Duration::from_secs(90));
    dog.group(inner.id() as libc::pid_t);
    let status = inner.wait().expect("wait");
    drop(dog);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        status.success(),
        "the run in the namespace failed: {status}"
    );
}

/// dnsmasq, killed (its group is the test's) and reaped on drop.
struct Dnsmasq(Child);

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
    // Only this namespace sees the test resolver; one try of 2 s per query.
    let resolv = dir.join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 127.0.0.53\noptions timeout:2 attempts:1\n",
    )
    .expect("resolv.conf");
    let mounted = Command::new("mount")
        .arg("--bind")
        .arg(&resolv)
        .arg("/etc/resolv.conf")
        .status()
        .expect("mount");
    assert!(mounted.success(), "mount --bind resolv.conf");
    write_hosts(&dir, &["127.0.0.21"]);
    let pid_file = dir.join("dnsmasq.pid");
    let dnsmasq = Dnsmasq(
        Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--listen-address=127.0.0.53",
                "--bind-interfaces",
                "--port=53",
                "--no-resolv",
                "--no-hosts",
                "--local-ttl=1",
                "--local=/cluster.test/",
                "--user=root",
                "--log-facility=-",
            ])
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
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
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
