//! `SlurmLauncher` and `serve_worker` on a real 4-node Slurm cluster on
//! this machine (`.ci/slurm/up`: nodes n1..n4 on 127.0.0.11..14), as root:
//! hosts discovered with their nodes' addresses and answering, a step
//! cancelled (drained), a step started mid-run (added), the driver
//! SIGKILLed (no worker left, the queue empty), a drain on the step's
//! signal (in-flight work answered, new connections refused). Each test
//! brings a fresh cluster up and down (serialized), under a watchdog that
//! tears the cluster and every process group down if it runs too long.
//! Skips with a message off root or without Slurm (`.ci/run` installs it).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use miniray::cluster::{Feed, HostChange};
use miniray::Reactor;

#[path = "common/hosts.rs"]
mod hosts;
#[path = "common/slurm.rs"]
mod slurm;

use slurm::{added, changes, drained, eventually, launcher, mark, marked, Cluster};

/// Set for the driver process of `the_driver_killed...`.
const DRIVER_ENV: &str = "MINIRAY_TEST_SLURM_DRIVER";

/// The worker program: the test binary re-run under srun.
#[test]
#[ignore = "the worker program srun starts"]
fn inner_worker() {
    slurm::worker_if_asked();
}

/// A driver of its own: a launcher with one 4-task step, each host
/// printed as `host ADDR`; then it waits to be killed.
#[test]
#[ignore = "the driver process a test SIGKILLs"]
fn inner_driver() {
    if std::env::var_os(DRIVER_ENV).is_none() {
        return;
    }
    let (feed, changes) = Feed::channel();
    let mark = std::env::var(slurm::MARK_ENV).unwrap_or_else(|_| mark());
    let slurm = launcher(feed, 0, &mark);
    let step = slurm.start_step(["-N4", "-n4"]).expect("srun");
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        if let Ok(HostChange::Add(a)) = changes.recv_timeout(Duration::from_millis(100)) {
            println!("host {a}");
        }
    }
    eprintln!("driver: {:?}", slurm.step_status(step));
    std::thread::sleep(Duration::from_secs(600));
}

/// One request to `addr` through `Reactor::connect`; its reply.
fn ask(addr: SocketAddr, n: u64) -> miniray::Result<u64> {
    let mut r = Reactor::new()?;
    let w = r.connect(
        addr,
        &miniray::ConnectOptions::new(),
        Some(Duration::from_secs(5)),
    )?;
    r.send(w, &n)?;
    r.recv(w, Some(Duration::from_secs(10)))
}

#[test]
fn four_hosts_with_their_nodes_addresses_each_answer() {
    let Some(cluster) = Cluster::up("four_hosts_with_their_nodes_addresses_each_answer") else {
        return;
    };
    let _dog = cluster.watchdog("four_hosts...", Duration::from_secs(120));
    let (feed, rx) = Feed::channel();
    let mark = mark();
    let started = Instant::now();
    let slurm = launcher(feed, 0, &mark);
    let step = slurm.start_step(["-N4", "-n4"]).expect("srun");
    let got = changes(&rx, 4, Duration::from_secs(30));
    eprintln!("4 hosts in {:?}", started.elapsed());
    let hosts = added(&got);
    let ips: BTreeSet<String> = hosts.iter().map(|a| a.ip().to_string()).collect();
    let want: BTreeSet<String> = (1..=4).map(|i| format!("127.0.0.1{i}")).collect();
    assert_eq!(
        ips, want,
        "each task advertises its node's address: {got:?}"
    );
    for (i, &a) in hosts.iter().enumerate() {
        assert_eq!(
            ask(a, i as u64).expect("a reply"),
            2 * i as u64 + 1,
            "host {a}"
        );
    }
    let status = slurm.step_status(step).expect("status");
    assert!(status.slurm_step().is_some(), "{status:?}");
    assert_eq!(status.serving().len(), 4);

    let dropped = Instant::now();
    drop(slurm);
    eprintln!("launcher dropped in {:?}", dropped.elapsed());
    assert!(
        eventually(Duration::from_secs(10), || cluster.squeue().is_empty()),
        "queue still holds {}",
        cluster.squeue()
    );
    assert!(
        eventually(Duration::from_secs(10), || marked(&mark).is_empty()),
        "workers left: {:?}",
        marked(&mark)
    );
}

