//! Exact under real use: no reply reaches the wrong task, a reply's content
//! never changes a worker's life, a chunk never fails a task for its
//! neighbour's fault, and options stay within their bounds.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::DEADLINE;
use miniray::pool::{Hosts, Pool, PoolOptions};
use miniray::remote::{ConnectOptions, Keepalive};
use miniray::task::{Cause, RemoteKind};
use miniray::{py, Error, Exec, Value, WorkerOptions};

/// A closure whose reply *is* a dict shaped like an error reply: data, not
/// a verdict. Every such reply arrives as the value it is, and the workers
/// that sent them keep serving (before, two such replies retired both
/// workers and the pool stalled).
#[test]
fn a_reply_shaped_like_an_error_is_data_and_retires_no_worker() {
    let opts = PoolOptions::new().workers(2);
    let mut pool = Pool::new(&opts, |n: u64| -> Value {
        py!({"miniray.error": {"kind": "panic", "message": (format!("record {n}"))}})
    })
    .expect("pool");
    let pids: HashSet<i32> = pool.workers().iter().filter_map(|&w| pool.pid(w)).collect();
    for n in 0..20u64 {
        let id = pool.submit(n).expect("submit");
        let got = pool
            .get(id, Some(DEADLINE))
            .expect("the pool keeps serving")
            .expect("a reply, whatever its content");
        assert_eq!(
            got["miniray.error"]["message"],
            Value::from(format!("record {n}"))
        );
    }
    let now: HashSet<i32> = pool.workers().iter().filter_map(|&w| pool.pid(w)).collect();
    assert_eq!(pids, now, "the same workers still serve");
    assert_eq!(pool.stats().replaced, 0);
}

/// A plain exec peer that reports errors its own way (the reserved dict):
/// its task fails with the peer's kind, and the worker is kept.
#[test]
fn a_plain_peers_error_reply_fails_its_task_and_keeps_the_worker() {
    let program = Exec::new(
        "python3",
        [
            "-c",
            "import sys, json\nfor l in sys.stdin:\n    n = int(l)\n    print(json.dumps({'miniray.error': {'kind': 'panic', 'message': 'odd'}}) if n % 2 else n, flush=True)",
        ],
    )
    .expect("exec");
    let mut pool: Pool<u64, u64> =
        Pool::exec(&PoolOptions::new().workers(1), &program).expect("pool");
    let pid = pool.workers().first().and_then(|&w| pool.pid(w));
    let results: Vec<_> = pool.map(0..10u64).collect();
    for (n, r) in (0u64..).zip(&results) {
        match r {
            Ok(v) => assert_eq!((*v, n % 2), (n, 0)),
            Err(e) => {
                assert_eq!(n % 2, 1, "{e}");
                assert!(
                    matches!(
                        e.cause(),
                        Cause::Remote {
                            kind: RemoteKind::Panic,
                            ..
                        }
                    ),
                    "{e}"
                );
                assert_eq!(e.tries().len(), 1, "an error reply is not retried: {e}");
            }
        }
    }
    assert_eq!(
        pool.workers().first().and_then(|&w| pool.pid(w)),
        pid,
        "the worker was kept"
    );
}

/// A plain program that prints a stray line now and then: every result is
/// right, the strays are counted, and the worker that printed each was
/// recycled. The same with 16 in flight asked for (a plain peer gets one).
#[test]
fn stray_lines_of_a_plain_program_never_reach_a_task() {
    for inflight in [1, 16] {
        let program = Exec::new(
            "python3",
            [
                "-c",
                "import sys\nc = 0\nfor l in sys.stdin:\n    n = int(l)\n    c += 1\n    if c % 37 == 0: print(7)\n    print(2 * n + 1, flush=True)",
            ],
        )
        .expect("exec");
        let opts = PoolOptions::new()
            .workers(3)
            .in_flight_per_worker(inflight)
            .max_retries(5);
        let mut pool: Pool<u64, u64> = Pool::exec(&opts, &program).expect("pool");
        let results: Vec<_> = pool.map(0..600u64).collect();
        let mut wrong = 0;
        for (n, r) in (0u64..).zip(&results) {
            match r {
                Ok(v) if *v == 2 * n + 1 => {}
                Ok(v) => {
                    wrong += 1;
                    eprintln!("task {n} got {v}");
                }
                Err(e) => panic!("task {n} lost: {e}"),
            }
        }
        assert_eq!(wrong, 0, "in flight {inflight}");
        let stats = pool.stats();
        // Every worker prints a stray line on its 37th request: 600 tasks
        // over 3 workers make at least (600 - 3 × 36) / 37 of them (each of
        // the last 3 workers may end short of its 37th).
        assert!(stats.out_of_sync >= (600 - 3 * 36) / 37, "{stats:?}");
        assert_eq!(
            stats.out_of_sync, stats.replaced,
            "each one recycled: {stats:?}"
        );
        assert_eq!(stats.failed, 0, "{stats:?}");
        // The cause quotes the stray line ("7") beside the reply.
        let why = pool.last_out_of_sync().expect("a cause kept");
        assert!(
            why.contains("2 lines for 1 request;") && why.contains('7'),
            "{why}"
        );
    }
}

