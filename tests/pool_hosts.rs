//! `Pool::remote` over real `serve` processes on loopback addresses
//! 127.0.0.2, 127.0.0.3, ...: a host SIGKILLed and another SIGSTOPped
//! mid-map lose nothing; a host refusing from the start is skipped; every
//! host down fails tasks with the hosts named, in bounded time; a deadline
//! on a remote task drops its connection. Traffic goes only to those
//! addresses; every loop is bounded by its deadline or count.

use std::time::{Duration, Instant};

use miniray::pool::{Hosts, Pool, PoolOptions, Protocol};
use miniray::task::Cause;
use miniray::{ConnectOptions, Keepalive, Secret};

#[path = "common/hosts.rs"]
mod hosts;

use hosts::{refusing_addr, work, Host};

/// The server process the tests start (a no-op when run as a test).
#[test]
#[ignore = "a server process that the other tests start"]
fn inner_serve() {
    hosts::serve_if_asked();
}

fn start_hosts(n: usize, work_ms: u64) -> Vec<Host> {
    (0..n)
        .map(|i| Host::start(&[], &format!("127.0.0.{}:0", i + 2), work_ms))
        .collect()
}

#[test]
fn map_survives_a_host_killed_and_a_host_stopped_mid_map() {
    let hosts = start_hosts(4, 2);
    let addrs: Vec<_> = hosts.iter().map(|h| h.addr).collect();
    let list = Hosts::new(addrs.clone())
        .expect("resolve")
        .per_host(3)
        .backoff(Duration::from_millis(20), Duration::from_millis(500));
    let opts = PoolOptions::new()
        .timeout(Duration::from_secs(1))
        .max_retries(5);
    let started = Instant::now();
    let mut pool: Pool<u64, u64> = Pool::remote(&opts, &list).expect("remote pool");
    assert_eq!(pool.workers().len(), 12, "3 connections to each of 4 hosts");

    let total = 3000u64;
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
        if n == 600 {
            hosts[0].signal(libc::SIGKILL);
        }
        if n == 1200 {
            hosts[1].signal(libc::SIGSTOP);
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "map still running after 120 s at item {n}"
        );
    }
    let elapsed = started.elapsed();
    let stats = pool.stats();
    let status = pool.hosts();
    eprintln!("{total} tasks in {elapsed:?}: {stats:?}");
    for h in &status {
        eprintln!("  {h}");
    }
    assert!(failed.is_empty(), "failed: {failed:?}");
    assert_eq!((got, wrong), (total, 0), "every result present and right");
    assert!(
        stats.retried >= 2,
        "tries on both lost hosts were retried: {stats:?}"
    );
    assert!(stats.replaced >= 2, "lost connections replaced: {stats:?}");
    let killed = status.iter().find(|h| h.addr == addrs[0]).expect("host 0");
    assert!(killed.failures > 0 && killed.connections == 0, "{killed}");
    let stopped = status.iter().find(|h| h.addr == addrs[1]).expect("host 1");
    assert!(
        stopped.failures > 0
            && stopped
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("deadline")),
        "the stopped host was dropped by the deadline: {stopped}"
    );
    for healthy in &status[2..] {
        assert_eq!(healthy.connections, 3, "{healthy}");
    }
    pool.close();
}

#[test]
fn a_host_refusing_from_the_start_is_skipped() {
    let live = start_hosts(3, 0);
    let dead = refusing_addr("127.0.0.9");
    let mut addrs = vec![dead];
    addrs.extend(live.iter().map(|h| h.addr));
    let list = Hosts::new(addrs).expect("resolve").per_host(2);
    let mut pool: Pool<u64, u64> = Pool::remote(&PoolOptions::new(), &list).expect("remote pool");
    assert_eq!(pool.workers().len(), 6, "2 connections to each live host");
    let results: Vec<u64> = pool
        .map(0..500u64)
        .collect::<Result<_, _>>()
        .expect("no task failed");
    assert!(results
        .iter()
        .enumerate()
        .all(|(i, &v)| v == work(i as u64)));
    let refused = &pool.hosts()[0];
    assert_eq!(refused.addr, dead);
    assert!(
        refused.failures >= 1 && refused.connections == 0,
        "{refused}"
    );
    assert!(
        refused
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("refused")),
        "{refused}"
    );
}

