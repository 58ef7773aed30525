//! `Pool::remote` over hosts in network namespaces, each joined to the
//! test's namespace by a veth pair on 10.200.X.0/24; one link is taken down
//! mid-map (a partition: nothing closes, packets just stop) and the map
//! still completes with nothing lost or wrong, thanks to the task deadline
//! and TCP keepalive. Needs root and `ip netns`; skips with a message
//! otherwise. Namespaces and links are unique per run and deleted by a
//! guard, whatever happens.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use miniray::pool::{Hosts, Pool, PoolOptions};
use miniray::{ConnectOptions, Keepalive};

#[path = "common/hosts.rs"]
mod hosts;

use hosts::{work, Host};

/// The server process the test starts inside a namespace.
#[test]
#[ignore = "a server process that the other tests start"]
fn inner_serve() {
    hosts::serve_if_asked();
}

/// Runs `ip ARGS...`; the error says what failed.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {} {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// One namespace joined by a veth pair: the host side `link` in the
/// test's namespace (10.200.X.1), the peer inside (10.200.X.2).
struct Net {
    ns: String,
    link: String,
    server_ip: String,
}

/// Every namespace and link made so far; deleted on drop.
#[derive(Default)]
struct Nets(Vec<Net>);

impl Nets {
    fn add(&mut self, tag: u32, i: u32, subnet: u32) -> Result<(), String> {
        let ns = format!("miniray-{tag}-{i}");
        let link = format!("mrh{tag}x{i}");
        let peer = format!("mrp{tag}x{i}");
        ip(&["netns", "add", &ns])?;
        self.0.push(Net {
            ns: ns.clone(),
            link: String::new(),
            server_ip: format!("10.200.{subnet}.2"),
        });
        ip(&["link", "add", &link, "type", "veth", "peer", "name", &peer])?;
        if let Some(last) = self.0.last_mut() {
            last.link = link.clone();
        }
        ip(&["link", "set", &peer, "netns", &ns])?;
        ip(&[
            "addr",
            "add",
            &format!("10.200.{subnet}.1/24"),
            "dev",
            &link,
        ])?;
        ip(&["link", "set", &link, "up"])?;
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &ns, "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        inside(&[
            "addr",
            "add",
            &format!("10.200.{subnet}.2/24"),
            "dev",
            &peer,
        ])?;
        inside(&["link", "set", &peer, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        Ok(())
    }
}

impl Drop for Nets {
    fn drop(&mut self) {
        for n in &self.0 {
            // Deleting one end of a veth pair deletes both.
            if !n.link.is_empty() {
                let _ = ip(&["link", "del", &n.link]);
            }
            let _ = ip(&["netns", "del", &n.ns]);
        }
    }
}

#[test]
fn map_survives_a_link_taken_down_mid_map() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED map_survives_a_link_taken_down_mid_map: needs root for ip netns");
        return;
    }
    let tag = std::process::id() % 100_000;
    let mut nets = Nets::default();
    for i in 0..3 {
        // A /24 per namespace, unique per run as far as the pid is.
        let subnet = (tag % 80) * 3 + i;
        if let Err(e) = nets.add(tag, i, subnet) {
            eprintln!("SKIPPED map_survives_a_link_taken_down_mid_map: network namespaces unavailable: {e}");
            return;
        }
    }
    let hosts: Vec<Host> = nets
        .0
        .iter()
        .map(|n| {
            Host::start(
                &["ip", "netns", "exec", &n.ns],
                &format!("{}:0", n.server_ip),
                5,
            )
        })
        .collect();
    let addrs: Vec<_> = hosts.iter().map(|h| h.addr).collect();
    let keepalive = Keepalive {
        idle: Duration::from_secs(1),
        interval: Duration::from_secs(1),
        count: 2,
        // Above the 2 s task deadline, as a user timeout must be.
        user_timeout: Some(Duration::from_secs(3)),
    };
    let list = Hosts::new(addrs.clone())
        .expect("resolve")
        .per_host(2)
        .connect_options(ConnectOptions::new().keepalive(Some(keepalive)))
        .connect_timeout(Duration::from_millis(500))
        .backoff(Duration::from_millis(50), Duration::from_secs(1));
    let opts = PoolOptions::new()
        .timeout(Duration::from_secs(2))
        .max_retries(5);
    let started = Instant::now();
    let mut pool: Pool<u64, u64> = Pool::remote(&opts, &list).expect("remote pool");
    assert_eq!(pool.workers().len(), 6);
    let total = 1500u64;
    let (mut got, mut wrong, mut failed) = (0u64, 0u64, Vec::new());
    let mut n = 0u64;
    for r in pool.map(0..total) {
        match r {
            Ok(v) => {
                wrong += u64::from(v != work(n));
                got += 1;
            }
            Err(e) => failed.push(e.to_string()),
        }
        n += 1;
        if n == 300 {
            ip(&["link", "set", &nets.0[0].link, "down"]).expect("link down");
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "map still running after 120 s at item {n}"
        );
    }
    let stats = pool.stats();
    let status = pool.hosts();
    eprintln!("{total} tasks in {:?}: {stats:?}", started.elapsed());
    for h in &status {
        eprintln!("  {h}");
    }
    assert!(failed.is_empty(), "failed: {failed:?}");
    assert_eq!((got, wrong), (total, 0), "every result present and right");
    assert!(
        stats.retried >= 1,
        "the cut host's tries were retried: {stats:?}"
    );
    let cut = status.iter().find(|h| h.addr == addrs[0]).expect("host 0");
    assert!(cut.failures > 0 && cut.connections == 0, "{cut}");
    drop(pool);
    drop(hosts);
    drop(nets);
}
