//! miniray's benchmark, with the floor the OS allows measured in the same run.
//!
//! `cargo run --release --example bench [-- --quick] [--json FILE]`
//!
//! Each figure is a median over several runs (p99 beside latencies), printed
//! in a table beside its floor (written here with the same crates) and the
//! ratio, and written as JSON. The floors: a blocking socketpair ping-pong,
//! a raw mio echo loop with no decoding, raw fork + socketpair spawn and
//! teardown, a memchr scan, and a raw memfd + SCM_RIGHTS handoff. Before it
//! starts it waits (up to 10 s) for the machine to be quiet and reports how
//! busy it was. `--quick` shrinks every count (and N) for a smoke run.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use miniray::framing::LineBuffer;
use miniray::{
    ConnectOptions, Format, Reactor, ServerOptions, SharedMemory, Worker, WorkerOptions,
};
use serde_json::{json, Map, Value};

// ------------------------------------------------------------------ stats

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn p99(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * 0.99).round() as usize]
}

/// One row of the table.
struct Row {
    group: &'static str,
    name: String,
    unit: &'static str,
    value: f64,
    p99: Option<f64>,
    floor: Option<f64>,
    floor_name: &'static str,
    /// `value / floor` for costs, `value / floor` for rates too (then > 1 is worse only for costs).
    target: Option<Target>,
}

#[derive(Clone, Copy)]
enum Target {
    /// value / floor must be at most this.
    RatioAtMost(f64),
    /// value / floor must be at least this.
    RatioAtLeast(f64),
    /// value must be at most this (in the row's unit).
    AtMost(f64),
    /// value must be at least this.
    AtLeast(f64),
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        self.floor.map(|f| self.value / f)
    }

    fn met(&self) -> Option<bool> {
        Some(match self.target? {
            Target::RatioAtMost(r) => self.ratio()? <= r,
            Target::RatioAtLeast(r) => self.ratio()? >= r,
            Target::AtMost(x) => self.value <= x,
            Target::AtLeast(x) => self.value >= x,
        })
    }

    fn target_text(&self) -> String {
        match self.target {
            None => String::new(),
            Some(Target::RatioAtMost(r)) => format!("<= {r}x"),
            Some(Target::RatioAtLeast(r)) => format!(">= {r}x"),
            Some(Target::AtMost(x)) => format!("<= {x} {}", self.unit),
            Some(Target::AtLeast(x)) => format!(">= {x} {}", self.unit),
        }
    }

    fn json(&self) -> Value {
        json!({
            "group": self.group, "name": self.name, "unit": self.unit,
            "median": self.value, "p99": self.p99,
            "floor": self.floor, "floor_name": self.floor_name,
            "ratio": self.ratio(), "target": self.target_text(), "met": self.met(),
        })
    }
}

struct Bench {
    quick: bool,
    only: Option<String>,
    rows: Vec<Row>,
}

impl Bench {
    fn push(&mut self, row: Row) {
        let ratio = row.ratio().map_or(String::new(), |r| format!("{r:.2}"));
        let floor = row.floor.map_or(String::new(), |f| format!("{f:.3}"));
        let p99 = row.p99.map_or(String::new(), |p| format!("{p:.3}"));
        let met = match row.met() {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "",
        };
        println!(
            "{:<12} {:<34} {:>12.3} {:>10} {:>6} {:>12} {:>7} {:>10} {:>4}",
            row.group,
            row.name,
            row.value,
            p99,
            row.unit,
            floor,
            ratio,
            row.target_text(),
            met
        );
        self.rows.push(row);
    }

    /// Whether a group runs (`--only GROUP` runs just that one).
    fn runs(&self, group: &str) -> bool {
        match self.only.as_deref() {
            Some(only) => only == group,
            None => true,
        }
    }

    fn n(&self, full: usize, quick: usize) -> usize {
        if self.quick {
            quick
        } else {
            full
        }
    }
}

// ------------------------------------------------------------ raw floors

