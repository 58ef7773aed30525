//! `serve` hosts for the remote pool tests: each is this test binary run
//! again as a server process (its `inner_serve` test, which only serves
//! when [`SERVE_ENV`] names an address), in a process group of its own so a
//! whole host (the listener and its per-connection children) is killed or
//! stopped with one signal. [`Host`] kills, resumes and reaps it on drop.

#![allow(dead_code)]

use std::io::BufRead;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The environment variable naming the address `inner_serve` listens on.
pub const SERVE_ENV: &str = "MINIRAY_TEST_SERVE_ADDR";

/// With it set, the server requires this secret.
pub const SECRET_ENV: &str = "MINIRAY_TEST_SECRET";

/// Milliseconds each task sleeps on the server (so maps last long enough to
/// be hit mid-way).
pub const WORK_MS_ENV: &str = "MINIRAY_TEST_WORK_MS";

/// The work every test server does.
pub fn work(n: u64) -> u64 {
    2 * n + 1
}

/// The body of `inner_serve`: serves `work` on the address in
/// [`SERVE_ENV`] (port 0 picks one), prints `listening on ADDR`, and serves
/// until killed, its parent is gone, or 10 minutes pass.
pub fn serve_if_asked() {
    let Ok(addr) = std::env::var(SERVE_ENV) else {
        return;
    };
    let work_ms: u64 = std::env::var(WORK_MS_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let parent = std::os::unix::process::parent_id();
    let mut r = miniray::Reactor::new().expect("reactor");
    let mut opts = miniray::ServerOptions::new();
    if let Some(secret) = std::env::var(SECRET_ENV).ok().filter(|s| !s.is_empty()) {
        opts = opts.secret(miniray::Secret::new(secret.into_bytes()).expect("secret"));
    }
    let server = r
        .listen(addr.as_str(), &opts, move |n: u64| {
            if work_ms > 0 {
                std::thread::sleep(Duration::from_millis(work_ms));
            }
            work(n)
        })
        .expect("listen");
    println!("listening on {}", r.server_addr(server).expect("addr"));
    let until = Instant::now() + Duration::from_secs(600);
    while Instant::now() < until && std::os::unix::process::parent_id() == parent {
        let _ = r.wait_any(Some(Duration::from_secs(1)));
        let _ = r.take_server_events();
    }
}

/// A server process: the group is resumed, killed and reaped on drop.
pub struct Host {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Host {
    /// Starts a server on `addr` (e.g. `127.0.0.2:0`) with `prefix` before
    /// the program (e.g. `ip netns exec NS`), waiting up to 30 s for it to
    /// listen.
    pub fn start(prefix: &[&str], addr: &str, work_ms: u64) -> Host {
        Self::start_with(prefix, addr, work_ms, None)
    }

    /// [`Host::start`] requiring `secret` of its clients.
    pub fn start_with(prefix: &[&str], addr: &str, work_ms: u64, secret: Option<&str>) -> Host {
        let exe = std::env::current_exe().expect("current_exe");
        let mut argv: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
        argv.push(exe.to_string_lossy().into_owned());
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .args([
                "--exact",
                "inner_serve",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(SERVE_ENV, addr)
            .env(WORK_MS_ENV, work_ms.to_string())
            .env(SECRET_ENV, secret.unwrap_or(""))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0);
        let mut child = cmd.spawn().expect("spawn a server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            let found = lines.by_ref().map_while(Result::ok).find_map(|l| {
                l.find("listening on ")
                    .map(|at| l[at + "listening on ".len()..].trim().to_string())
            });
            let _ = tx.send(found);
            // Keep reading so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let mut host = Host {
            child,
            addr: "0.0.0.0:0".parse().expect("addr"),
        };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Some(a)) => host.addr = a.parse().expect("server address"),
            other => panic!("server on {addr} did not start: {other:?}"),
        }
        host
    }

    /// Sends `signal` to the whole host (its process group).
    pub fn signal(&self, signal: libc::c_int) {
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) with plain integers; the group is ours (the child
        // leads it and is not reaped before drop).
        let rc = unsafe { libc::kill(-pgid, signal) };
        assert_eq!(rc, 0, "kill(-{pgid}, {signal})");
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: as in `signal`; errors (the group is gone) are fine here.
        unsafe {
            libc::kill(-pgid, libc::SIGCONT);
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// An address on `ip` where nothing listens (a port just freed).
pub fn refusing_addr(ip: &str) -> SocketAddr {
    let l = std::net::TcpListener::bind((ip, 0)).expect("bind");
    l.local_addr().expect("addr")
}