#[test]
fn a_host_that_comes_back_gets_its_share_again() {
    let live = start_hosts(2, 0);
    let late = refusing_addr("127.0.0.13");
    let mut addrs: Vec<_> = live.iter().map(|h| h.addr).collect();
    addrs.push(late);
    let list = Hosts::new(addrs)
        .expect("resolve")
        .per_host(2)
        .backoff(Duration::from_millis(10), Duration::from_millis(200));
    let mut pool: Pool<u64, u64> = Pool::remote(&PoolOptions::new(), &list).expect("remote pool");
    let first: Vec<u64> = pool
        .map(0..200u64)
        .collect::<Result<_, _>>()
        .expect("no task failed");
    assert_eq!(first[199], work(199));
    assert_eq!(pool.hosts()[2].connections, 0, "down so far");
    // The host comes up on its address: backoff tries it again, a probe
    // connection answers, and it gets its full share.
    let _late_host = Host::start(&[], &late.to_string(), 0);
    let until = Instant::now() + Duration::from_secs(30);
    let mut rounds = 0;
    while pool.hosts()[2].connections < 2 && Instant::now() < until {
        let more: Vec<u64> = pool
            .map(0..50u64)
            .collect::<Result<_, _>>()
            .expect("no task failed");
        assert!(more.iter().enumerate().all(|(i, &v)| v == work(i as u64)));
        rounds += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let back = &pool.hosts()[2];
    assert_eq!(
        (back.connections, back.failures),
        (2, 0),
        "after {rounds} rounds: {back}"
    );
    assert_eq!(pool.workers().len(), 6);
}

#[test]
fn a_remote_pool_answers_each_hosts_challenge() {
    let secret = "pool hosts secret";
    let hosts: Vec<Host> = (0..2)
        .map(|i| Host::start_with(&[], &format!("127.0.0.{}:0", 14 + i), 0, Some(secret)))
        .collect();
    let connect = ConnectOptions::new()
        .secret(Secret::new(secret.as_bytes().to_vec()).expect("secret"))
        .keepalive(Some(Keepalive::default()));
    let list = Hosts::new(hosts.iter().map(|h| h.addr))
        .expect("resolve")
        .per_host(2)
        .connect_options(connect);
    let mut pool: Pool<u64, u64> = Pool::remote(&PoolOptions::new(), &list).expect("remote pool");
    assert_eq!(pool.workers().len(), 4, "{:?}", pool.hosts());
    let results: Vec<u64> = pool
        .map(0..300u64)
        .collect::<Result<_, _>>()
        .expect("no task failed");
    assert!(results
        .iter()
        .enumerate()
        .all(|(i, &v)| v == work(i as u64)));
    // A wrong secret: the server closes each connection at once, so no
    // host is usable and the tasks fail.
    let wrong = ConnectOptions::new()
        .secret(Secret::new(b"a wrong secret, long enough".to_vec()).expect("secret"));
    let list = list
        .connect_options(wrong)
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
        .give_up_after(Duration::from_millis(500));
    let mut bad: Pool<u64, u64> = Pool::remote(&PoolOptions::new(), &list).expect("remote pool");
    let results: Vec<_> = bad.map(0..3u64).collect();
    // The server refuses each handshake by name: no connection opens, no
    // try is charged, and the tasks fail with `NoWorkers` naming each host
    // and the wrong secret.
    for r in &results {
        let e = r.as_ref().expect_err("a wrong secret: no host usable");
        assert_eq!(e.tries().len(), 1, "{e}");
        assert!(
            matches!(&e.cause(), Cause::NoWorkers { message }
                if message.contains("127.0.0.14") && message.contains("127.0.0.15") && message.contains("wrong secret")),
            "{e}"
        );
    }
    assert_eq!(bad.stats().completed, 0);
    // Each host's status says it refused, and why.
    for h in bad.hosts() {
        assert!(h.refused, "{h:?}");
        assert!(
            h.to_string().contains("refused, not tried again")
                && h.to_string().contains("wrong secret"),
            "{h}"
        );
    }
}

#[test]
fn every_host_down_fails_tasks_naming_the_hosts_in_bounded_time() {
    let dead = [refusing_addr("127.0.0.10"), refusing_addr("127.0.0.11")];
    let list = Hosts::new(dead)
        .expect("resolve")
        .backoff(Duration::from_millis(10), Duration::from_millis(100))
        .give_up_after(Duration::from_secs(2));
    let started = Instant::now();
    let mut pool: Pool<u64, u64> =
        Pool::remote(&PoolOptions::new(), &list).expect("a pool with no host up yet");
    assert!(pool.workers().is_empty());
    let results: Vec<_> = pool.map(0..5u64).collect();
    let elapsed = started.elapsed();
    assert_eq!(results.len(), 5);
    for r in &results {
        let e = r.as_ref().expect_err("no host: the task fails");
        let Cause::NoWorkers { message } = e.cause() else {
            panic!("not NoWorkers: {e}");
        };
        for a in &dead {
            assert!(message.contains(&a.to_string()), "{message}");
        }
        assert!(message.contains("refused"), "{message}");
    }
    // After the 2 s give-up, not long after it (refusals are immediate).
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(6),
        "failed after {elapsed:?}, give-up 2 s"
    );
    // Later tasks fail at once, not after another wait.
    let id = pool.submit(7).expect("submit");
    let again = Instant::now();
    let r = pool.get(id, Some(Duration::from_secs(10)));
    assert!(matches!(r, Some(Err(_))), "{r:?}");
    // Well below another 2 s give-up wait.
    assert!(
        again.elapsed() < Duration::from_secs(1),
        "{:?}",
        again.elapsed()
    );
}