/// Forks a child that echoes raw bytes on `sock` until EOF.
fn fork_raw_echo(sock: UnixStream, others: &[RawFd]) -> libc::pid_t {
    let fd = sock.as_raw_fd();
    // SAFETY: the child only makes async-signal-safe calls (close, read,
    // write, _exit) on descriptors it inherited, then exits.
    unsafe {
        let pid = libc::fork();
        if pid == 0 {
            for &o in others {
                libc::close(o);
            }
            let mut buf = [0u8; 65536];
            loop {
                let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
                if n <= 0 {
                    libc::_exit(0);
                }
                let mut off = 0;
                while off < n {
                    let w = libc::write(
                        fd,
                        buf.as_ptr().add(off as usize).cast(),
                        (n - off) as usize,
                    );
                    if w <= 0 {
                        libc::_exit(1);
                    }
                    off += w;
                }
            }
        }
        pid
    }
}

fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waitpid on our own child with a valid out-pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
}

/// A raw echo child for the blocking socketpair ping-pong floor.
struct RawEcho {
    sock: UnixStream,
    pid: libc::pid_t,
}

impl RawEcho {
    fn new() -> Self {
        let (a, b) = UnixStream::pair().expect("socketpair");
        let pid = fork_raw_echo(b, &[a.as_raw_fd()]);
        RawEcho { sock: a, pid }
    }

    /// `rounds` ping-pongs of `len` bytes: µs each.
    fn rounds(&mut self, len: usize, rounds: usize) -> Vec<f64> {
        let msg = vec![b'x'; len];
        let mut back = vec![0u8; len];
        let mut times = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let t = Instant::now();
            self.sock.write_all(&msg).expect("write");
            self.sock.read_exact(&mut back).expect("read");
            times.push(t.elapsed().as_secs_f64() * 1e6);
        }
        times
    }
}

impl Drop for RawEcho {
    fn drop(&mut self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        reap(self.pid);
    }
}

/// Raw mio echo loop, no decoding: `n` echo children, `inflight` 16-byte
/// lines in flight each, for `dur`. Returns lines/s.
fn floor_mio_echo(n: usize, inflight: usize, dur: Duration) -> f64 {
    use mio::{Events, Interest, Poll, Token};
    let mut poll = Poll::new().expect("poll");
    let mut socks = Vec::with_capacity(n);
    let mut pids = Vec::with_capacity(n);
    let mut parent_fds: Vec<RawFd> = Vec::with_capacity(n);
    for _ in 0..n {
        let (a, b) = UnixStream::pair().expect("socketpair");
        parent_fds.push(a.as_raw_fd());
        pids.push(fork_raw_echo(b, &parent_fds));
        a.set_nonblocking(true).expect("nonblocking");
        let mut s = mio::net::UnixStream::from_std(a);
        poll.registry()
            .register(&mut s, Token(socks.len()), Interest::READABLE)
            .expect("register");
        socks.push(s);
    }
    let line = b"0123456789abcde\n";
    let batch: Vec<u8> = line.repeat(inflight);
    for s in &mut socks {
        s.write_all(&batch).expect("prime");
    }
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 256 * 1024];
    let mut partial = vec![0usize; n];
    let mut lines = 0u64;
    let t = Instant::now();
    while t.elapsed() < dur {
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .expect("poll");
        for ev in events.iter() {
            let i = ev.token().0;
            loop {
                match socks[i].read(&mut buf) {
                    Ok(0) => break,
                    Ok(k) => {
                        let got = memchr::memchr_iter(b'\n', &buf[..k]).count();
                        partial[i] = (partial[i] + k) % line.len();
                        lines += got as u64;
                        // Echo back as many lines as completed: keep `inflight` in flight.
                        let out = line.repeat(got);
                        let mut off = 0;
                        while off < out.len() {
                            match socks[i].write(&out[off..]) {
                                Ok(w) => off += w,
                                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                    std::thread::yield_now()
                                }
                                Err(_) => break,
                            }
                        }
                    }
                    Err(_) => break,
                }
            }
        }
    }
    let rate = lines as f64 / t.elapsed().as_secs_f64();
    drop(socks);
    for p in pids {
        reap(p);
    }
    rate
}