/// Large items with an automatic chunk size and a small line limit: a
/// chunk stops growing at its byte bound, so no task fails for being in a
/// chunk too long for the line (before: 128 of 400 failed with the
/// defaults, 1,936 of 2,000 with a 4 MiB limit).
#[test]
fn chunks_are_bounded_by_their_encoded_size() {
    let opts = PoolOptions::new()
        .workers(2)
        .chunk_size_auto()
        .worker_options(WorkerOptions::new().max_line(256 * 1024));
    let mut pool = Pool::new(&opts, |s: String| s.len() as u64).expect("pool");
    let items = (0..400u64).map(|n| "x".repeat(10_000 + (n as usize % 7) * 1000));
    let results: Vec<_> = pool.map(items).collect();
    for (n, r) in (0u64..).zip(results) {
        let want = 10_000 + (n % 7) * 1000;
        assert_eq!(r.expect("no task fails for its chunk's size"), want);
    }
}

/// One reply of a chunk that the format cannot carry (a set, in JSON)
/// fails only its own task.
#[test]
fn a_reply_that_cannot_be_encoded_fails_only_its_task() {
    let opts = PoolOptions::new().workers(2).chunk_size(100);
    let mut pool = Pool::new(&opts, |n: u64| -> Value {
        if n == 7 {
            py!(set[1, 2])
        } else {
            Value::from(n)
        }
    })
    .expect("pool");
    let results: Vec<_> = pool.map(0..100u64).collect();
    for (n, r) in (0u64..).zip(&results) {
        match r {
            Ok(v) => assert_eq!(*v, Value::from(n)),
            Err(e) => {
                assert_eq!(n, 7, "{e}");
                assert!(
                    matches!(
                        e.cause(),
                        Cause::Remote {
                            kind: RemoteKind::Encode,
                            ..
                        }
                    ),
                    "{e}"
                );
            }
        }
    }
    assert!(results[7].is_err());
}

/// A chunk whose answer is over the line limit fails as a whole; its tasks
/// run again alone, so only the task whose own reply is too long fails.
#[test]
fn a_chunk_answer_over_the_line_limit_fails_only_the_task_too_long_alone() {
    let opts = PoolOptions::new()
        .workers(2)
        .chunk_size(50)
        .worker_options(WorkerOptions::new().max_line(64 * 1024));
    let mut pool = Pool::new(&opts, |n: u64| -> String {
        "y".repeat(if n == 10 { 100_000 } else { 3_000 })
    })
    .expect("pool");
    let results: Vec<_> = pool.map(0..50u64).collect();
    for (n, r) in (0u64..).zip(&results) {
        match r {
            Ok(s) => assert_eq!(s.len(), 3_000, "task {n}"),
            Err(e) => {
                assert_eq!(n, 10, "{e}");
                assert!(
                    matches!(
                        e.cause(),
                        Cause::Remote {
                            kind: RemoteKind::LineTooLong,
                            ..
                        }
                    ),
                    "{e}"
                );
            }
        }
    }
    assert!(results[10].is_err());
}

