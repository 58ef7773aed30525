//! The worker program contract without a cluster: this test binary re-run
//! as a `serve_worker` program (`inner_worker`, flags through
//! `MINIRAY_*` variables) and `examples/serve.rs`: the address line never
//! shows the wildcard, `--exit-when-idle` exits (with a drain line), the
//! end of standard input ends the worker with `MINIRAY_EXIT_ON_EOF=1`, and
//! `SIGTERM` drains: the request in flight is answered, a new connection
//! is closed, and the worker exits once its connection closes. Each
//! program is killed on drop; every wait is bounded.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use miniray::{ConnectOptions, Reactor};

mod common;

const WORKER_ENV: &str = "MINIRAY_TEST_WORKER";

#[test]
#[ignore = "the worker program the other tests start"]
fn inner_worker() {
    if std::env::var_os(WORKER_ENV).is_none() {
        return;
    }
    let config = miniray::cluster::WorkerConfig::from_env().expect("config");
    miniray::cluster::serve_worker_with(&config, |ms: u64| {
        std::thread::sleep(Duration::from_millis(ms));
        ms + 1
    })
    .expect("serve");
}

/// A program killed and reaped on drop; its stdout lines on a channel.
struct Program {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Program {
    fn start(mut cmd: Command) -> Program {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let out: ChildStdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Program { child, lines }
    }

    /// The next line containing `what`, the text from it on.
    fn line(&self, what: &str, within: Duration) -> String {
        let until = Instant::now() + within;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    if let Some(at) = l.find(what) {
                        return l[at..].to_string();
                    }
                }
                Err(e) => panic!("no {what:?} line within {within:?}: {e}"),
            }
        }
    }

    fn addr(&self) -> SocketAddr {
        let l = self.line("listening on ", Duration::from_secs(30));
        l["listening on ".len()..]
            .trim()
            .parse()
            .expect("an address")
    }

    /// Its exit status within `within`, or a panic.
    fn exits(&mut self, within: Duration) -> std::process::ExitStatus {
        let until = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            assert!(Instant::now() < until, "still running after {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn worker(vars: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("exe"));
    cmd.args([
        "--exact",
        "inner_worker",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(WORKER_ENV, "1")
    .env_remove("SLURMD_NODENAME")
    .stdin(Stdio::null());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd
}

#[test]
fn a_wildcard_bind_advertises_a_dialable_address_and_idle_exits() {
    let mut w = Program::start(worker(&[
        ("MINIRAY_LISTEN", "0.0.0.0:0"),
        ("MINIRAY_EXIT_WHEN_IDLE", "1"),
    ]));
    let addr = w.addr();
    assert!(!addr.ip().is_unspecified(), "{addr}");
    let mut r = Reactor::new().expect("reactor");
    let c = r
        .connect(addr, &ConnectOptions::new(), Some(Duration::from_secs(5)))
        .expect("the advertised address is dialable");
    r.send(c, &0u64).expect("send");
    assert_eq!(
        r.recv::<u64>(c, Some(Duration::from_secs(10)))
            .expect("reply"),
        1
    );
    r.close(c).expect("close");
    drop(r);
    let closed = Instant::now();
    assert_eq!(
        w.line("draining ", Duration::from_secs(10)),
        format!("draining {addr}")
    );
    assert!(w.exits(Duration::from_secs(10)).success());
    let idle = closed.elapsed();
    assert!(
        idle >= Duration::from_millis(900),
        "exited {idle:?} after the last connection"
    );
}

#[test]
fn the_end_of_stdin_ends_the_worker() {
    let mut cmd = worker(&[
        ("MINIRAY_LISTEN", "127.0.0.1:0"),
        ("MINIRAY_EXIT_ON_EOF", "1"),
    ]);
    cmd.stdin(Stdio::piped());
    let mut w = Program::start(cmd);
    let _ = w.addr();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        w.child.try_wait().expect("try_wait").is_none(),
        "runs while stdin is open"
    );
    drop(w.child.stdin.take());
    assert!(w.exits(Duration::from_secs(5)).success());
}

#[test]
fn sigterm_drains_answers_in_flight_work_and_refuses_new_connections() {
    let mut w = Program::start(worker(&[("MINIRAY_LISTEN", "127.0.0.1:0")]));
    let addr = w.addr();
    let mut r = Reactor::new().expect("reactor");
    let c = r
        .connect(addr, &ConnectOptions::new(), Some(Duration::from_secs(5)))
        .expect("connect");
    r.send(c, &1500u64).expect("send");
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill(2) with plain integers on our own child.
    assert_eq!(unsafe { libc::kill(w.child.id() as i32, libc::SIGTERM) }, 0);
    assert_eq!(
        w.line("draining ", Duration::from_secs(5)),
        format!("draining {addr}")
    );
    // A new connection is closed at once.
    let late = r
        .connect(addr, &ConnectOptions::new(), Some(Duration::from_secs(5)))
        .expect("connect");
    r.send(late, &1u64).expect("send");
    match r.recv::<u64>(late, Some(Duration::from_secs(5))) {
        Err(e) if e.is_closed() => {}
        other => panic!("a draining worker served a new connection: {other:?}"),
    }
    // The request in flight (its child caught SIGTERM too) is answered.
    assert_eq!(
        r.recv::<u64>(c, Some(Duration::from_secs(10)))
            .expect("reply"),
        1501
    );
    assert!(
        w.child.try_wait().expect("try_wait").is_none(),
        "waits for its connection"
    );
    r.close(c).expect("close");
    assert!(w.exits(Duration::from_secs(5)).success());
}

#[test]
fn serve_example_advertises_and_exits_when_idle() {
    let mut cmd = Command::new(common::example("serve"));
    cmd.args([
        "--listen",
        "0.0.0.0:0",
        "--advertise",
        "10.9.8.7",
        "--exit-when-idle",
        "0.5",
    ])
    .stdin(Stdio::null());
    let mut s = Program::start(cmd);
    let line = s.line("listening on ", Duration::from_secs(30));
    assert!(line.starts_with("listening on 10.9.8.7:"), "{line}");
    assert!(s
        .line("draining ", Duration::from_secs(10))
        .starts_with("draining 10.9.8.7:"));
    assert!(s.exits(Duration::from_secs(10)).success());
}
