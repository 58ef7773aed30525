//! A `Pool` whose hosts Slurm launches (`Hosts::slurm`), on a real 4-node
//! Slurm cluster on this machine (`.ci/slurm/up`: nodes n1..n4 on
//! 127.0.0.11..14), as root, the worker program being this test binary
//! re-run under srun (`serve_worker_with`): a map of 200,000 tasks loses
//! nothing while a step started mid-map (through `Pool::host_source`) gets
//! work and the first step is cancelled from outside; the driver SIGKILLed
//! mid-map leaves no worker and an empty queue; a drain on the step's
//! signal (`scancel --signal=USR1`) loses no try at all, and the drained
//! hosts close and are gone while the map goes on. Each test brings a
//! fresh cluster up and down (serialized), under a watchdog that tears the
//! cluster and every process group down if it runs too long. Skips with a
//! message off root or without Slurm (`.ci/run` installs it).

use std::time::{Duration, Instant};

use miniray::cluster::SlurmLauncher;
use miniray::pool::{HostState, HostStatus, Hosts, Pool, PoolOptions};

#[path = "common/hosts.rs"]
mod hosts;
#[path = "common/slurm.rs"]
mod slurm;

use slurm::{eventually, marked, Cluster};

/// Set for the driver process of `the_driver_killed...`.
const DRIVER_ENV: &str = "MINIRAY_TEST_POOL_DRIVER";

/// The worker program: the test binary re-run under srun.
#[test]
#[ignore = "the worker program srun starts"]
fn inner_worker() {
    slurm::worker_if_asked();
}

/// Hosts launched by one step with `srun_args`, each task sleeping
/// `work_us` per request, 2 connections each.
fn slurm_hosts(srun_args: &[&str], work_us: u64, mark: &str) -> Hosts {
    let mark = mark.to_string();
    Hosts::slurm(srun_args, move |feed| slurm::launcher(feed, work_us, &mark)).per_host(2)
}

/// The hosts among `all` on the nodes with these addresses.
fn on<'a>(all: &'a [HostStatus], ips: &[&str]) -> Vec<&'a HostStatus> {
    all.iter()
        .filter(|h| ips.contains(&h.addr.ip().to_string().as_str()))
        .collect()
}

/// Whether every host on `ips` (and there are `ips.len()`) is in `state`
/// and, if `answered`, has answered a call.
fn all_on(pool: &Pool<u64, u64>, ips: &[&str], state: HostState, answered: bool) -> bool {
    let all = pool.hosts();
    let these = on(&all, ips);
    these.len() == ips.len()
        && these
            .iter()
            .all(|h| h.state == state && (!answered || h.answered > 0))
}

/// Turns of the pool until `check` holds, up to `within`.
fn turns_until(
    pool: &mut Pool<u64, u64>,
    within: Duration,
    check: impl Fn(&Pool<u64, u64>) -> bool,
) -> bool {
    let until = Instant::now() + within;
    while !check(pool) {
        if Instant::now() >= until {
            return false;
        }
        pool.poll(Some(Duration::from_millis(50)));
    }
    true
}

/// The Slurm id (`JOB.STEP`) of the pool's launcher's step `i`.
fn step_id(pool: &Pool<u64, u64>, i: usize) -> String {
    let launcher = pool.host_source::<SlurmLauncher>().expect("a launcher");
    let steps = launcher.steps();
    steps
        .get(i)
        .and_then(|s| s.slurm_step().map(str::to_string))
        .unwrap_or_else(|| panic!("step {i} has no id: {steps:?}"))
}

/// What a map saw.
#[derive(Debug, Default)]
struct Tally {
    received: u64,
    wrong: u64,
    failed: u64,
}

impl Tally {
    fn take(&mut self, n: u64, r: miniray::pool::TaskResult<u64>) {
        match r {
            Ok(v) => {
                self.received += 1;
                self.wrong += u64::from(v != 2 * n + 1);
            }
            Err(e) => {
                eprintln!("task {n}: {e}");
                self.failed += 1;
            }
        }
    }
}