/// Options out of their bounds are refused, naming the option: before,
/// `chunk_size(usize::MAX)` made a map window of 1.8·10¹⁹ and
/// `in_flight_per_worker(2^26)` cost 790 MB at `Pool::new`.
#[test]
fn options_out_of_bounds_are_refused_by_name() {
    let cases = [
        (PoolOptions::new().chunk_size(usize::MAX), "chunk_size"),
        (
            PoolOptions::new().in_flight_per_worker(1 << 26),
            "in_flight_per_worker",
        ),
        (
            PoolOptions::new().in_flight_per_worker(0),
            "in_flight_per_worker",
        ),
        (PoolOptions::new().workers(0), "workers"),
        (PoolOptions::new().map_window(0), "map_window"),
        (PoolOptions::new().chunk_bytes(10), "chunk_bytes"),
    ];
    for (opts, name) in cases {
        match Pool::new(&opts, |n: u64| n) {
            Err(Error::InvalidOption { option, reason }) => {
                assert_eq!(option, name, "{reason}");
                let shown = Error::InvalidOption { option, reason }.to_string();
                assert!(shown.contains(name), "{shown}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    // A keepalive user timeout at or below the task timeout would abort a
    // busy host's live connection: refused before anything connects.
    let keepalive = Keepalive::default().user_timeout(Some(Duration::from_secs(5)));
    let hosts = Hosts::new(["127.0.0.1:9"])
        .expect("hosts")
        .connect_options(ConnectOptions::new().keepalive(Some(keepalive)));
    let opts = PoolOptions::new().timeout(Duration::from_secs(5));
    match Pool::<u64, u64>::remote(&opts, &hosts) {
        Err(Error::InvalidOption { option, .. }) => assert_eq!(option, "user_timeout"),
        other => panic!("user_timeout: {other:?}"),
    }
    let opts = PoolOptions::new().timeout(Duration::from_secs(4));
    let pool = Pool::<u64, u64>::remote(&opts, &hosts.give_up_after(Duration::from_millis(1)));
    assert!(
        pool.is_ok(),
        "a user timeout above the task timeout is fine"
    );
}

/// A fallible work function: an `Err` fails its task with the error's text
/// at once (no retry), and the worker goes on.
#[test]
fn a_fallible_functions_error_fails_its_task_and_keeps_the_worker() {
    let opts = PoolOptions::new().workers(1).chunk_size(8);
    let mut pool = Pool::fallible(&opts, |n: u64| -> Result<u64, String> {
        if n % 5 == 3 {
            Err(format!("{n} is not allowed"))
        } else {
            Ok(n * 10)
        }
    })
    .expect("pool");
    let pid = pool.workers().first().and_then(|&w| pool.pid(w));
    for (n, r) in (0u64..).zip(pool.map(0..40u64)) {
        match r {
            Ok(v) => assert_eq!(v, n * 10),
            Err(e) => {
                assert_eq!(n % 5, 3);
                assert_eq!(e.tries().len(), 1, "{e}");
                assert!(
                    matches!(e.cause(), Cause::Remote { kind: RemoteKind::Error, message, .. } if *message == format!("{n} is not allowed")),
                    "{e}"
                );
            }
        }
    }
    assert_eq!(pool.workers().first().and_then(|&w| pool.pid(w)), pid);
    assert_eq!(pool.stats().replaced, 0);
    let _ = Duration::ZERO;
}

/// A Python worker built on the helper (`python/miniray_worker.py`) under
/// `Pool::exec`: it announces frames, so its replies are matched by id, it
/// takes several requests at once and chunks, and it may `print` freely.
/// A reply of the wrong type is then that task's bad reply (a framed
/// answer names its task), not a loss of step.
#[test]
fn a_python_helper_worker_prints_freely_and_speaks_frames() {
    let script = "from miniray_worker import serve\n\
                  def work(n):\n    print('working on', n)\n    return 'three' if n == 3 else 2 * n + 1\n\
                  serve(work)\n";
    let program = Exec::new("python3", ["-c", script])
        .and_then(|p| {
            p.env(
                "PYTHONPATH",
                format!("{}/python", env!("CARGO_MANIFEST_DIR")),
            )
        })
        .expect("exec");
    let opts = PoolOptions::new()
        .workers(2)
        .in_flight_per_worker(8)
        .chunk_size(16);
    let mut pool: Pool<u64, u64> = Pool::exec(&opts, &program).expect("pool");
    let results: Vec<_> = pool.map(0..2000u64).collect();
    for (n, r) in (0u64..).zip(&results) {
        match r {
            Ok(v) => assert_eq!(*v, 2 * n + 1),
            Err(e) => {
                assert_eq!(n, 3, "{e}");
                assert!(matches!(e.cause(), Cause::Reply { .. }), "{e}");
                assert_eq!(e.tries().len(), 1, "{e}");
            }
        }
    }
    assert!(results[3].is_err());
    let stats = pool.stats();
    assert_eq!((stats.out_of_sync, stats.replaced), (0, 0), "{stats:?}");
}

/// An exec worker's exit status is its program's: a Python program that
/// dies of an uncaught exception (exit 1) is "exited with status 1", not a
/// closure worker's "work function returned an error".
#[test]
fn an_exec_workers_exit_is_described_as_its_programs() {
    let program = Exec::new(
        "python3",
        [
            "-c",
            "import sys\nsys.stdin.readline()\nraise SystemExit(1)",
        ],
    )
    .expect("exec");
    let opts = PoolOptions::new().workers(1).max_retries(0);
    let mut pool: Pool<u64, u64> = Pool::exec(&opts, &program).expect("pool");
    let id = pool.submit(1).expect("submit");
    let e = pool
        .get(id, Some(DEADLINE))
        .expect("finished")
        .expect_err("the program exits");
    let text = e.to_string();
    assert!(text.contains("exited with status 1"), "{text}");
    assert!(!text.contains("work function"), "{text}");
}