#[test]
fn a_deadline_on_a_remote_task_drops_its_connection() {
    let host = Host::start(&[], "127.0.0.12:0", 0);
    host.signal(libc::SIGSTOP);
    // The stopped server's kernel still completes the connect (backlog),
    // and the hello waits unanswered: plain lines, so the task is sent.
    let hosts = Hosts::new([host.addr])
        .expect("hosts")
        .protocol(Protocol::Plain);
    let opts = PoolOptions::new()
        .timeout(Duration::from_millis(300))
        .max_retries(0);
    let mut pool: Pool<u64, u64> = Pool::remote(&opts, &hosts).expect("pool");
    let id = pool.submit(1).expect("submit");
    let e = pool
        .get(id, Some(Duration::from_secs(20)))
        .expect("finished")
        .expect_err("deadline");
    assert!(e.cause().is_deadline(), "{e}");
    // The connection is dropped: its end is seen and counted against the
    // host, whose status names the deadline.
    let until = Instant::now() + Duration::from_secs(10);
    while pool.stats().replaced == 0 && Instant::now() < until {
        pool.poll(Some(Duration::from_millis(50)));
    }
    assert_eq!(pool.stats().replaced, 1, "{:?}", pool.stats());
    let status = &pool.hosts()[0];
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("deadline")),
        "{status}"
    );
}

/// Remote hosts speak frames (the pool's hello is accepted), so a remote
/// pool chunks: a chunked map over 3 hosts survives one host SIGKILLed
/// mid-map, every result present and right.
#[test]
fn a_chunked_remote_map_survives_a_host_killed() {
    let hosts = start_hosts(3, 0);
    let list = Hosts::new(hosts.iter().map(|h| h.addr))
        .expect("resolve")
        .per_host(2)
        .backoff(Duration::from_millis(20), Duration::from_millis(500));
    let opts = PoolOptions::new()
        .timeout(Duration::from_secs(5))
        .chunk_size_auto()
        .in_flight_per_worker(2);
    let mut pool: Pool<u64, u64> = Pool::remote(&opts, &list).expect("remote pool");
    let total = 50_000u64;
    let mut n = 0u64;
    let mut wrong = 0u64;
    let started = Instant::now();
    for r in pool.map(0..total) {
        let v = r.expect("no task lost");
        wrong += u64::from(v != work(n));
        n += 1;
        if n == 10_000 {
            hosts[0].signal(libc::SIGKILL);
        }
    }
    assert_eq!((n, wrong), (total, 0));
    assert!(started.elapsed() < Duration::from_secs(120));
    let framed: Vec<_> = pool.hosts().iter().map(|h| h.framed).collect();
    assert!(framed[1..].iter().all(|f| *f == Some(true)), "{framed:?}");
    // Host 0's two connections were lost with it.
    assert!(pool.stats().replaced >= 2, "{:?}", pool.stats());
}

/// One pool of local workers and remote connections: tasks run on both.
#[test]
fn a_mixed_pool_runs_tasks_on_local_workers_and_remote_hosts() {
    let host = Host::start(&[], "127.0.0.16:0", 1);
    const LOCAL: u64 = 1 << 40;
    let hosts = Hosts::new([host.addr]).expect("resolve").per_host(2);
    let mut pool: Pool<u64, u64> = Pool::builder(&PoolOptions::new())
        .local(2, |n: u64| {
            std::thread::sleep(Duration::from_millis(1));
            work(n) + LOCAL
        })
        .hosts(&hosts)
        .build()
        .expect("mixed pool");
    let (mut local, mut remote) = (0, 0);
    for (n, r) in (0u64..).zip(pool.map(0..2000u64)) {
        match r.expect("no task failed") {
            v if v == work(n) + LOCAL => local += 1,
            v if v == work(n) => remote += 1,
            v => panic!("task {n}: {v}"),
        }
    }
    assert!(
        local > 100 && remote > 100,
        "local {local}, remote {remote}"
    );
}

/// A retry avoids the host its try failed on: a host stopped (its kernel
/// still accepts connections) makes each try sent there hit its deadline;
/// retried elsewhere, every task succeeds with one retry allowed, and the
/// stopped host is probed by one call at a time.
#[test]
fn a_retry_avoids_the_host_it_failed_on() {
    let hosts = start_hosts(2, 0);
    hosts[0].signal(libc::SIGSTOP);
    let list = Hosts::new(hosts.iter().map(|h| h.addr))
        .expect("resolve")
        .per_host(2)
        .protocol(Protocol::Plain)
        .backoff(Duration::from_millis(20), Duration::from_millis(200));
    let opts = PoolOptions::new()
        .timeout(Duration::from_millis(300))
        .max_retries(1);
    let mut pool: Pool<u64, u64> = Pool::remote(&opts, &list).expect("remote pool");
    let results: Vec<_> = pool.map(0..60u64).collect();
    for (n, r) in (0u64..).zip(&results) {
        assert_eq!(*r.as_ref().expect("retried on the healthy host"), work(n));
    }
    let stats = pool.stats();
    assert!(stats.retried >= 1, "{stats:?}");
    // One probing call at a time: the stopped host cost few tries.
    assert!(stats.retried <= 10, "{stats:?}");
    hosts[0].signal(libc::SIGCONT);
}