#[test]
fn a_map_gets_work_from_a_new_step_and_loses_nothing_to_a_cancelled_one() {
    const NAME: &str = "a_map_gets_work_from_a_new_step_and_loses_nothing_to_a_cancelled_one";
    let Some(cluster) = Cluster::up(NAME) else {
        return;
    };
    let _dog = cluster.watchdog(NAME, Duration::from_secs(300));
    let mark = slurm::mark();
    const TASKS: u64 = 200_000;
    let (first, second) = (["127.0.0.11", "127.0.0.12"], ["127.0.0.13", "127.0.0.14"]);
    let opts = PoolOptions::new().timeout(Duration::from_secs(10));
    let hosts = slurm_hosts(&["-N2", "-n2", "-w", "n1,n2"], 0, &mark);
    let mut pool: Pool<u64, u64> = Pool::remote(&opts, &hosts).expect("pool");
    let mut tally = Tally::default();
    let began = Instant::now();
    let mut started: Option<Instant> = None;
    let mut worked: Option<Duration> = None;
    let mut cancelled: Option<(String, u64)> = None;
    let mut map = pool.map(0..TASKS);
    let mut n = 0u64;
    while let Some(r) = map.next() {
        tally.take(n, r);
        n += 1;
        if n == 10_000 {
            // Scale up mid-map: another step, through the pool's launcher.
            let launcher = map.pool().host_source::<SlurmLauncher>().expect("launcher");
            launcher
                .start_step(["-N2", "-n2", "-w", "n3,n4"])
                .expect("srun");
            started = Some(Instant::now());
        }
        if n.is_multiple_of(100) {
            if let (Some(at), None) = (started, worked) {
                if all_on(map.pool(), &second, HostState::Serving, true) {
                    worked = Some(at.elapsed());
                }
            }
            if worked.is_some() && cancelled.is_none() && n >= 60_000 {
                // The first step cancelled from outside (an operator, a
                // preemption): SIGTERM, then SIGKILL after KillWait.
                let id = step_id(map.pool(), 0);
                cluster.scancel(&[&id]);
                cancelled = Some((id, n));
            }
        }
    }
    drop(map);
    let stats = pool.stats();
    eprintln!(
        "{TASKS} tasks in {:?}: {tally:?}, new step answering {worked:?} after its start, first \
         step cancelled at {cancelled:?}, {} retried, {} replaced",
        began.elapsed(),
        stats.retried,
        stats.replaced
    );
    assert!(
        worked.is_some(),
        "the new step's hosts never both answered: {:?}",
        pool.hosts()
    );
    assert!(cancelled.is_some(), "the map ended before the cancel");
    assert_eq!(
        (tally.received, tally.wrong, tally.failed),
        (TASKS, 0, 0),
        "0 lost, 0 wrong"
    );
    assert!(
        turns_until(&mut pool, Duration::from_secs(20), |p| all_on(
            p,
            &first,
            HostState::Gone,
            false
        )),
        "the cancelled step's hosts are gone: {:?}",
        pool.hosts()
    );
    let all = pool.hosts();
    assert!(
        on(&all, &second)
            .iter()
            .all(|h| h.state == HostState::Serving && h.connections == 2),
        "the new step's hosts serve on: {all:?}"
    );
    drop(pool);
    assert!(
        eventually(Duration::from_secs(15), || cluster.squeue().is_empty()),
        "dropping the pool ends its steps: queue {:?}",
        cluster.squeue()
    );
    assert!(
        eventually(Duration::from_secs(15), || marked(&mark).is_empty()),
        "workers left: {:?}",
        marked(&mark)
    );
}

/// A driver of its own: a pool over one 4-task step mapping without end;
/// prints `mapping` once every host answered.
#[test]
#[ignore = "the driver process a test SIGKILLs"]
fn inner_pool_driver() {
    if std::env::var_os(DRIVER_ENV).is_none() {
        return;
    }
    let mark = std::env::var(slurm::MARK_ENV).expect("a mark");
    let opts = PoolOptions::new().timeout(Duration::from_secs(10));
    let hosts = slurm_hosts(&["-N4", "-n4"], 1000, &mark);
    let mut pool: Pool<u64, u64> = Pool::remote(&opts, &hosts).expect("pool");
    let ips = ["127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14"];
    let mut said = false;
    let mut map = pool.map(0..u64::MAX);
    let mut n = 0u64;
    while let Some(r) = map.next() {
        assert_eq!(r.expect("a result"), 2 * n + 1);
        n += 1;
        if !said && n.is_multiple_of(100) && all_on(map.pool(), &ips, HostState::Serving, true) {
            // Its own line: libtest's "test inner_pool_driver ... " has none.
            println!("\nmapping");
            said = true;
        }
    }
}