/// Raw fork + socketpair spawn, then close + waitpid teardown: µs per worker.
fn floor_spawn(n: usize) -> (f64, f64) {
    let t = Instant::now();
    let mut ends = Vec::with_capacity(n);
    let mut pids = Vec::with_capacity(n);
    let mut fds: Vec<RawFd> = Vec::with_capacity(n);
    for _ in 0..n {
        let (a, b) = UnixStream::pair().expect("socketpair");
        fds.push(a.as_raw_fd());
        let bfd = b.as_raw_fd();
        // SAFETY: the child makes only async-signal-safe calls and exits.
        let pid = unsafe {
            let pid = libc::fork();
            if pid == 0 {
                // Close every inherited descriptor but our own, as any correct
                // fork worker must (else no child ever sees EOF at teardown).
                let fd = bfd as libc::c_uint;
                if fd > 3 {
                    libc::syscall(libc::SYS_close_range, 3u32, fd - 1, 0u32);
                }
                libc::syscall(libc::SYS_close_range, fd + 1, u32::MAX, 0u32);
                let mut byte = 0u8;
                while libc::read(bfd, (&mut byte as *mut u8).cast(), 1) > 0 {}
                libc::_exit(0);
            }
            pid
        };
        drop(b);
        ends.push(a);
        pids.push(pid);
    }
    let spawn = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    let t = Instant::now();
    drop(ends);
    for p in pids {
        reap(p);
    }
    let teardown = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    (spawn, teardown)
}

/// Raw memfd + SCM_RIGHTS handoff round trip: the child receives the
/// descriptor, closes it and answers one byte. µs per handoff.
fn floor_fd_handoff(rounds: usize) -> Vec<f64> {
    let (a, b) = UnixStream::pair().expect("socketpair");
    let bfd = b.as_raw_fd();
    let afd = a.as_raw_fd();
    // SAFETY: the child makes only async-signal-safe calls and exits.
    let pid = unsafe {
        let pid = libc::fork();
        if pid == 0 {
            libc::close(afd);
            loop {
                let mut byte = 0u8;
                let mut iov = libc::iovec {
                    iov_base: (&mut byte as *mut u8).cast(),
                    iov_len: 1,
                };
                let mut control = [0u64; 8];
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_iov = &mut iov;
                msg.msg_iovlen = 1;
                msg.msg_control = control.as_mut_ptr().cast();
                msg.msg_controllen = std::mem::size_of_val(&control) as _;
                if libc::recvmsg(bfd, &mut msg, libc::MSG_CMSG_CLOEXEC) <= 0 {
                    libc::_exit(0);
                }
                let cmsg = libc::CMSG_FIRSTHDR(&msg);
                if !cmsg.is_null() {
                    libc::close(*(libc::CMSG_DATA(cmsg) as *const RawFd));
                }
                libc::write(bfd, (&byte as *const u8).cast(), 1);
            }
        }
        pid
    };
    drop(b);
    let name = std::ffi::CString::new("floor").expect("name");
    // SAFETY: memfd_create with a valid name; the descriptor is ours.
    let memfd =
        unsafe { OwnedFd::from_raw_fd(libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC)) };
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        // SAFETY: a one-byte iovec and a control buffer sized for one fd.
        unsafe {
            let byte = b'h';
            let mut iov = libc::iovec {
                iov_base: (&byte as *const u8 as *mut u8).cast(),
                iov_len: 1,
            };
            let mut control = [0u64; 8];
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(4) as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(4) as _;
            *(libc::CMSG_DATA(cmsg) as *mut RawFd) = memfd.as_raw_fd();
            libc::sendmsg(afd, &msg, 0);
            let mut back = 0u8;
            libc::read(afd, (&mut back as *mut u8).cast(), 1);
        }
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    drop(a);
    reap(pid);
    times
}

/// Restricts this process (and children forked after) to `cpus`.
fn pin(cpus: &[usize]) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it;
    // sched_setaffinity reads it for the size given.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Heap bytes in use (glibc `mallinfo2().uordblks`).
fn heap_in_use() -> f64 {
    // SAFETY: mallinfo2 has no preconditions.
    unsafe { libc::mallinfo2() }.uordblks as f64
}