#[test]
fn a_cancelled_step_is_drained_and_a_new_step_is_added() {
    let Some(cluster) = Cluster::up("a_cancelled_step_is_drained_and_a_new_step_is_added") else {
        return;
    };
    let _dog = cluster.watchdog("a_cancelled_step...", Duration::from_secs(120));
    let (feed, rx) = Feed::channel();
    let mark = mark();
    let slurm = launcher(feed, 0, &mark);
    let first = slurm
        .start_step(["-N2", "-n2", "-w", "n1,n2"])
        .expect("srun");
    let a = added(&changes(&rx, 2, Duration::from_secs(30)));
    // Mid-run, a second step: its hosts are added.
    let second = slurm
        .start_step(["-N2", "-n2", "-w", "n3,n4"])
        .expect("srun");
    let b = added(&changes(&rx, 2, Duration::from_secs(30)));
    assert!(a.is_disjoint(&b), "{a:?} {b:?}");
    for &h in &b {
        assert_eq!(ask(h, 20).expect("new host answers"), 41);
    }
    // The first step cancelled from outside (an operator, a preemption).
    let id = slurm
        .step_status(first)
        .and_then(|s| s.slurm_step().map(str::to_string))
        .expect("the first step's id");
    let cancelled = Instant::now();
    cluster.scancel(&[&id]);
    let gone = changes(&rx, 2, Duration::from_secs(20));
    eprintln!("step {id} drained in {:?}", cancelled.elapsed());
    assert_eq!(
        drained(&gone),
        a,
        "exactly the cancelled step's hosts drained"
    );
    for &h in &b {
        assert_eq!(ask(h, 7).expect("the other step serves on"), 15);
    }
    // Scale down through the launcher.
    slurm.cancel_step(second).expect("cancel");
    assert_eq!(drained(&changes(&rx, 2, Duration::from_secs(20))), b);
    assert!(eventually(Duration::from_secs(10), || {
        slurm.steps().iter().all(|s| s.ended().is_some())
    }));
    drop(slurm);
    assert!(eventually(Duration::from_secs(10), || cluster
        .squeue()
        .is_empty()));
    assert!(eventually(Duration::from_secs(10), || marked(&mark).is_empty()));
}

#[test]
fn the_driver_killed_leaves_no_worker_and_an_empty_queue() {
    let Some(cluster) = Cluster::up("the_driver_killed_leaves_no_worker_and_an_empty_queue") else {
        return;
    };
    let dog = cluster.watchdog("the_driver_killed...", Duration::from_secs(120));
    let mark = mark();
    let (driver, lines) = slurm::spawn_driver("inner_driver", DRIVER_ENV, &mark, &dog);
    let until = Instant::now() + Duration::from_secs(30);
    let mut hosts = Vec::new();
    while hosts.len() < 4 {
        let left = until.saturating_duration_since(Instant::now());
        let line = lines.recv_timeout(left).expect("the driver's 4 hosts");
        // The first follows libtest's "test inner_driver ... " on its line.
        if let Some(at) = line.find("host ") {
            hosts.push(line[at + 5..].to_string());
        }
    }
    assert!(
        marked(&mark).len() >= 5,
        "the driver, srun and 4 workers run"
    );
    cluster.kill_driver_expect_clean(driver, &mark);
}

#[test]
fn a_drain_signal_finishes_in_flight_work_and_refuses_new_connections() {
    let Some(cluster) =
        Cluster::up("a_drain_signal_finishes_in_flight_work_and_refuses_new_connections")
    else {
        return;
    };
    let _dog = cluster.watchdog("a_drain_signal...", Duration::from_secs(120));
    let (feed, rx) = Feed::channel();
    let mark = mark();
    let slurm = launcher(feed, 1_500_000, &mark);
    let step = slurm.start_step(["-N2", "-n2"]).expect("srun");
    let hosts = added(&changes(&rx, 2, Duration::from_secs(30)));
    let id = slurm
        .step_status(step)
        .and_then(|s| s.slurm_step().map(str::to_string))
        .expect("step id");
    // A request in flight on each host when the signal comes.
    let mut r = Reactor::new().expect("reactor");
    let workers: Vec<_> = hosts
        .iter()
        .map(|&h| {
            let w = r
                .connect(
                    h,
                    &miniray::ConnectOptions::new(),
                    Some(Duration::from_secs(5)),
                )
                .expect("connect");
            r.send(w, &100u64).expect("send");
            w
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let signalled = Instant::now();
    // What `srun --signal=USR1@SECS` sends before the walltime.
    cluster.scancel(&["--signal=USR1", &id]);
    let gone = changes(&rx, 2, Duration::from_secs(10));
    eprintln!("drain lines {:?} after the signal", signalled.elapsed());
    assert_eq!(drained(&gone), hosts);
    for &w in &workers {
        let reply: u64 = r
            .recv(w, Some(Duration::from_secs(10)))
            .expect("the try in flight is answered after the drain");
        assert_eq!(reply, 201);
    }
    // A new connection is closed at once.
    for &h in &hosts {
        match ask(h, 1) {
            Err(e) if e.is_closed() => {}
            other => panic!("a draining host {h} served a new connection: {other:?}"),
        }
    }
    // The old connections close: the workers exit, the step ends.
    for w in workers {
        r.close(w).expect("close");
    }
    drop(r);
    assert!(
        eventually(Duration::from_secs(15), || slurm
            .step_status(step)
            .is_some_and(|s| s.ended().is_some())),
        "the step ends once its drained workers are idle: {:?}",
        slurm.step_status(step)
    );
    drop(slurm);
    assert!(eventually(Duration::from_secs(10), || cluster
        .squeue()
        .is_empty()));
    assert!(eventually(Duration::from_secs(10), || marked(&mark).is_empty()));
}