#[test]
fn the_driver_killed_mid_map_leaves_no_worker_and_an_empty_queue() {
    const NAME: &str = "the_driver_killed_mid_map_leaves_no_worker_and_an_empty_queue";
    let Some(cluster) = Cluster::up(NAME) else {
        return;
    };
    let dog = cluster.watchdog(NAME, Duration::from_secs(120));
    let mark = slurm::mark();
    let (driver, lines) = slurm::spawn_driver("inner_pool_driver", DRIVER_ENV, &mark, &dog);
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .expect("the driver maps over its 4 hosts");
        if line == "mapping" {
            break;
        }
    }
    let running = marked(&mark).len();
    assert!(
        running >= 6,
        "the driver, srun, 4 workers and their serving children run: {running}"
    );
    // The driver alone, mid-map.
    cluster.kill_driver_expect_clean(driver, &mark);
}

#[test]
fn a_drain_on_the_steps_signal_loses_no_try() {
    const NAME: &str = "a_drain_on_the_steps_signal_loses_no_try";
    let Some(cluster) = Cluster::up(NAME) else {
        return;
    };
    let _dog = cluster.watchdog(NAME, Duration::from_secs(240));
    let mark = slurm::mark();
    const TASKS: u64 = 30_000;
    let (drained, staying) = (["127.0.0.11", "127.0.0.12"], ["127.0.0.13", "127.0.0.14"]);
    let opts = PoolOptions::new().timeout(Duration::from_secs(10));
    let hosts = slurm_hosts(&["-N2", "-n2", "-w", "n1,n2"], 1000, &mark);
    let mut pool: Pool<u64, u64> = Pool::remote(&opts, &hosts).expect("pool");
    pool.host_source::<SlurmLauncher>()
        .expect("launcher")
        .start_step(["-N2", "-n2", "-w", "n3,n4"])
        .expect("srun");
    let mut tally = Tally::default();
    let mut signalled: Option<(Instant, u64)> = None;
    let mut gone: Option<(Duration, u64)> = None;
    let mut map = pool.map(0..TASKS);
    let mut n = 0u64;
    while let Some(r) = map.next() {
        tally.take(n, r);
        n += 1;
        if signalled.is_none() && n >= 3000 && n.is_multiple_of(100) {
            let all = map.pool().hosts();
            let busy = on(&all, &drained)
                .iter()
                .chain(on(&all, &staying).iter())
                .filter(|h| h.answered > 0)
                .count();
            if busy == 4 {
                // What `srun --signal=USR1@SECS` sends before the walltime.
                let id = step_id(map.pool(), 0);
                cluster.scancel(&["--signal=USR1", &id]);
                signalled = Some((Instant::now(), n));
            }
        }
        if let (Some((at, _)), None) = (signalled, gone) {
            if all_on(map.pool(), &drained, HostState::Gone, false) {
                gone = Some((at.elapsed(), n));
            }
        }
    }
    drop(map);
    let stats = pool.stats();
    eprintln!(
        "{TASKS} tasks: {tally:?}, signalled at {:?}, drained hosts gone {gone:?} after it, {} \
         retried",
        signalled.map(|s| s.1),
        stats.retried
    );
    assert!(
        signalled.is_some(),
        "the map ended before every host answered"
    );
    assert_eq!(
        (tally.received, tally.wrong, tally.failed),
        (TASKS, 0, 0),
        "0 lost, 0 wrong"
    );
    assert_eq!(
        stats.retried, 0,
        "each try in flight on a drained host finished there"
    );
    assert!(
        gone.is_some_and(|(_, at)| at < TASKS),
        "the drained hosts closed while the map went on: {:?}",
        pool.hosts()
    );
    let launcher = pool.host_source::<SlurmLauncher>().expect("launcher");
    assert!(
        eventually(Duration::from_secs(15), || launcher.steps()[0]
            .ended()
            .is_some()),
        "the drained step ends once its workers are idle: {:?}",
        launcher.steps()
    );
    drop(pool);
    assert!(eventually(Duration::from_secs(15), || cluster
        .squeue()
        .is_empty()));
    assert!(eventually(Duration::from_secs(15), || marked(&mark).is_empty()));
}