// -------------------------------------------------------------- payloads

fn dict_1kb() -> Value {
    let mut m = Map::new();
    for i in 0..48 {
        m.insert(format!("key{i:02}"), json!(format!("value-{i:04}")));
    }
    let v = Value::Object(m);
    // About 1 KB of JSON text: 48 pairs of 21 bytes.
    debug_assert!((1000..1100).contains(&v.to_string().len()));
    v
}

fn floats(n: usize) -> Value {
    Value::Array((0..n).map(|i| json!(i as f64 * 0.37 + 0.001)).collect())
}

// --------------------------------------------------------------- machine

fn cpu_busy_fraction(over: Duration) -> f64 {
    fn sample() -> (u64, u64) {
        let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let cpu: Vec<u64> = text
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        let idle = cpu.get(3).copied().unwrap_or(0) + cpu.get(4).copied().unwrap_or(0);
        (cpu.iter().sum(), idle)
    }
    let (t0, i0) = sample();
    std::thread::sleep(over);
    let (t1, i1) = sample();
    let total = (t1 - t0).max(1) as f64;
    1.0 - (i1 - i0) as f64 / total
}

// -------------------------------------------------------------- miniray

fn round_trips(r: &mut Reactor, w: Worker, msg: &Value, rounds: usize) -> Vec<f64> {
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        r.send(w, msg).expect("send");
        let back: Value = r.recv(w, Some(Duration::from_secs(60))).expect("recv");
        times.push(t.elapsed().as_secs_f64() * 1e6);
        std::hint::black_box(back);
    }
    times
}

fn pipelined(r: &mut Reactor, workers: &[Worker], inflight: usize, dur: Duration) -> f64 {
    let msg = json!(1);
    for &w in workers {
        for _ in 0..inflight {
            r.send(w, &msg).expect("send");
        }
    }
    let mut ready = Vec::new();
    let mut done = 0u64;
    let t = Instant::now();
    while t.elapsed() < dur {
        r.wait_any_into(&mut ready, Some(Duration::from_secs(10)))
            .expect("wait_any");
        for &w in &ready {
            while let Some(v) = r.try_recv::<Value>(w).expect("reply") {
                std::hint::black_box(v);
                done += 1;
                r.send(w, &msg).expect("send");
            }
        }
    }
    let rate = done as f64 / t.elapsed().as_secs_f64();
    // Drain what is still in flight.
    let mut left = workers.len() * inflight;
    while left > 0 {
        r.wait_any_into(&mut ready, Some(Duration::from_secs(10)))
            .expect("wait_any");
        if ready.is_empty() {
            break;
        }
        for &w in &ready {
            while r.try_recv(w).expect("reply").is_some() {
                left -= 1;
            }
        }
    }
    rate
}

fn kib_field(path: &str, field: &str) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[path = "common/args.rs"]
mod args;

const USAGE: &str = "\
usage: bench [--quick] [--json FILE] [--only GROUP]
  --quick        small counts, short waits (default: full run)
  --json FILE    also write every row as JSON to FILE (default: none)
  --only GROUP   run only the group named GROUP, e.g. floor (default: all)
";

fn main() {
    let mut args = args::Args::new("bench", USAGE);
    let (mut quick, mut json_path, mut only) = (false, None::<String>, None::<String>);
    while let Some(flag) = args.next_flag() {
        match flag.as_str() {
            "--quick" => quick = true,
            "--json" => json_path = Some(args.value(&flag)),
            "--only" => only = Some(args.value(&flag)),
            _ => args.unknown(&flag),
        }
    }
    let limit = miniray::raise_fd_limit().unwrap_or(1024);

    // Wait (up to 10 s) for a quiet machine; report how busy it was.
    let mut busy = cpu_busy_fraction(Duration::from_millis(500));
    let waited = Instant::now();
    while busy > 0.2 && waited.elapsed() < Duration::from_secs(if quick { 1 } else { 10 }) {
        busy = cpu_busy_fraction(Duration::from_millis(500));
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "machine: {} cpus, load {}, cpu busy {:.0}% before start{}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        busy * 100.0,
        if quick {
            " (quick run: small counts)"
        } else {
            ""
        }
    );
    println!(
        "{:<12} {:<34} {:>12} {:>10} {:>6} {:>12} {:>7} {:>10} {:>4}",
        "group", "measure", "median", "p99", "unit", "floor", "ratio", "target", "met"
    );
    let mut b = Bench {
        quick,
        only,
        rows: Vec::new(),
    };

    // ---- round trips, local and TCP, json and marshal
    if b.runs("roundtrip") {
        let payloads = [
            ("{\"test\":123}", json!({"test": 123}), b.n(3000, 200)),
            ("1 KB dict", dict_1kb(), b.n(2000, 100)),
            ("100k floats", floats(100_000), b.n(30, 3)),
        ];
        let small_line = Format::Json
            .encode(&json!({"test": 123}))
            .expect("encode")
            .len();
        // The small local round trip and its floor run in alternating
        // blocks, so both see the same machine (a shared one drifts a lot),
        // and everything here runs on CPU 0: a ping-pong across CPUs costs
        // a wake-up of an idle CPU (~40 us on this VM) that depends only on
        // where the scheduler put the child.
        let all_cpus: Vec<usize> =
            (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
        pin(&[0]);
        let mut raw = RawEcho::new();
        let mut r = Reactor::new().expect("reactor");
        let small = json!({"test": 123});
        let locals = [
            r.spawn(|v| v).expect("spawn"),
            r.spawn_with(&WorkerOptions::new().format(Format::Marshal), |v| v)
                .expect("spawn"),
        ];
        let mut floor = Vec::new();
        let mut ours: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..b.n(10, 2) {
            floor.extend(raw.rounds(small_line, b.n(500, 100)));
            for (i, &w) in locals.iter().enumerate() {
                ours[i].extend(round_trips(&mut r, w, &small, b.n(500, 100)));
            }
        }
        drop(raw);
        let floor_small = median(&mut floor);
        b.push(Row {
            group: "floor",
            name: format!("socketpair ping-pong {small_line} B"),
            unit: "us",
            value: floor_small,
            p99: Some(p99(&mut floor)),
            floor: None,
            floor_name: "",
            target: None,
        });
        for (i, format) in [Format::Json, Format::Marshal].into_iter().enumerate() {
            b.push(Row {
                group: "round trip",
                name: format!("local {format} {{\"test\":123}} vs floor, interleaved"),
                unit: "us",
                value: median(&mut ours[i]),
                p99: Some(p99(&mut ours[i])),
                floor: Some(floor_small),
                floor_name: "socketpair ping-pong",
                target: Some(Target::RatioAtMost(1.3)),
            });
            r.close(locals[i]).expect("close");
        }
        for format in [Format::Json, Format::Marshal] {
            let server = r
                .listen("127.0.0.1:0", &ServerOptions::new().format(format), |v| v)
                .expect("listen");
            let addr = r.server_addr(server).expect("addr");
            let local = r
                .spawn_with(&WorkerOptions::new().format(format), |v| v)
                .expect("spawn");
            let remote = r
                .connect(
                    addr,
                    &ConnectOptions::new().format(format),
                    Duration::from_secs(10),
                )
                .expect("connect");
            for (kind, w) in [("local", local), ("tcp", remote)] {
                for (label, msg, rounds) in &payloads {
                    let mut t = round_trips(&mut r, w, msg, *rounds);
                    let (floor, target): (Option<f64>, _) = match (*label, kind, format) {
                        ("1 KB dict", "local", _) => (None, Some(Target::AtMost(30.0))),
                        ("100k floats", "local", Format::Marshal) => {
                            (None, Some(Target::AtMost(5000.0)))
                        }
                        ("100k floats", "local", Format::Json) => {
                            (None, Some(Target::AtMost(25000.0)))
                        }
                        _ => (None, None),
                    };
                    b.push(Row {
                        group: "round trip",
                        name: format!("{kind} {format} {label}"),
                        unit: "us",
                        value: median(&mut t),
                        p99: Some(p99(&mut t)),
                        floor,
                        floor_name: "",
                        target,
                    });
                }
            }
            r.close(local).expect("close");
            r.close(remote).expect("close");
            r.stop_server(server).expect("stop");
        }
        drop(r);
        pin(&all_cpus);
    }
    // ---- pipelined messages/s, 64 in flight per worker
    if b.runs("pipelined") {
        // Floor and miniray alternate, 5 runs each; medians are compared.
        let dur = Duration::from_millis(if quick { 100 } else { 500 });
        for n in [1usize, 16, 256, 2000] {
            let n = if quick { n.min(64) } else { n };
            let mut r = Reactor::new().expect("reactor");
            let workers: Vec<Worker> = (0..n).map(|_| r.spawn(|v| v).expect("spawn")).collect();
            let mut floors = Vec::new();
            let mut rates = Vec::new();
            for _ in 0..b.n(5, 1) {
                floors.push(floor_mio_echo(n, 64, dur));
                rates.push(pipelined(&mut r, &workers, 64, dur));
            }
            let floor = median(&mut floors);
            let rate = median(&mut rates);
            let target = match n {
                16 | 2000 => Some(Target::RatioAtLeast(0.3)),
                _ => None,
            };
            b.push(Row {
                group: "pipelined",
                name: format!("N={n}, 64 in flight"),
                unit: "msg/s",
                value: rate,
                p99: None,
                floor: Some(floor),
                floor_name: "raw mio echo",
                target,
            });
            if n == 16 {
                b.push(Row {
                    group: "pipelined",
                    name: "N=16 absolute".into(),
                    unit: "msg/s",
                    value: rate,
                    p99: None,
                    floor: None,
                    floor_name: "",
                    target: Some(Target::AtLeast(2_000_000.0)),
                });
            }
        }
    }
    // ---- spawn and teardown, parent bytes per idle worker, child PSS
    if b.runs("spawn") {
        for n in [1000usize, 10_000] {
            let n = if quick { n / 10 } else { n };
            if n as u64 + 64 > limit {
                println!("skipping N={n}: open-file limit {limit}");
                continue;
            }
            let (floor_spawn_us, floor_teardown_us) = floor_spawn(n);
            let heap0 = heap_in_use();
            let mut r = Reactor::new().expect("reactor");
            let t = Instant::now();
            let workers: Vec<Worker> = (0..n).map(|_| r.spawn(|v| v).expect("spawn")).collect();
            let spawn_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
            // One round trip each, so every worker has used its buffers once.
            for &w in &workers {
                r.send(w, &json!(1)).expect("send");
            }
            for &w in &workers {
                r.recv(w, Some(Duration::from_secs(60))).expect("recv");
            }
            let heap1 = heap_in_use();
            let step = (n / 20).max(1);
            let mut pss: Vec<f64> = workers
                .iter()
                .step_by(step)
                .filter_map(|&w| r.pid(w))
                .filter_map(|p| kib_field(&format!("/proc/{p}/smaps_rollup"), "Pss:"))
                .collect();
            let t = Instant::now();
            let statuses = r.shutdown();
            let teardown_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
            assert_eq!(statuses.len(), n);
            b.push(Row {
                group: "spawn",
                name: format!("spawn per worker, N={n}"),
                unit: "us",
                value: spawn_us,
                p99: None,
                floor: Some(floor_spawn_us),
                floor_name: "raw fork + socketpair",
                target: Some(Target::RatioAtMost(1.3)),
            });
            b.push(Row {
                group: "spawn",
                name: format!("teardown per worker, N={n}"),
                unit: "us",
                value: teardown_us,
                p99: None,
                floor: Some(floor_teardown_us),
                floor_name: "raw close + waitpid",
                target: Some(Target::RatioAtMost(1.3)),
            });
            b.push(Row {
                group: "memory",
                name: format!("parent heap bytes per idle worker, N={n}"),
                unit: "B",
                value: (heap1 - heap0).max(0.0) / n as f64,
                p99: None,
                floor: None,
                floor_name: "",
                target: Some(Target::AtMost(8192.0)),
            });
            b.push(Row {
                group: "memory",
                name: format!("child PSS (median), N={n}"),
                unit: "KiB",
                value: median(&mut pss),
                p99: None,
                floor: None,
                floor_name: "",
                target: None,
            });
            drop(r);
        }
    }
    // ---- wait_any with one ready worker among N
    if b.runs("wait_any") {
        // On one CPU, like the round trips: what varies with N must be
        // miniray's cost, not where the scheduler put the one busy child.
        let all_cpus: Vec<usize> =
            (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
        pin(&[0]);
        let mut wait_costs = Vec::new();
        for n in [10usize, 1000, 10_000] {
            let n = if quick { n.min(200) } else { n };
            if n as u64 + 64 > limit {
                continue;
            }
            let mut r = Reactor::new().expect("reactor");
            let workers: Vec<Worker> = (0..n).map(|_| r.spawn(|v| v).expect("spawn")).collect();
            let w = workers[n / 2];
            let rounds = b.n(3000, 200);
            let msg = json!({"test": 123});
            let mut times = Vec::with_capacity(rounds);
            let mut ready = Vec::new();
            for _ in 0..rounds {
                let t = Instant::now();
                r.send(w, &msg).expect("send");
                loop {
                    r.wait_any_into(&mut ready, Some(Duration::from_secs(10)))
                        .expect("wait_any");
                    if ready.contains(&w) {
                        break;
                    }
                }
                r.try_recv(w).expect("reply");
                times.push(t.elapsed().as_secs_f64() * 1e6);
            }
            let cost = median(&mut times);
            wait_costs.push(cost);
            b.push(Row {
                group: "wait_any",
                name: format!("round trip via wait_any, N={n}"),
                unit: "us",
                value: cost,
                p99: Some(p99(&mut times)),
                floor: if n == 10 {
                    None
                } else {
                    wait_costs.first().copied()
                },
                floor_name: "same at N=10",
                target: if n >= 10_000 {
                    Some(Target::RatioAtMost(1.5))
                } else {
                    None
                },
            });
            drop(r);
        }
        pin(&all_cpus);
    }
    // ---- framing vs memchr, random chunks
    if b.runs("framing") {
        let total = b.n(256 << 20, 8 << 20);
        for line_len in [16usize, 1024] {
            let mut line = vec![b'a'; line_len - 1];
            line.push(b'\n');
            let data: Vec<u8> = line.iter().copied().cycle().take(total).collect();
            let mut seed = 0x2545_f491_4f6c_dd1du64;
            let mut chunks = Vec::new();
            let mut at = 0;
            while at < data.len() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let n = (1 + (seed % 65536) as usize).min(data.len() - at);
                chunks.push((at, at + n));
                at += n;
            }
            let runs = b.n(5, 2);
            let mut ours = Vec::new();
            let mut floor = Vec::new();
            for _ in 0..runs {
                let mut lb = LineBuffer::new(1 << 20);
                let mut count = 0usize;
                let t = Instant::now();
                for &(s, e) in &chunks {
                    lb.feed(&data[s..e], |l| {
                        count += l.map_or(0, |l| l.len().min(1) + 1);
                    });
                }
                ours.push(total as f64 / t.elapsed().as_secs_f64() / 1e9);
                std::hint::black_box(count);
                // The floor visits every newline (memchr's counting shortcut,
                // which yields no positions, would not be a framing floor).
                let t = Instant::now();
                let mut count = 0usize;
                for &(s, e) in &chunks {
                    for i in memchr::memchr_iter(b'\n', &data[s..e]) {
                        count = count.wrapping_add(i);
                    }
                }
                floor.push(total as f64 / t.elapsed().as_secs_f64() / 1e9);
                std::hint::black_box(count);
            }
            b.push(Row {
                group: "framing",
                name: format!("{line_len}-byte lines, random chunks"),
                unit: "GB/s",
                value: median(&mut ours),
                p99: None,
                floor: Some(median(&mut floor)),
                floor_name: "memchr scan visiting each newline",
                target: Some(Target::RatioAtLeast(0.5)),
            });
        }
    }
    // ---- encode / decode MB/s
    if b.runs("codec") {
        for (label, v) in [("1 KB dict", dict_1kb()), ("100k floats", floats(100_000))] {
            for format in [Format::Json, Format::Marshal] {
                let line = format.encode(&v).expect("encode");
                let reps = b.n(if v.is_array() { 20 } else { 20_000 }, 3);
                let mut enc = Vec::new();
                let mut dec = Vec::new();
                let mut out = Vec::new();
                let mut scratch = Vec::new();
                for _ in 0..5 {
                    let t = Instant::now();
                    for _ in 0..reps {
                        out.clear();
                        format
                            .encode_line(&v, &mut out, &mut scratch)
                            .expect("encode");
                    }
                    enc.push((line.len() * reps) as f64 / t.elapsed().as_secs_f64() / 1e6);
                    let t = Instant::now();
                    for _ in 0..reps {
                        std::hint::black_box(
                            format
                                .decode::<Value>(&line[..line.len() - 1])
                                .expect("decode"),
                        );
                    }
                    dec.push((line.len() * reps) as f64 / t.elapsed().as_secs_f64() / 1e6);
                }
                for (what, v) in [("encode", &mut enc), ("decode", &mut dec)] {
                    b.push(Row {
                        group: "codec",
                        name: format!("{what} {format} {label}"),
                        unit: "MB/s",
                        value: median(v),
                        p99: None,
                        floor: None,
                        floor_name: "",
                        target: None,
                    });
                }
            }
        }
    }
    // ---- SharedMemory handoff
    if b.runs("shm") {
        let rounds = b.n(2000, 100);
        let mut floor = floor_fd_handoff(rounds);
        let floor_handoff = median(&mut floor);
        b.push(Row {
            group: "floor",
            name: "raw memfd + SCM_RIGHTS handoff".into(),
            unit: "us",
            value: floor_handoff,
            p99: Some(p99(&mut floor)),
            floor: None,
            floor_name: "",
            target: None,
        });
        let mut r = Reactor::new().expect("reactor");
        let w = r
            .spawn_channel(&WorkerOptions::new(), |ch| {
                while let Some((_, regions)) = ch.recv_regions()? {
                    ch.send(&json!(regions.len()))?;
                }
                Ok(())
            })
            .expect("spawn");
        let sizes: &[(usize, &str)] = if quick {
            &[(4096, "4 KiB"), (1 << 20, "1 MiB")]
        } else {
            &[
                (4096, "4 KiB"),
                (1 << 20, "1 MiB"),
                (64 << 20, "64 MiB"),
                (1 << 30, "1 GiB"),
            ]
        };
        for &(size, label) in sizes {
            let region = SharedMemory::create("bench", size).expect("region");
            let mut times = Vec::with_capacity(rounds);
            for _ in 0..rounds {
                let t = Instant::now();
                r.send_regions(w, &json!({"region": region.id()}), &[&region])
                    .expect("send");
                r.recv(w, Some(Duration::from_secs(60))).expect("reply");
                times.push(t.elapsed().as_secs_f64() * 1e6);
            }
            b.push(Row {
                group: "shm",
                name: format!("region handoff {label}"),
                unit: "us",
                value: median(&mut times),
                p99: Some(p99(&mut times)),
                floor: Some(floor_handoff),
                floor_name: "raw memfd + SCM_RIGHTS",
                target: Some(Target::RatioAtMost(1.5)),
            });
        }
        drop(r);
    }
    let after = cpu_busy_fraction(Duration::from_millis(300));
    let report = json!({
        "machine": {
            "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "loadavg": load.trim(), "busy_before": busy, "busy_after": after, "quick": quick,
        },
        "rows": b.rows.iter().map(Row::json).collect::<Vec<_>>(),
    });
    let missed: Vec<&str> = b
        .rows
        .iter()
        .filter(|r| r.met() == Some(false))
        .map(|r| r.name.as_str())
        .collect();
    println!(
        "targets missed: {}",
        if missed.is_empty() {
            "none".to_string()
        } else {
            missed.join("; ")
        }
    );
    if let Some(path) = json_path {
        std::fs::write(&path, format!("{report:#}\n")).expect("write JSON");
        println!("wrote {path}");
    } else {
        println!("{report}");
    }
}
