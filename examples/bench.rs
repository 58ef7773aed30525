//! miniray's benchmark, with the floor the OS allows measured in the same run.
//!
//! `cargo run --release --example bench [-- --quick] [--json FILE] [--only GROUP]`
//!
//! Each figure is a median over several runs (p99 beside latencies), printed
//! in a table beside its floor (written here with the same crates) and the
//! ratio, and written as JSON. The floors: a blocking socketpair ping-pong,
//! for large messages the same line through a socketpair plus the base64 and
//! memcpy a codec costing nothing would still need, a raw mio echo loop with
//! no decoding (and its per-reply form: one `write(2)` per reply line, as
//! miniray's default workers write), raw fork + socketpair spawn and
//! teardown, a memchr scan, and a raw memfd + SCM_RIGHTS handoff that
//! checks, maps and unmaps the region as a receiver must. Messages are sent both typed (a
//! `Vec<f64>`, a struct) and as [`miniray::Value`]. Before it starts it waits
//! (up to 10 s) for the machine to be quiet and reports how busy it was.
//! `--quick` shrinks every count (and N, and the 100 MB memory lines) for a
//! smoke run.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use base64_simd::STANDARD;
use miniray::framing::LineBuffer;
use miniray::pool::{Pool, PoolOptions};
use miniray::{
    ConnectOptions, Dict, Exec, Format, Reactor, ServerOptions, SharedMemory, Value, Worker,
    WorkerOptions,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

// ------------------------------------------------------- counting allocator

/// The system allocator, counting live heap bytes, and their peak while
/// [`peak_extra`] runs. Peak *requested* bytes are what a decoder's
/// algorithm needs, exactly and repeatably; RSS (VmHWM) would also count
/// pages the allocator keeps cached and miss capacity never touched. The
/// counting costs every allocation one relaxed atomic add (a few ns), paid
/// by miniray's rows and not by the floors, which do not allocate.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static TRACKING: AtomicBool = AtomicBool::new(false);

fn grew(n: usize) {
    let now = LIVE.fetch_add(n, Relaxed) + n;
    if TRACKING.load(Relaxed) {
        PEAK.fetch_max(now, Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds the
// GlobalAlloc contract; the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc_zeroed` is passed on.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc` is passed on.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc` is passed on.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // Counted as a resize: glibc grows large blocks with mremap,
            // never holding old and new at once.
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns what it gave and the peak heap bytes live during
/// it above those live before (what it returns is live at the end, so its
/// size counts).
fn peak_extra<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    TRACKING.store(true, Relaxed);
    let out = f();
    TRACKING.store(false, Relaxed);
    (out, PEAK.load(Relaxed).saturating_sub(base))
}

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

impl Row {
    /// A row with no p99, floor or target.
    fn new(group: &'static str, name: impl Into<String>, unit: &'static str, value: f64) -> Row {
        Row {
            group,
            name: name.into(),
            unit,
            value,
            p99: None,
            floor: None,
            floor_name: "",
            target: None,
        }
    }

    fn p99(mut self, p99: f64) -> Row {
        self.p99 = Some(p99);
        self
    }
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

    fn json(&self) -> serde_json::Value {
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

/// A raw echo child for lines too large to write before reading: the
/// socket is non-blocking and `poll(2)` interleaves writing and reading,
/// as a reactor does (a blocking `write_all` would deadlock once both
/// socket buffers fill).
struct LargeEcho(RawEcho);

impl LargeEcho {
    fn new() -> Self {
        let echo = RawEcho::new();
        echo.sock.set_nonblocking(true).expect("nonblocking");
        LargeEcho(echo)
    }

    /// Sends `msg` and reads as many bytes back into `back`.
    fn exchange(&mut self, msg: &[u8], back: &mut Vec<u8>) {
        back.resize(msg.len(), 0);
        let sock = &mut self.0.sock;
        let (mut sent, mut got) = (0, 0);
        while got < msg.len() {
            let mut pfd = libc::pollfd {
                fd: sock.as_raw_fd(),
                events: libc::POLLIN | if sent < msg.len() { libc::POLLOUT } else { 0 },
                revents: 0,
            };
            // SAFETY: one valid pollfd, for the length given.
            unsafe { libc::poll(&mut pfd, 1, -1) };
            if sent < msg.len() {
                match sock.write(&msg[sent..]) {
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("echo write: {e}"),
                }
            }
            match sock.read(&mut back[got..]) {
                Ok(0) => panic!("echo child closed"),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("echo read: {e}"),
            }
        }
    }
}

/// What a codec that cost nothing would still do for one line: marshal
/// needs base64 and one memcpy of the raw bytes (into the scratch buffer
/// at encode, out of it at decode); JSON one memcpy of the line.
struct ZeroCodec {
    format: Format,
    /// The raw bytes the line carries (JSON: the line without its `\n`).
    raw: Vec<u8>,
    scratch: Vec<u8>,
    line: Vec<u8>,
    decoded: Vec<u8>,
}

impl ZeroCodec {
    fn new(format: Format, line: &[u8]) -> Self {
        let body = &line[..line.len() - 1];
        let raw = match format {
            Format::Marshal => STANDARD.decode_to_vec(body).expect("base64 line"),
            Format::Json => body.to_vec(),
        };
        ZeroCodec {
            format,
            scratch: Vec::with_capacity(raw.len()),
            line: Vec::with_capacity(line.len()),
            decoded: Vec::with_capacity(raw.len()),
            raw,
        }
    }

    /// "Serializes" the raw bytes into the line (with its `\n`).
    fn encode(&mut self) -> &[u8] {
        self.line.clear();
        match self.format {
            Format::Marshal => {
                self.scratch.clear();
                self.scratch.extend_from_slice(&self.raw);
                STANDARD.encode_append(&self.scratch, &mut self.line);
            }
            Format::Json => self.line.extend_from_slice(&self.raw),
        }
        self.line.push(b'\n');
        &self.line
    }

    /// "Deserializes" `line` (with its `\n`) into a copy of its raw bytes.
    fn decode(&mut self, line: &[u8]) {
        let body = &line[..line.len() - 1];
        self.decoded.clear();
        match self.format {
            Format::Marshal => {
                self.scratch.clear();
                STANDARD
                    .decode_append(body, &mut self.scratch)
                    .expect("base64 line");
                self.decoded.extend_from_slice(&self.scratch);
            }
            Format::Json => self.decoded.extend_from_slice(body),
        }
        std::hint::black_box(&self.decoded);
    }
}

/// The floor of a round trip of `line`: the same bytes through a
/// socketpair to a raw echo child and back, plus the four codec steps of a
/// round trip (parent encode, child decode, child encode, parent decode)
/// done by a [`ZeroCodec`]. The child's two steps run in the parent, timed
/// with the rest: a ping-pong is serial, so their cost adds the same. µs
/// per round trip.
fn floor_zero_codec(echo: &mut LargeEcho, format: Format, line: &[u8], rounds: usize) -> Vec<f64> {
    let mut codec = ZeroCodec::new(format, line);
    let mut back = Vec::with_capacity(line.len());
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        let out = codec.encode();
        echo.exchange(out, &mut back);
        codec.decode(&back);
        codec.encode();
        codec.decode(&back);
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    times
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

/// CPU time (µs, user and system) used so far by this thread and by the
/// live processes `pids`, from `/proc/PID/schedstat` (nanoseconds on the
/// CPU; clock ticks would be too coarse for 16 children over 500 ms):
/// taken around a timed loop it gives CPU per message, which other load
/// on the machine disturbs far less than messages per second.
fn cpu_us(pids: &[libc::pid_t]) -> f64 {
    let on_cpu = |path: String| -> f64 {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|st| st.split(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let me = on_cpu("/proc/thread-self/schedstat".into());
    let kids: f64 = pids
        .iter()
        .map(|p| on_cpu(format!("/proc/{p}/schedstat")))
        .sum();
    (me + kids) / 1e3
}

/// Forks a child that answers every request line on `sock` with one
/// `write(2)` of `reply` before it looks at the next line (the shape of
/// miniray's default per-reply writes), reading in 64 KiB chunks.
fn fork_per_reply_echo(sock: UnixStream, others: &[RawFd], reply: &'static [u8]) -> libc::pid_t {
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
                // Count newlines by hand: nothing but raw bytes and syscalls.
                for &b in &buf[..n as usize] {
                    if b == b'\n' {
                        let w = libc::write(fd, reply.as_ptr().cast(), reply.len());
                        if w != reply.len() as isize {
                            libc::_exit(1);
                        }
                    }
                }
            }
        }
        pid
    }
}

/// The floor of per-reply writes: `n` forked children on socketpairs,
/// `inflight` requests in flight each, every child answering each request
/// line with its own `write(2)` before reading on, and the parent (raw mio)
/// reading until `WouldBlock` and writing the new requests of one round
/// together, one `write` per child per round (as a reactor `Batch` does).
/// No framing library, no format: miniray's wire bytes (`1\n` each way).
/// Lines per second, and CPU µs per line (parent and children).
fn floor_per_reply(n: usize, inflight: usize, dur: Duration) -> (f64, f64) {
    use mio::{Events, Interest, Poll, Token};
    const LINE: &[u8] = b"1\n";
    let mut poll = Poll::new().expect("poll");
    let mut socks = Vec::with_capacity(n);
    let mut pids = Vec::with_capacity(n);
    let mut parent_fds: Vec<RawFd> = Vec::with_capacity(n);
    for _ in 0..n {
        let (a, b) = UnixStream::pair().expect("socketpair");
        parent_fds.push(a.as_raw_fd());
        pids.push(fork_per_reply_echo(b, &parent_fds, LINE));
        a.set_nonblocking(true).expect("nonblocking");
        let mut s = mio::net::UnixStream::from_std(a);
        poll.registry()
            .register(&mut s, Token(socks.len()), Interest::READABLE)
            .expect("register");
        socks.push(s);
    }
    let requests = LINE.repeat(inflight);
    for s in &mut socks {
        s.write_all(&requests).expect("prime");
    }
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 256 * 1024];
    // Requests owed to each child this round (as many as replies read).
    let mut owed = vec![0usize; n];
    let mut lines = 0u64;
    let cpu0 = cpu_us(&pids);
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
                        lines += got as u64;
                        owed[i] += got;
                    }
                    Err(_) => break,
                }
            }
        }
        // One write per child per round: the round's new requests.
        for (i, s) in socks.iter_mut().enumerate() {
            if owed[i] > 0 {
                let out = &requests[..owed[i] * LINE.len()];
                owed[i] = 0;
                let mut off = 0;
                while off < out.len() {
                    match s.write(&out[off..]) {
                        Ok(w) => off += w,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::yield_now()
                        }
                        Err(_) => break,
                    }
                }
            }
        }
    }
    let rate = lines as f64 / t.elapsed().as_secs_f64();
    let cpu = (cpu_us(&pids) - cpu0) / lines.max(1) as f64;
    drop(socks);
    for p in pids {
        reap(p);
    }
    (rate, cpu)
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

/// The region handoff's floor: a forked child that does what any receiver
/// of a region must, and nothing else. For each one-byte message it
/// receives a descriptor (`recvmsg`, `MSG_CMSG_CLOEXEC`), checks its seals
/// (`F_GET_SEALS`, refusing one not sealed against shrinking) and size
/// (`fstat`), maps all of it as miniray does (shared read-write, or private
/// read-only once sealed against writes), unmaps it, closes it and answers
/// one byte. The sender: `sendmsg` of one byte with the region's own
/// descriptor, then a blocking one-byte `read`.
struct RawHandoff {
    sock: UnixStream,
    pid: libc::pid_t,
}

impl RawHandoff {
    fn new() -> Self {
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
                    if Self::receive_and_map(bfd, &mut byte).is_none() {
                        libc::_exit(0);
                    }
                    libc::write(bfd, (&byte as *const u8).cast(), 1);
                }
            }
            pid
        };
        drop(b);
        RawHandoff { sock: a, pid }
    }

    /// The child's side of one handoff; `None` at EOF or on any failure.
    ///
    /// # Safety
    ///
    /// `sock` is an open Unix stream socket; only async-signal-safe calls.
    unsafe fn receive_and_map(sock: RawFd, byte: &mut u8) -> Option<()> {
        let mut iov = libc::iovec {
            iov_base: (byte as *mut u8).cast(),
            iov_len: 1,
        };
        let mut control = [0u64; 8];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        if libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) <= 0 {
            return None;
        }
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() {
            return None;
        }
        let fd = *(libc::CMSG_DATA(cmsg) as *const RawFd);
        let seals = libc::fcntl(fd, libc::F_GET_SEALS);
        let mut st: libc::stat = std::mem::zeroed();
        if seals < 0 || seals & libc::F_SEAL_SHRINK == 0 || libc::fstat(fd, &mut st) != 0 {
            libc::close(fd);
            return None;
        }
        let len = st.st_size as usize;
        let (prot, flags) = if seals & libc::F_SEAL_WRITE != 0 {
            (libc::PROT_READ, libc::MAP_PRIVATE)
        } else {
            (libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED)
        };
        let map = libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, 0);
        if map == libc::MAP_FAILED {
            libc::close(fd);
            return None;
        }
        libc::munmap(map, len);
        libc::close(fd);
        Some(())
    }

    /// `rounds` handoffs of `region`'s descriptor: µs each.
    fn rounds(&mut self, region: &SharedMemory, rounds: usize) -> Vec<f64> {
        let afd = self.sock.as_raw_fd();
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
                *(libc::CMSG_DATA(cmsg) as *mut RawFd) = region.as_raw_fd();
                assert_eq!(libc::sendmsg(afd, &msg, 0), 1, "sendmsg");
            }
            let mut back = [0u8; 1];
            self.sock
                .read_exact(&mut back)
                .expect("floor child answers");
            times.push(t.elapsed().as_secs_f64() * 1e6);
        }
        times
    }
}

impl Drop for RawHandoff {
    fn drop(&mut self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        reap(self.pid);
    }
}

/// `rounds` region handoffs through miniray: `send_regions` of the region
/// with its id, the worker's `recv_regions` (seals and size checked, mapped,
/// unmapped and closed when dropped) and its one-line answer: µs each.
fn region_handoffs(r: &mut Reactor, w: Worker, region: &SharedMemory, rounds: usize) -> Vec<f64> {
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        r.send_regions(w, &region.id(), &[region]).expect("send");
        let n = r
            .recv::<usize>(w, Some(Duration::from_secs(60)))
            .expect("reply");
        assert_eq!(n, 1, "the worker got the region");
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    times
}

/// The `shm` group: region handoffs of each size, writable and sealed
/// read-only, beside the floor doing the same work ([`RawHandoff`]) in the
/// same run. Both run on CPU 0 in alternating blocks, as the round trips
/// do, so they see the same machine.
fn bench_shm(b: &mut Bench) {
    let all_cpus = all_cpus();
    pin(&[0]);
    let rounds = b.n(2000, 100);
    let block = 100.min(rounds);
    // The floor's child forks first, so it holds no worker's socket open.
    let mut floor = RawHandoff::new();
    let mut r = Reactor::new().expect("reactor");
    let w = r
        .spawn_channel(&WorkerOptions::new(), |ch| {
            while let Some((_, regions)) = ch.recv_regions::<u64>()? {
                ch.send(&regions.len())?;
            }
            Ok(())
        })
        .expect("spawn");
    let sizes: &[(usize, &str)] = if b.quick {
        &[(4096, "4 KiB"), (1 << 20, "1 MiB")]
    } else {
        &[
            (4096, "4 KiB"),
            (1 << 20, "1 MiB"),
            (64 << 20, "64 MiB"),
            (1 << 30, "1 GiB"),
        ]
    };
    let cases = sizes
        .iter()
        .map(|&(size, label)| (size, label.to_string(), false))
        .chain([(1 << 20, "1 MiB, sealed read-only".to_string(), true)]);
    for (size, label, sealed) in cases {
        let mut region = SharedMemory::create("bench", size).expect("region");
        if sealed {
            region.seal_read_only().expect("seal");
        }
        // Warm both paths up once.
        floor.rounds(&region, 10);
        region_handoffs(&mut r, w, &region, 10);
        let (mut raw, mut ours) = (Vec::new(), Vec::new());
        for _ in 0..rounds / block {
            raw.extend(floor.rounds(&region, block));
            ours.extend(region_handoffs(&mut r, w, &region, block));
        }
        let floor_median = median(&mut raw);
        b.push(
            Row::new(
                "floor",
                format!("raw memfd + SCM_RIGHTS + map {label}"),
                "us",
                floor_median,
            )
            .p99(p99(&mut raw)),
        );
        b.push(Row {
            group: "shm",
            name: format!("region handoff {label}"),
            unit: "us",
            value: median(&mut ours),
            p99: Some(p99(&mut ours)),
            floor: Some(floor_median),
            floor_name: "raw memfd + SCM_RIGHTS + map",
            target: Some(Target::RatioAtMost(1.3)),
        });
    }
    drop(r);
    drop(floor);
    pin(&all_cpus);
}

/// Restricts this process (and children forked after) to `cpus`.
/// The CPUs this process may run on, as it started (read once: a pinned
/// process's `available_parallelism` is its pin).
fn all_cpus() -> Vec<usize> {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    (0..*N.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))).collect()
}

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

/// `{"test": 123}`, the small message.
fn small() -> Value {
    Value::Dict(Dict::from_iter([(
        Value::Str("test".into()),
        Value::Int(123),
    )]))
}

/// A record of mixed str, int, float and list fields: the "1 KB dict"
/// (about 1 KB on the wire in either format) when typed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Record {
    name: String,
    host: String,
    user: String,
    path: String,
    status: String,
    id: i64,
    pid: i64,
    port: i64,
    size: i64,
    epoch: i64,
    score: f64,
    load: f64,
    latitude: f64,
    longitude: f64,
    tags: Vec<String>,
    samples: Vec<f64>,
    counts: Vec<i64>,
}

fn record() -> Record {
    Record {
        name: "miniray-benchmark-record".into(),
        host: "worker-17.cluster.example.org".into(),
        user: "alice".into(),
        path: "/var/lib/miniray/jobs/2026/11/27/job-000123.json".into(),
        status: "running".into(),
        id: 1_234_567_890,
        pid: 48_213,
        port: 50_051,
        size: 1_048_576,
        epoch: 1_764_201_600,
        score: 0.987_654_321,
        load: 1.25,
        latitude: 48.856_613,
        longitude: 2.352_222,
        tags: (0..12).map(|i| format!("tag-{i:02}-batch")).collect(),
        samples: random_floats(16),
        counts: (0..20).map(|i| i * 7919 - 31).collect(),
    }
}

/// The same record as a [`Value`]: a dict with str keys, in field order.
fn record_value(r: &Record) -> Value {
    let s = |x: &str| Value::Str(x.into());
    let list = |it: Vec<Value>| Value::List(it);
    Value::Dict(Dict::from_iter([
        (s("name"), s(&r.name)),
        (s("host"), s(&r.host)),
        (s("user"), s(&r.user)),
        (s("path"), s(&r.path)),
        (s("status"), s(&r.status)),
        (s("id"), Value::Int(r.id)),
        (s("pid"), Value::Int(r.pid)),
        (s("port"), Value::Int(r.port)),
        (s("size"), Value::Int(r.size)),
        (s("epoch"), Value::Int(r.epoch)),
        (s("score"), Value::Float(r.score)),
        (s("load"), Value::Float(r.load)),
        (s("latitude"), Value::Float(r.latitude)),
        (s("longitude"), Value::Float(r.longitude)),
        (s("tags"), list(r.tags.iter().map(|t| s(t)).collect())),
        (
            s("samples"),
            list(r.samples.iter().map(|&x| Value::Float(x)).collect()),
        ),
        (
            s("counts"),
            list(r.counts.iter().map(|&x| Value::Int(x)).collect()),
        ),
    ]))
}

/// `n` floats in [0, 1) with 53 random bits each, as Python's
/// `random.random()` gives (so their text is as long as a Python peer's),
/// from a fixed seed (splitmix64).
fn random_floats(n: usize) -> Vec<f64> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 53) as f64
        })
        .collect()
}

fn floats_value(v: &[f64]) -> Value {
    Value::List(v.iter().map(|&x| Value::Float(x)).collect())
}

/// The marshal line CPython 3.11's `marshal.dumps(list_of_floats)` gives
/// (a referenced list, `g` + 8 bytes per unshared float), built directly so
/// a 100 MB line costs no encoder's memory or time.
fn marshal_float_line(v: &[f64]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(5 + 9 * v.len());
    raw.push(b'[' | 0x80);
    raw.extend_from_slice(&u32::try_from(v.len()).expect("list length").to_le_bytes());
    for x in v {
        raw.push(b'g');
        raw.extend_from_slice(&x.to_le_bytes());
    }
    let mut line = Vec::with_capacity(raw.len().div_ceil(3) * 4 + 1);
    STANDARD.encode_append(&raw, &mut line);
    line.push(b'\n');
    line
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

/// `rounds` round trips of `msg` to `w`, received as a `T`: µs each.
fn round_trips<T: Serialize + DeserializeOwned>(
    r: &mut Reactor,
    w: Worker,
    msg: &T,
    rounds: usize,
) -> Vec<f64> {
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        r.send(w, msg).expect("send");
        let back: T = r.recv(w, Some(Duration::from_secs(60))).expect("recv");
        times.push(t.elapsed().as_secs_f64() * 1e6);
        std::hint::black_box(back);
    }
    times
}

/// Messages per second with `inflight` requests per worker, each reply
/// answered with a new request. `batch_sends`: the new requests of one
/// wait are sent in a [`miniray::Batch`] (one write per worker per wait);
/// otherwise each send writes through. Also CPU µs per message (the
/// parent and the workers, [`cpu_us`]).
fn pipelined(
    r: &mut Reactor,
    workers: &[Worker],
    inflight: usize,
    dur: Duration,
    batch_sends: bool,
) -> (f64, f64) {
    let msg = Value::Int(1);
    for &w in workers {
        for _ in 0..inflight {
            r.send(w, &msg).expect("send");
        }
    }
    let mut ready = Vec::new();
    let mut done = 0u64;
    let pids: Vec<libc::pid_t> = workers.iter().filter_map(|&w| r.pid(w)).collect();
    let cpu0 = cpu_us(&pids);
    let t = Instant::now();
    while t.elapsed() < dur {
        r.wait_any_into(&mut ready, Some(Duration::from_secs(10)))
            .expect("wait_any");
        let answer = |r: &mut Reactor, done: &mut u64| {
            for &w in &ready {
                while let Some(v) = r.try_recv::<Value>(w).expect("reply") {
                    std::hint::black_box(v);
                    *done += 1;
                    r.send(w, &msg).expect("send");
                }
            }
        };
        if batch_sends {
            answer(&mut r.batch(), &mut done);
        } else {
            answer(r, &mut done);
        }
    }
    let rate = done as f64 / t.elapsed().as_secs_f64();
    let cpu = (cpu_us(&pids) - cpu0) / done.max(1) as f64;
    // Drain what is still in flight.
    let mut left = workers.len() * inflight;
    while left > 0 {
        r.wait_any_into(&mut ready, Some(Duration::from_secs(10)))
            .expect("wait_any");
        if ready.is_empty() {
            break;
        }
        for &w in &ready {
            while r.try_recv::<Value>(w).expect("reply").is_some() {
                left -= 1;
            }
        }
    }
    (rate, cpu)
}

/// Encode and decode MB/s (line bytes) of `v` as a `T`, each beside what a
/// codec costing nothing would reach on the same line ([`ZeroCodec`]).
fn codec_rows<T: Serialize + DeserializeOwned>(
    b: &mut Bench,
    format: Format,
    label: &str,
    v: &T,
    reps: usize,
) {
    let line = format.encode(v).expect("encode");
    let body = &line[..line.len() - 1];
    let mut zero = ZeroCodec::new(format, &line);
    let rate = |t: Instant| (line.len() * reps) as f64 / t.elapsed().as_secs_f64() / 1e6;
    let [mut enc, mut dec, mut zero_enc, mut zero_dec] = [(); 4].map(|()| Vec::new());
    let mut out = Vec::new();
    let mut scratch = Vec::new();
    for _ in 0..b.n(5, 2) {
        let t = Instant::now();
        for _ in 0..reps {
            out.clear();
            format
                .encode_line(v, &mut out, &mut scratch)
                .expect("encode");
        }
        enc.push(rate(t));
        let t = Instant::now();
        for _ in 0..reps {
            std::hint::black_box(format.decode::<T>(body).expect("decode"));
        }
        dec.push(rate(t));
        let t = Instant::now();
        for _ in 0..reps {
            std::hint::black_box(zero.encode());
        }
        zero_enc.push(rate(t));
        let t = Instant::now();
        for _ in 0..reps {
            zero.decode(&line);
        }
        zero_dec.push(rate(t));
    }
    let floor_name = match format {
        Format::Json => "memcpy",
        Format::Marshal => "base64 + memcpy",
    };
    for (what, ours, floor) in [
        ("encode", &mut enc, &mut zero_enc),
        ("decode", &mut dec, &mut zero_dec),
    ] {
        b.push(Row {
            group: "codec",
            name: format!("{what} {format} {label}"),
            unit: "MB/s",
            value: median(ours),
            p99: None,
            floor: Some(median(floor)),
            floor_name,
            target: None,
        });
    }
}

/// Peak extra heap bytes of `recv::<T>` of `line` (with its `\n`), which
/// an exec'd `cat` sends: the reactor first queues the whole line, then
/// [`peak_extra`] measures just the `try_recv` that decodes it.
fn recv_peak<T: DeserializeOwned>(r: &mut Reactor, format: Format, line: &[u8]) -> usize {
    let path = std::env::temp_dir().join(format!(
        "miniray-bench-{}-{format}.line",
        std::process::id()
    ));
    std::fs::write(&path, line).expect("write line file");
    let big = line.len() * 2 + (1 << 20);
    let opts = WorkerOptions::new()
        .format(format)
        .max_line(big)
        .max_queued(big);
    let w = r
        .spawn_exec(&opts, &Exec::new("cat", [&path]).expect("exec"))
        .expect("spawn cat");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut ready = Vec::new();
    while !ready.contains(&w) {
        assert!(Instant::now() < deadline, "cat sent no line in 120 s");
        r.wait_any_into(&mut ready, Some(Duration::from_secs(10)))
            .expect("wait_any");
    }
    let (msg, peak) = peak_extra(|| r.try_recv::<T>(w).expect("recv"));
    assert!(msg.is_some(), "cat's line was not queued");
    drop(msg);
    let _ = std::fs::remove_file(&path);
    r.close(w).expect("close");
    peak
}

fn kib_field(path: &str, field: &str) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

// ------------------------------------------------------ small round trip

/// A raw echo child read through epoll, as a reactor reads: the parent's
/// end non-blocking and edge-triggered, each round trip one `send`, one
/// `epoll_wait` without a timeout and one `recv`. A second floor beside
/// the blocking ping-pong, for what a reactor costs before any framing,
/// codec or bookkeeping (on the CI VM it is the faster of the two).
struct EpollEcho {
    echo: RawEcho,
    epoll: OwnedFd,
}

impl EpollEcho {
    fn new() -> Self {
        let echo = RawEcho::new();
        echo.sock.set_nonblocking(true).expect("nonblocking");
        // SAFETY: epoll_create1 has no preconditions.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        assert!(
            raw >= 0,
            "epoll_create1: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `raw` is a new, open descriptor owned by nobody else.
        let epoll = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET | libc::EPOLLRDHUP) as u32,
            u64: 1,
        };
        // SAFETY: both descriptors are open; `ev` is a valid event.
        let added = unsafe {
            libc::epoll_ctl(
                epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                echo.sock.as_raw_fd(),
                &mut ev,
            )
        };
        assert_eq!(added, 0, "epoll_ctl");
        EpollEcho { echo, epoll }
    }

    /// `rounds` round trips of `len` bytes: µs each.
    fn rounds(&mut self, len: usize, rounds: usize) -> Vec<f64> {
        let msg = vec![b'x'; len];
        let mut back = vec![0u8; 64 * 1024];
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 8];
        let fd = self.echo.sock.as_raw_fd();
        let mut times = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let t = Instant::now();
            // SAFETY: buffers outlive the calls, lengths are theirs.
            unsafe {
                libc::send(fd, msg.as_ptr().cast(), len, libc::MSG_NOSIGNAL);
                let mut got = 0;
                while got < len {
                    libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), 8, -1);
                    let n = libc::recv(fd, back.as_mut_ptr().cast(), back.len(), 0);
                    if n > 0 {
                        got += n as usize;
                    }
                }
            }
            times.push(t.elapsed().as_secs_f64() * 1e6);
        }
        times
    }
}

/// The same small round trip through Python, as the original library does
/// it: a forked child on a socketpair, one line per message,
/// `json.dumps`/`json.loads` on both sides. Prints the median µs.
const PY_SMALL: &str = r#"
import json, os, socket, sys, time
rounds = int(sys.argv[1])
msg = {"test": 123}
a, b = socket.socketpair()
pid = os.fork()
if pid == 0:
    a.close()
    r, w = b.makefile("rb"), b.makefile("wb")
    for line in r:
        w.write(json.dumps(json.loads(line)).encode() + b"\n")
        w.flush()
    os._exit(0)
b.close()
r, w = a.makefile("rb"), a.makefile("wb")
times = []
for _ in range(rounds):
    t = time.perf_counter()
    w.write(json.dumps(msg).encode() + b"\n")
    w.flush()
    back = json.loads(r.readline())
    times.append(time.perf_counter() - t)
assert back == msg
w.close()
a.shutdown(socket.SHUT_WR)
os.waitpid(pid, 0)
times.sort()
print(times[len(times) // 2] * 1e6)
"#;

/// Median µs of Python's small round trip ([`PY_SMALL`]), run on the CPUs
/// this process is pinned to.
fn python_small(rounds: usize) -> std::result::Result<f64, String> {
    let out = std::process::Command::new("python3")
        .args(["-c", PY_SMALL, &rounds.to_string()])
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .map_err(|_| format!("python3 printed {text:?}"))
}

/// The small round trip `{"test": 123}` (a `Value`, each reply received
/// with a 60 s deadline, as a caller would), local, json and marshal,
/// against its floors run in alternating blocks in the same run (the
/// blocking socketpair ping-pong, the target's floor, and the epoll one),
/// and beside Python's ([`PY_SMALL`]). `raw` must have been forked before
/// any worker.
fn small_round_trip_rows(b: &mut Bench, r: &mut Reactor, mut raw: RawEcho, small: &Value) {
    let small_line = Format::Json.encode(small).expect("encode").len();
    let mut epoll = EpollEcho::new();
    let locals = [
        r.spawn(|v: Value| v).expect("spawn"),
        r.spawn_with(&WorkerOptions::new().format(Format::Marshal), |v: Value| v)
            .expect("spawn"),
    ];
    let (blocks, per) = (b.n(10, 2), b.n(500, 100));
    let mut floor = Vec::new();
    let mut floor_epoll = Vec::new();
    let mut ours: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..blocks {
        floor.extend(raw.rounds(small_line, per));
        floor_epoll.extend(epoll.rounds(small_line, per));
        for (i, &w) in locals.iter().enumerate() {
            ours[i].extend(round_trips(r, w, small, per));
        }
    }
    drop(raw);
    drop(epoll);
    let floor_small = median(&mut floor);
    b.push(
        Row::new(
            "floor",
            format!("socketpair ping-pong {small_line} B"),
            "us",
            floor_small,
        )
        .p99(p99(&mut floor)),
    );
    b.push(
        Row::new(
            "floor",
            format!("epoll ping-pong {small_line} B"),
            "us",
            median(&mut floor_epoll),
        )
        .p99(p99(&mut floor_epoll)),
    );
    let mut medians = [f64::NAN; 2];
    for (i, format) in [Format::Json, Format::Marshal].into_iter().enumerate() {
        medians[i] = median(&mut ours[i]);
        b.push(Row {
            group: "round trip",
            name: format!("local {format} {{\"test\":123}} vs floor, interleaved"),
            unit: "us",
            value: medians[i],
            p99: Some(p99(&mut ours[i])),
            floor: Some(floor_small),
            floor_name: "socketpair ping-pong",
            target: Some(Target::RatioAtMost(1.3)),
        });
        r.close(locals[i]).expect("close");
    }
    match python_small(b.n(5000, 500)) {
        Err(e) => println!("python json {{\"test\":123}}: not run: {e}"),
        Ok(python) => {
            b.push(Row::new(
                "round trip",
                "python json {\"test\":123} (fork + socketpair)",
                "us",
                python,
            ));
            b.push(Row::new(
                "round trip",
                "json {\"test\":123}: x faster than python",
                "x",
                python / medians[0],
            ));
        }
    }
}

// ---------------------------------------------------------------- formats

/// The same 100,000-float round trip through Python, as the original
/// library does it: a forked child on a socketpair, one line per message,
/// `json.dumps`/`json.loads` or `base64.b64encode(marshal.dumps(v))` /
/// `marshal.loads(base64.b64decode(line))` on both sides. Prints the
/// median µs per round trip.
const PY_FLOATS: &str = r#"
import base64, json, marshal, os, random, socket, sys, time
fmt, n, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
random.seed(1)
v = [random.random() for _ in range(n)]
if fmt == "json":
    enc = lambda x: json.dumps(x).encode() + b"\n"
    dec = json.loads
else:
    enc = lambda x: base64.b64encode(marshal.dumps(x)) + b"\n"
    dec = lambda line: marshal.loads(base64.b64decode(line))
a, b = socket.socketpair()
pid = os.fork()
if pid == 0:
    a.close()
    r, w = b.makefile("rb"), b.makefile("wb")
    for line in r:
        w.write(enc(dec(line)))
        w.flush()
    os._exit(0)
b.close()
r, w = a.makefile("rb"), a.makefile("wb")
times = []
for _ in range(rounds):
    t = time.perf_counter()
    w.write(enc(v))
    w.flush()
    back = dec(r.readline())
    times.append(time.perf_counter() - t)
    assert len(back) == n
w.close()
a.shutdown(socket.SHUT_WR)
os.waitpid(pid, 0)
times.sort()
print(times[len(times) // 2] * 1e6)
"#;

/// Median µs of Python's 100k-float round trip in `format` ([`PY_FLOATS`]).
fn python_floats(format: Format, rounds: usize) -> std::result::Result<f64, String> {
    let out = std::process::Command::new("python3")
        .args(["-c", PY_FLOATS, &format.to_string(), "100000"])
        .arg(rounds.to_string())
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .map_err(|_| format!("python3 printed {text:?}"))
}

/// The 100k-float round trips against their zero-codec floors (the
/// targets) and beside Python's ([`PY_FLOATS`]), from the medians the
/// round-trip group measured: `ours[format][kind]` (format: json, marshal;
/// kind: `Vec<f64>`, `Value`) and `floors[format]`, in µs.
fn float_round_trip_rows(b: &mut Bench, ours: [[f64; 2]; 2], floors: [f64; 2]) {
    // The targets: 100k floats as `Value` in marshal within 6x its floor,
    // as `Vec<f64>` in JSON within 15x.
    for (fi, ki, target) in [(1, 1, 6.0), (0, 0, 15.0)] {
        let (format, kind) = (
            [Format::Json, Format::Marshal][fi],
            ["Vec<f64>", "Value"][ki],
        );
        b.push(Row {
            group: "round trip",
            name: format!("local {format} 100k floats {kind} vs floor"),
            unit: "us",
            value: ours[fi][ki],
            p99: None,
            floor: Some(floors[fi]),
            floor_name: "zero codec",
            target: Some(Target::RatioAtMost(target)),
        });
    }
    for (fi, format) in [Format::Json, Format::Marshal].into_iter().enumerate() {
        let python = match python_floats(format, b.n(15, 3)) {
            Ok(us) => us,
            Err(e) => {
                println!("python {format} 100k floats: not run: {e}");
                continue;
            }
        };
        b.push(Row::new(
            "round trip",
            format!("python {format} 100k floats (fork + socketpair)"),
            "us",
            python,
        ));
        for (ki, kind) in ["Vec<f64>", "Value"].into_iter().enumerate() {
            b.push(Row::new(
                "round trip",
                format!("{format} 100k floats {kind}: x faster than python"),
                "x",
                python / ours[fi][ki],
            ));
        }
    }
}

/// The marshal line of dict keys Python cannot hash: `n` keys
/// `({"k": i},)`, each with the value `i` (363 KB of base64 for 16,000).
fn unhashable_keys_line(n: usize) -> Vec<u8> {
    let mut raw = vec![b'{'];
    for i in 0..n as i32 {
        raw.extend_from_slice(&[b')', 1, b'{', b'z', 1, b'k', b'i']);
        raw.extend_from_slice(&i.to_le_bytes());
        raw.extend_from_slice(b"0i");
        raw.extend_from_slice(&i.to_le_bytes());
    }
    raw.push(b'0');
    STANDARD.encode_to_string(&raw).into_bytes()
}

/// How long the refusal of the unhashable-keys line takes (it must be
/// an error, within 10 ms).
fn unhashable_row(b: &mut Bench) {
    let line = unhashable_keys_line(16_000);
    let mut times = Vec::new();
    for _ in 0..b.n(50, 5) {
        let t = Instant::now();
        let r = Format::Marshal.decode::<Value>(&line);
        times.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(
            matches!(&r, Err(e) if matches!(e.kind, miniray::DecodeErrorKind::Unhashable { .. })),
            "the unhashable-keys line must be refused: {r:?}"
        );
    }
    b.push(Row {
        group: "codec",
        name: format!("refuse 16k unhashable keys, {} KB", line.len() / 1000),
        unit: "ms",
        value: median(&mut times),
        p99: Some(p99(&mut times)),
        floor: None,
        floor_name: "",
        target: Some(Target::AtMost(10.0)),
    });
}

// ------------------------------------------------------------------ pool

/// Python's `multiprocessing.Pool(8)` on `f(x) = 2x + 1`: tasks/s for
/// `imap(f, range(n_imap), chunksize=1)` and for `map(f, range(n_map))`
/// with its default chunking, or why it could not run.
const PY_POOL: &str = r#"
import multiprocessing as mp, sys, time
def f(x):
    return 2 * x + 1
if __name__ == "__main__":
    n_imap, n_map = int(sys.argv[1]), int(sys.argv[2])
    with mp.get_context("fork").Pool(8) as p:
        p.map(f, range(10000))
        t = time.perf_counter()
        s = 0
        for r in p.imap(f, range(n_imap), chunksize=1):
            s += r
        imap = n_imap / (time.perf_counter() - t)
        t = time.perf_counter()
        out = p.map(f, range(n_map))
        mapped = n_map / (time.perf_counter() - t)
    assert len(out) == n_map and out[-1] == 2 * (n_map - 1) + 1
    print(imap, mapped)
"#;

fn python_pool(n_imap: usize, n_map: usize) -> std::result::Result<(f64, f64), String> {
    let out = std::process::Command::new("python3")
        .args(["-c", PY_POOL, &n_imap.to_string(), &n_map.to_string()])
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace().map(str::parse::<f64>);
    match (it.next(), it.next()) {
        (Some(Ok(a)), Some(Ok(b))) => Ok((a, b)),
        _ => Err(format!("python3 printed {text:?}")),
    }
}

fn pool_work(n: u64) -> u64 {
    2 * n + 1
}

/// Tasks/s of `Pool::map` over `n` trivial tasks on 8 fresh workers, and
/// the parent's CPU per task in ns (its thread's, from schedstat: the
/// workers' is theirs).
fn pool_rate(opts: &PoolOptions, n: u64) -> (f64, f64) {
    let mut pool = Pool::new(opts, pool_work).expect("pool");
    let cpu0 = cpu_us(&[]);
    let t = Instant::now();
    let mut wrong = 0u64;
    for (i, r) in (0..n).zip(pool.map(0..n)) {
        wrong += u64::from(r.ok() != Some(pool_work(i)));
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    let cpu_ns = (cpu_us(&[]) - cpu0) * 1e3 / n as f64;
    assert_eq!(wrong, 0, "pool map gave wrong results");
    (rate, cpu_ns)
}

/// Forks `workers` children on socketpairs, each running `serve` over its
/// end (a blocking std stream) until EOF; the parent's ends, non-blocking,
/// registered in a new mio poll.
fn fork_servers(
    workers: usize,
    serve: fn(&mut std::io::BufReader<std::fs::File>, &mut std::fs::File),
) -> (mio::Poll, Vec<mio::net::UnixStream>, Vec<libc::pid_t>) {
    let poll = mio::Poll::new().expect("poll");
    let (mut socks, mut pids) = (Vec::new(), Vec::new());
    let mut parent_fds: Vec<RawFd> = Vec::new();
    for i in 0..workers {
        let (a, b) = UnixStream::pair().expect("socketpair");
        parent_fds.push(a.as_raw_fd());
        // SAFETY: fork in this single-threaded bench; the child closes the
        // parent's ends, serves its socket and leaves with `_exit`, never
        // returning into the parent's frames.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            for &fd in &parent_fds {
                // SAFETY: closing inherited descriptors the child does not use.
                unsafe { libc::close(fd) };
            }
            let out = std::fs::File::from(OwnedFd::from(b));
            let mut w = out.try_clone().expect("dup");
            serve(&mut std::io::BufReader::new(out), &mut w);
            // SAFETY: ends the child without running the parent's destructors.
            unsafe { libc::_exit(0) };
        }
        drop(b);
        a.set_nonblocking(true).expect("nonblocking");
        let mut s = mio::net::UnixStream::from_std(a);
        poll.registry()
            .register(&mut s, mio::Token(i), mio::Interest::READABLE)
            .expect("register");
        socks.push(s);
        pids.push(pid);
    }
    (poll, socks, pids)
}

/// A floor child: each line a JSON list of u64, answered with `2x + 1` of
/// each as a JSON list (miniray's codec, as the pool's workers).
fn serve_chunks(r: &mut std::io::BufReader<std::fs::File>, w: &mut std::fs::File) {
    use std::io::BufRead;
    let (mut line, mut out) = (Vec::new(), Vec::new());
    while matches!(r.read_until(b'\n', &mut line), Ok(n) if n > 0) {
        let items: Vec<u64> = miniray::json::from_slice(&line[..line.len() - 1]).expect("chunk");
        let replies: Vec<u64> = items.into_iter().map(pool_work).collect();
        out.clear();
        miniray::json::to_writer(&replies, &mut out).expect("encode");
        out.push(b'\n');
        if w.write_all(&out).is_err() {
            return;
        }
        line.clear();
    }
}

/// A floor child: each line an int `n`, answered `2n + 1`.
fn serve_ints(r: &mut std::io::BufReader<std::fs::File>, w: &mut std::fs::File) {
    use std::io::BufRead;
    let mut line = String::new();
    while matches!(r.read_line(&mut line), Ok(n) if n > 0) {
        let n: u64 = line.trim_end().parse().expect("an int");
        if w.write_all(format!("{}\n", pool_work(n)).as_bytes())
            .is_err()
        {
            return;
        }
        line.clear();
    }
}

/// `rounds` round trips to a thread on the calling thread's CPUs, as a
/// `PoolHandle` makes them with no pool behind: a byte written to a pipe
/// the other thread waits for in `epoll_wait` (its pool's thread waits for
/// commands and workers at once), the answer sent back on a `oneshot`
/// channel the caller blocks on. Each round trip's time in µs.
fn thread_hops(rounds: usize) -> Vec<f64> {
    use mio::{Events, Interest, Poll, Token};
    use std::io::{Read, Write};
    let (mut tx, mut rx) = mio::unix::pipe::new().expect("pipe");
    let (asks, asked) = std::sync::mpsc::channel::<oneshot::Sender<u64>>();
    let echo = std::thread::spawn(move || {
        let mut poll = Poll::new().expect("poll");
        poll.registry()
            .register(&mut rx, Token(0), Interest::READABLE)
            .expect("register");
        let mut events = Events::with_capacity(4);
        let mut byte = [0u8; 64];
        let mut n = 0u64;
        loop {
            poll.poll(&mut events, None).expect("epoll_wait");
            // One read drains the pipe (a short read), as the handle's does.
            match rx.read(&mut byte) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => panic!("hop read: {e}"),
            }
            loop {
                match asked.try_recv() {
                    Ok(answer) => {
                        n += 1;
                        let _ = answer.send(n);
                    }
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    // The caller is done (its last ring says so).
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
                }
            }
        }
    });
    let mut times = Vec::with_capacity(rounds);
    for i in 1..=rounds as u64 {
        let t = Instant::now();
        let (answer, answered) = oneshot::channel();
        asks.send(answer).expect("ask");
        tx.write_all(&[1]).expect("ring");
        assert_eq!(answered.recv().expect("answer"), i);
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    // The end: no more asks, and one last ring to see it by (a hang-up
    // alone may come with the last byte's edge and go unseen).
    drop(asks);
    tx.write_all(&[1]).expect("ring");
    echo.join().expect("echo thread");
    times
}

/// The pool's floors: `workers` forked children over socketpairs with no
/// pool, the parent (raw mio) keeping `in_flight` requests in flight per
/// child and checking every reply. Chunked (`chunk` > 1): the same JSON
/// chunks of u64 a chunked map sends, encoded and decoded with miniray's
/// codec on both sides. Unchunked: one int per line each way, each reply
/// one `write(2)`. Tasks/s.
fn floor_pool(workers: usize, n: u64, chunk: usize, in_flight: usize) -> f64 {
    let (mut poll, mut socks, pids) = if chunk > 1 {
        fork_servers(workers, serve_chunks)
    } else {
        fork_servers(workers, serve_ints)
    };
    let mut events = mio::Events::with_capacity(64);
    let mut next = 0u64;
    let mut done = 0u64;
    let mut sent: Vec<std::collections::VecDeque<u64>> = vec![Default::default(); workers];
    let mut tails: Vec<Vec<u8>> = vec![Vec::new(); workers];
    let mut buf = vec![0u8; 256 * 1024];
    let mut out = Vec::new();
    let t = Instant::now();
    let send = |s: &mut mio::net::UnixStream, first: u64, out: &mut Vec<u8>| -> u64 {
        let k = (chunk as u64).min(n - first);
        out.clear();
        if chunk > 1 {
            let items: Vec<u64> = (first..first + k).collect();
            miniray::json::to_writer(&items, out).expect("encode");
        } else {
            out.extend_from_slice(first.to_string().as_bytes());
        }
        out.push(b'\n');
        let mut off = 0;
        while off < out.len() {
            match s.write(&out[off..]) {
                Ok(w) => off += w,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("floor write: {e}"),
            }
        }
        k
    };
    for _ in 0..in_flight {
        for (i, s) in socks.iter_mut().enumerate() {
            if next < n {
                sent[i].push_back(next);
                next += send(s, next, &mut out);
            }
        }
    }
    while done < n {
        poll.poll(&mut events, Some(Duration::from_secs(10)))
            .expect("poll");
        for ev in events.iter() {
            let i = ev.token().0;
            loop {
                match socks[i].read(&mut buf) {
                    Ok(0) => panic!("floor child {i} closed"),
                    Ok(k) => tails[i].extend_from_slice(&buf[..k]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("floor read: {e}"),
                }
            }
            while let Some(nl) = memchr::memchr(b'\n', &tails[i]) {
                let line: Vec<u8> = tails[i].drain(..=nl).collect();
                let first = sent[i].pop_front().expect("a request in flight");
                let got = if chunk > 1 {
                    let reps: Vec<u64> = miniray::json::from_slice(&line[..nl]).expect("reply");
                    for (k, r) in reps.iter().enumerate() {
                        assert_eq!(*r, pool_work(first + k as u64));
                    }
                    reps.len() as u64
                } else {
                    let r: u64 = std::str::from_utf8(&line[..nl])
                        .expect("utf8")
                        .parse()
                        .expect("int");
                    assert_eq!(r, pool_work(first));
                    1
                };
                done += got;
                if next < n {
                    sent[i].push_back(next);
                    next += send(&mut socks[i], next, &mut out);
                }
            }
        }
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    drop(socks);
    for p in pids {
        reap(p);
    }
    rate
}

/// What authentication and encryption cost a TCP round trip: the same
/// echo server (with a secret, serving the tagged and the encrypted mode)
/// against plain TCP, in alternating blocks, over loopback. Rows: the
/// small message and 100,000 floats (marshal, `Vec<f64>`), each mode's
/// median with the plain one as its floor.
fn bench_auth(b: &mut Bench) {
    use miniray::Secret;
    let secret = Secret::new(b"the bench's shared secret".to_vec()).expect("secret");
    let mut r = Reactor::new().expect("reactor");
    let format = Format::Marshal;
    let listen = |r: &mut Reactor, opts: ServerOptions| {
        let s = r
            .listen("127.0.0.1:0", &opts.format(format), |v: Vec<f64>| v)
            .expect("listen");
        (s, r.server_addr(s).expect("addr"))
    };
    let (plain_server, plain_addr) = listen(&mut r, ServerOptions::new());
    let (auth_server, auth_addr) = listen(&mut r, ServerOptions::new().secret(secret.clone()));
    let connect = |r: &mut Reactor, addr, opts: ConnectOptions| {
        r.connect(addr, &opts.format(format), Some(Duration::from_secs(10)))
            .expect("connect")
    };
    let modes = [
        ("plain", connect(&mut r, plain_addr, ConnectOptions::new())),
        (
            "tagged",
            connect(
                &mut r,
                auth_addr,
                ConnectOptions::new().secret(secret.clone()),
            ),
        ),
        (
            "encrypted",
            connect(
                &mut r,
                auth_addr,
                ConnectOptions::new().secret(secret).encrypt(true),
            ),
        ),
    ];
    let small = vec![123.0f64];
    let floats = random_floats(100_000);
    let blocks = b.n(10, 2);
    let (small_rounds, floats_rounds) = (b.n(2000, 100) / blocks, b.n(60, 4).div_ceil(blocks));
    let mut times: [[Vec<f64>; 3]; 2] = Default::default();
    for _ in 0..blocks {
        for (m, (_, w)) in modes.iter().enumerate() {
            times[0][m].extend(round_trips(&mut r, *w, &small, small_rounds));
            times[1][m].extend(round_trips(&mut r, *w, &floats, floats_rounds));
        }
    }
    for (i, what) in ["tcp marshal [123.0]", "tcp marshal 100k floats Vec<f64>"]
        .into_iter()
        .enumerate()
    {
        let plain = median(&mut times[i][0]);
        for (m, (mode, _)) in modes.iter().enumerate() {
            let t = &mut times[i][m];
            b.push(Row {
                group: "auth",
                name: format!("{what} {mode}"),
                unit: "us",
                value: median(t),
                p99: Some(p99(t)),
                floor: (m > 0).then_some(plain),
                floor_name: if m > 0 { "plain TCP, same run" } else { "" },
                target: None,
            });
        }
    }
    for (_, w) in modes {
        r.close(w).expect("close");
    }
    r.stop_server(plain_server).expect("stop");
    r.stop_server(auth_server).expect("stop");
}

/// The pool group: rates beside Python's, the task layer's cost per task,
/// and how soon a killed worker's task runs again.
fn bench_pool(b: &mut Bench) {
    let started = Instant::now();
    let runs = b.n(3, 1);
    let (n_py_imap, n_map, n_unchunked) = (
        b.n(50_000, 5_000),
        b.n(1_000_000, 50_000),
        b.n(100_000, 10_000),
    );
    let eight = PoolOptions::new().workers(8);
    // Python first, as the floors.
    let mut py = (Vec::new(), Vec::new());
    let mut py_error = None;
    if std::process::Command::new("python3")
        .arg("-V")
        .output()
        .is_ok()
    {
        for _ in 0..runs {
            match python_pool(n_py_imap, n_map) {
                Ok((imap, map)) => {
                    py.0.push(imap);
                    py.1.push(map);
                }
                Err(e) => py_error = Some(e),
            }
        }
    } else {
        py_error = Some("python3 not found".into());
    }
    if let Some(e) = &py_error {
        println!("pool: Python's multiprocessing skipped: {}", e.trim());
    }
    let py_imap = (!py.0.is_empty()).then(|| median(&mut py.0));
    let py_map = (!py.1.is_empty()).then(|| median(&mut py.1));
    for (name, value) in [
        (
            format!("python Pool(8).imap chunksize=1, {n_py_imap}"),
            py_imap,
        ),
        (
            format!("python Pool(8).map default chunks, {n_map}"),
            py_map,
        ),
    ] {
        if let Some(value) = value {
            b.push(Row {
                group: "floor",
                name,
                unit: "task/s",
                value,
                p99: None,
                floor: None,
                floor_name: "",
                target: None,
            });
        }
    }
    // The pool's own floors, in the same run: the same work with no pool.
    let mut chunk_floor: Vec<f64> = (0..runs)
        .map(|_| floor_pool(8, n_map as u64, 1024, 1))
        .collect();
    let mut one_floor: Vec<f64> = (0..runs)
        .map(|_| floor_pool(8, n_unchunked as u64, 1, 1))
        .collect();
    let mut eight_floor: Vec<f64> = (0..runs)
        .map(|_| floor_pool(8, n_unchunked as u64, 1, 8))
        .collect();
    let (chunk_floor, one_floor, eight_floor) = (
        median(&mut chunk_floor),
        median(&mut one_floor),
        median(&mut eight_floor),
    );
    for (name, value) in [
        (
            format!("raw chunk floor: 8 forked echo, chunks of 1024, {n_map}"),
            chunk_floor,
        ),
        (
            format!("raw floor: 8 forked echo, 1 in flight, {n_unchunked}"),
            one_floor,
        ),
        (
            format!("raw floor: 8 forked echo, 8 in flight, {n_unchunked}"),
            eight_floor,
        ),
    ] {
        b.push(Row {
            group: "floor",
            name,
            unit: "task/s",
            value,
            p99: None,
            floor: None,
            floor_name: "",
            target: None,
        });
    }
    // (name, options, tasks, [(floor, its name, the target ratio)])
    type Case = (
        String,
        PoolOptions,
        usize,
        Vec<(Option<f64>, &'static str, f64)>,
    );
    let cases: Vec<Case> = vec![
        (
            format!("map unchunked, {n_unchunked}"),
            eight.clone(),
            n_unchunked,
            vec![
                (py_imap, "python imap chunksize=1", 5.0),
                (Some(one_floor), "raw floor 1 in flight", 0.7),
            ],
        ),
        (
            format!("map unchunked 8 in flight, {n_unchunked}"),
            eight.clone().in_flight_per_worker(8),
            n_unchunked,
            vec![
                (py_imap, "python imap chunksize=1", 10.0),
                (Some(eight_floor), "raw floor 8 in flight", 0.7),
            ],
        ),
        (
            format!("map unchunked 8 in flight batch_replies, {n_unchunked}"),
            eight
                .clone()
                .in_flight_per_worker(8)
                .worker_options(WorkerOptions::new().batch_replies(true)),
            n_unchunked,
            vec![(py_imap, "python imap chunksize=1", 10.0)],
        ),
        (
            format!("map chunk 1024, {n_map}"),
            eight.clone().chunk_size(1024),
            n_map,
            vec![
                (py_map, "python map default chunks", 3.0),
                (Some(chunk_floor), "raw chunk floor", 0.7),
            ],
        ),
        (
            format!("map chunk auto, {n_map}"),
            eight.clone().chunk_size_auto(),
            n_map,
            vec![
                (py_map, "python map default chunks", 3.0),
                (Some(chunk_floor), "raw chunk floor", 0.7),
            ],
        ),
        (
            format!("map chunk auto 2 in flight, {n_map}"),
            eight.clone().chunk_size_auto().in_flight_per_worker(2),
            n_map,
            vec![(py_map, "python map default chunks", 3.0)],
        ),
    ];
    for (name, opts, n, floors) in cases {
        let measured: Vec<(f64, f64)> = (0..runs).map(|_| pool_rate(&opts, n as u64)).collect();
        let mut rates: Vec<f64> = measured.iter().map(|m| m.0).collect();
        let mut cpu: Vec<f64> = measured.iter().map(|m| m.1).collect();
        let rate = median(&mut rates);
        for (floor, floor_name, at_least) in floors {
            b.push(Row {
                group: "pool",
                name: format!("8 workers {name}"),
                unit: "task/s",
                value: rate,
                p99: None,
                floor,
                floor_name,
                target: floor.map(|_| Target::RatioAtLeast(at_least)),
            });
        }
        b.push(Row::new(
            "pool",
            format!("parent CPU per task, {name}"),
            "ns",
            median(&mut cpu),
        ));
    }
    // The pool's cost over a raw round trip: `send` + `recv` on a reactor's
    // worker against `submit` + `get` on a 1-worker pool, alternating one by
    // one, paired differences. Parent and workers on one CPU, as the round
    // trip group does: a ping-pong across CPUs pays an idle CPU's wake-up.
    pin(&[0]);
    let mut reactor = Reactor::new().expect("reactor");
    let w = reactor.spawn(pool_work).expect("spawn");
    let mut paired = Pool::new(&PoolOptions::new().workers(1), pool_work).expect("pool");
    let (mut raw, mut task, mut diff) = (Vec::new(), Vec::new(), Vec::new());
    let rounds = b.n(2000, 200);
    for i in 0..(rounds * b.n(10, 2)) as u64 {
        let t = Instant::now();
        reactor.send(w, &i).expect("send");
        let v: u64 = reactor
            .recv(w, Some(Duration::from_secs(10)))
            .expect("recv");
        let raw_us = t.elapsed().as_secs_f64() * 1e6;
        assert_eq!(v, pool_work(i));
        let t = Instant::now();
        let id = paired.submit(i).expect("submit");
        let got = paired.get(id, Some(Duration::from_secs(10)));
        let task_us = t.elapsed().as_secs_f64() * 1e6;
        assert_eq!(got.and_then(Result::ok), Some(pool_work(i)));
        raw.push(raw_us);
        task.push(task_us);
        diff.push(task_us - raw_us);
    }
    drop(reactor);
    drop(paired);
    let raw_median = median(&mut raw);
    let task_median = median(&mut task);
    b.push(
        Row::new(
            "floor",
            "reactor send + recv u64, 1 worker",
            "us",
            raw_median,
        )
        .p99(p99(&mut raw)),
    );
    b.push(Row {
        group: "pool",
        name: "Pool submit + get u64, 1 worker (paired)".into(),
        unit: "us",
        value: task_median,
        p99: Some(p99(&mut task)),
        floor: Some(raw_median),
        floor_name: "reactor send + recv",
        target: None,
    });
    b.push(Row {
        group: "pool",
        name: "pool cost per task (median of paired diffs)".into(),
        unit: "us",
        value: median(&mut diff),
        p99: None,
        floor: None,
        floor_name: "",
        target: Some(Target::AtMost(1.0)),
    });
    // Pool::submit + get, one task at a time on a 1-worker pool, against the
    // same through a `PoolHandle` (its thread between caller and pool),
    // alternating one by one.
    let mut pool = Pool::new(&PoolOptions::new().workers(1), pool_work).expect("pool");
    let handle =
        miniray::PoolHandle::new(&PoolOptions::new().workers(1), pool_work).expect("handle");
    let (mut one, mut via_handle) = (Vec::new(), Vec::new());
    for i in 0..(rounds * b.n(5, 1)) as u64 {
        let t = Instant::now();
        let id = pool.submit(i).expect("submit");
        let v = pool.get(id, Some(Duration::from_secs(10))).expect("done");
        one.push(t.elapsed().as_secs_f64() * 1e6);
        assert_eq!(v.ok(), Some(pool_work(i)));
        let t = Instant::now();
        let v = handle.submit(i).wait();
        via_handle.push(t.elapsed().as_secs_f64() * 1e6);
        assert_eq!(v.ok(), Some(pool_work(i)));
    }
    drop(pool);
    handle.close();
    // What a handle adds at the least: the request's hop to another thread
    // and the answer's hop back, on the same CPU, as the handle makes them
    // (a pipe rung there, a channel back), with no pool behind.
    let mut hops = thread_hops(rounds * b.n(5, 1));
    let hop_median = median(&mut hops);
    b.push(
        Row::new(
            "floor",
            "two thread hops (pipe and epoll there, oneshot back), same CPU",
            "us",
            hop_median,
        )
        .p99(p99(&mut hops)),
    );
    let one_median = median(&mut one);
    b.push(Row {
        group: "pool",
        name: "Pool submit + get u64, 1 worker".into(),
        unit: "us",
        value: one_median,
        p99: Some(p99(&mut one)),
        floor: Some(raw_median),
        floor_name: "reactor send + recv",
        target: None,
    });
    b.push(Row {
        group: "pool",
        name: "PoolHandle submit + wait u64, 1 worker".into(),
        unit: "us",
        value: median(&mut via_handle),
        p99: Some(p99(&mut via_handle)),
        floor: Some(one_median),
        floor_name: "Pool submit + get",
        target: Some(Target::RatioAtMost(1.5)),
    });
    pin(&all_cpus());
    // Redispatch: a task's first try hangs; its worker is SIGKILLed; the
    // time from the kill to the retry's reply (on the other, idle worker)
    // bounds the redispatch delay from above: it also holds the kernel
    // telling the pool of the death, and the retry's own round trip.
    let dir = std::env::temp_dir();
    let tag = std::process::id();
    let marker = move |n: u64| dir.join(format!("miniray-bench-redispatch-{tag}-{n}"));
    let m = marker.clone();
    let mut pool = Pool::new(&PoolOptions::new().workers(2), move |n: u64| {
        let path = m(n);
        if std::fs::metadata(&path).is_err() {
            let aside = path.with_extension("partial");
            let _ = std::fs::write(&aside, std::process::id().to_string());
            let _ = std::fs::rename(&aside, &path);
            std::thread::sleep(Duration::from_secs(60));
        }
        n
    })
    .expect("pool");
    let mut redispatch = Vec::new();
    for n in 0..b.n(20, 3) as u64 {
        let id = pool.submit(n).expect("submit");
        let until = Instant::now() + Duration::from_secs(10);
        let pid = loop {
            pool.poll(Some(Duration::from_millis(1)));
            if let Ok(Ok(pid)) = std::fs::read_to_string(marker(n)).map(|t| t.parse::<i32>()) {
                break Some(pid);
            }
            if Instant::now() > until {
                break None;
            }
        };
        let Some(w) = pid.and_then(|pid| {
            pool.workers()
                .into_iter()
                .find(|&w| pool.pid(w) == Some(pid))
        }) else {
            println!("pool: redispatch round {n}: the hanging try never started");
            continue;
        };
        let t = Instant::now();
        pool.kill(w, miniray::Signal::KILL).expect("kill");
        let v = pool
            .get(id, Some(Duration::from_secs(10)))
            .expect("retried");
        redispatch.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(v.ok(), Some(n));
        let _ = std::fs::remove_file(marker(n));
        // The replacement runs before the next round, so the retry always
        // finds an idle worker.
        while pool.workers().len() < 2 && t.elapsed() < Duration::from_secs(10) {
            pool.poll(Some(Duration::from_millis(1)));
        }
    }
    drop(pool);
    if !redispatch.is_empty() {
        b.push(Row {
            group: "pool",
            name: "kill to retry's reply (redispatch)".into(),
            unit: "ms",
            value: median(&mut redispatch),
            p99: Some(p99(&mut redispatch)),
            floor: None,
            floor_name: "",
            target: Some(Target::AtMost(10.0)),
        });
    }
    println!("pool group took {:.1} s", started.elapsed().as_secs_f64());
}

#[path = "common/args.rs"]
mod args;

const USAGE: &str = "\
usage: bench [--quick] [--json FILE] [--only GROUP]
  --quick        small counts, short waits (default: full run)
  --json FILE    also write every row as JSON to FILE (default: none)
  --only GROUP   run only GROUP: roundtrip, pipelined, spawn, wait_any,
                 framing, codec, memory, shm, pool or auth (default: all)
";

fn main() {
    all_cpus();
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
        all_cpus().len(),
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

    // ---- round trips, local and TCP, json and marshal, typed and Value
    if b.runs("roundtrip") {
        let small = small();
        let rec = record();
        let rec_value = record_value(&rec);
        let floats = random_floats(100_000);
        let floats_v = floats_value(&floats);
        let (small_rounds, dict_rounds, floats_rounds) =
            (b.n(3000, 200), b.n(2000, 100), b.n(50, 3));
        // The small local round trip and its floor run in alternating
        // blocks, so both see the same machine (a shared one drifts a lot),
        // and everything here runs on CPU 0: a ping-pong across CPUs costs
        // a wake-up of an idle CPU (~40 us on this VM) that depends only on
        // where the scheduler put the child.
        let all_cpus = all_cpus();
        pin(&[0]);
        // Both echo children fork before any worker, so they hold none of
        // the workers' sockets open (a worker must see EOF at close).
        let raw = RawEcho::new();
        let mut large = LargeEcho::new();
        let mut r = Reactor::new().expect("reactor");
        small_round_trip_rows(&mut b, &mut r, raw, &small);
        // Medians of the 100k-float round trips, [json, marshal] x [typed, Value].
        let mut floats_median = [[f64::NAN; 2]; 2];
        let mut floats_floor_median = [f64::NAN; 2];
        let blocks = b.n(5, 1);
        for (fi, format) in [Format::Json, Format::Marshal].into_iter().enumerate() {
            let dict_line = format.encode(&rec_value).expect("encode");
            let floats_line = format.encode(&floats_v).expect("encode");
            println!(
                "{format} lines: 1 KB dict {} B, 100k floats {} B",
                dict_line.len(),
                floats_line.len()
            );
            let opts = WorkerOptions::new().format(format);
            let server = r
                .listen(
                    "127.0.0.1:0",
                    &ServerOptions::new().format(format),
                    |v: Value| v,
                )
                .expect("listen");
            let addr = r.server_addr(server).expect("addr");
            let local = r.spawn_with(&opts, |v: Value| v).expect("spawn");
            let local_record = r.spawn_with(&opts, |v: Record| v).expect("spawn");
            let local_floats = r.spawn_with(&opts, |v: Vec<f64>| v).expect("spawn");
            let remote = r
                .connect(
                    addr,
                    &ConnectOptions::new().format(format),
                    Some(Duration::from_secs(10)),
                )
                .expect("connect");

            // Local rows run in alternating blocks with their floors (these
            // very lines through a socketpair plus the base64 and memcpy a
            // codec costing nothing would still need), as the small one does.
            let mut t: [Vec<f64>; 6] = Default::default();
            let [dict_floor, dict_value, dict_struct, floats_floor, floats_value_t, floats_typed] =
                &mut t;
            for _ in 0..blocks {
                let (dr, fr) = (dict_rounds / blocks, floats_rounds / blocks);
                dict_floor.extend(floor_zero_codec(&mut large, format, &dict_line, dr));
                dict_value.extend(round_trips(&mut r, local, &rec_value, dr));
                dict_struct.extend(round_trips(&mut r, local_record, &rec, dr));
                floats_floor.extend(floor_zero_codec(&mut large, format, &floats_line, fr));
                floats_value_t.extend(round_trips(&mut r, local, &floats_v, fr));
                floats_typed.extend(round_trips(&mut r, local_floats, &floats, fr));
            }
            let zero_name = match format {
                Format::Json => "socketpair + memcpy",
                Format::Marshal => "socketpair + base64 + memcpy",
            };
            // Pushes a row (the floors' own rows go to group "floor") and
            // returns its median.
            let row = |b: &mut Bench,
                       name: String,
                       t: &mut Vec<f64>,
                       floor: Option<f64>,
                       target: Option<f64>| {
                let value = median(t);
                b.push(Row {
                    group: if name.starts_with("zero codec") {
                        "floor"
                    } else {
                        "round trip"
                    },
                    name,
                    unit: "us",
                    value,
                    p99: Some(p99(t)),
                    floor,
                    floor_name: if floor.is_some() { zero_name } else { "" },
                    target: target.map(Target::AtMost),
                });
                value
            };
            let (typed_target, value_target) = match format {
                Format::Json => (10_000.0, 15_000.0),
                Format::Marshal => (3000.0, 5000.0),
            };
            let f = row(
                &mut b,
                format!("zero codec {format} 1 KB dict"),
                dict_floor,
                None,
                None,
            );
            let label = format!("local {format} 1 KB dict");
            row(
                &mut b,
                format!("{label} Value"),
                dict_value,
                Some(f),
                Some(16.0),
            );
            row(
                &mut b,
                format!("{label} struct"),
                dict_struct,
                Some(f),
                Some(16.0),
            );
            let f = row(
                &mut b,
                format!("zero codec {format} 100k floats"),
                floats_floor,
                None,
                None,
            );
            floats_floor_median[fi] = f;
            let label = format!("local {format} 100k floats");
            floats_median[fi][1] = row(
                &mut b,
                format!("{label} Value"),
                floats_value_t,
                Some(f),
                Some(value_target),
            );
            floats_median[fi][0] = row(
                &mut b,
                format!("{label} Vec<f64>"),
                floats_typed,
                Some(f),
                Some(typed_target),
            );
            for (kind, w) in [("local", local), ("tcp", remote)] {
                let mut t = round_trips(&mut r, w, &small, small_rounds);
                row(
                    &mut b,
                    format!("{kind} {format} {{\"test\":123}}"),
                    &mut t,
                    None,
                    None,
                );
                if kind == "tcp" {
                    let mut t = round_trips(&mut r, w, &rec_value, dict_rounds);
                    row(
                        &mut b,
                        format!("tcp {format} 1 KB dict Value"),
                        &mut t,
                        None,
                        None,
                    );
                    let mut t = round_trips(&mut r, w, &floats_v, floats_rounds);
                    row(
                        &mut b,
                        format!("tcp {format} 100k floats Value"),
                        &mut t,
                        None,
                        None,
                    );
                }
            }
            for w in [local, local_record, local_floats, remote] {
                r.close(w).expect("close");
            }
            r.stop_server(server).expect("stop");
        }
        for (i, kind) in ["Vec<f64>", "Value"].into_iter().enumerate() {
            b.push(Row {
                group: "round trip",
                name: format!("marshal vs json speedup 100k {kind}"),
                unit: "x",
                value: floats_median[0][i] / floats_median[1][i],
                p99: None,
                floor: None,
                floor_name: "",
                target: Some(Target::AtLeast(5.0)),
            });
        }
        float_round_trip_rows(&mut b, floats_median, floats_floor_median);
        drop(large);
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
            let workers: Vec<Worker> = (0..n)
                .map(|_| r.spawn(|v: Value| v).expect("spawn"))
                .collect();
            let mut floors = Vec::new();
            let mut rates = Vec::new();
            // At N = 16 also the floor of per-reply writes, in the same rounds.
            let mut reply_floors = Vec::new();
            let (mut cpu_floors, mut cpus) = (Vec::new(), Vec::new());
            for _ in 0..b.n(5, 1) {
                floors.push(floor_mio_echo(n, 64, dur));
                if n == 16 {
                    let (rate, cpu) = floor_per_reply(n, 64, dur);
                    reply_floors.push(rate);
                    cpu_floors.push(cpu);
                }
                let (rate, cpu) = pipelined(&mut r, &workers, 64, dur, true);
                rates.push(rate);
                cpus.push(cpu);
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
                // What per-reply writes cost at least: raw syscalls, no
                // framing or format. Its msg/s is the bound on a quiet
                // machine; under other load the CPU per message (below)
                // compares more steadily.
                let reply_floor = median(&mut reply_floors);
                let cpu_floor = median(&mut cpu_floors);
                b.push(Row::new(
                    "pipelined",
                    "N=16 absolute, raw per-reply writes (floor)",
                    "msg/s",
                    reply_floor,
                ));
                // The default: each reply written before the next request,
                // beside that floor (ratio = default / floor).
                b.push(Row {
                    group: "pipelined",
                    name: "N=16 absolute, per-reply writes (default)".into(),
                    unit: "msg/s",
                    value: rate,
                    p99: None,
                    floor: Some(reply_floor),
                    floor_name: "raw per-reply writes",
                    target: Some(Target::AtLeast(1_000_000.0)),
                });
                b.push(Row {
                    group: "pipelined",
                    name: "N=16 CPU per message, per-reply writes (default)".into(),
                    unit: "us/msg",
                    value: median(&mut cpus),
                    p99: None,
                    floor: Some(cpu_floor),
                    floor_name: "raw per-reply writes",
                    target: None,
                });
                // The same, with every send written through (no Batch).
                let mut through = Vec::new();
                for _ in 0..b.n(5, 1) {
                    through.push(pipelined(&mut r, &workers, 64, dur, false).0);
                }
                b.push(Row {
                    group: "pipelined",
                    name: "N=16 absolute, sends written through (no Batch)".into(),
                    unit: "msg/s",
                    value: median(&mut through),
                    p99: None,
                    floor: Some(rate),
                    floor_name: "sends in a Batch",
                    target: None,
                });
                // The same workers with batched replies (the explicit trade).
                drop(r);
                let mut r = Reactor::new().expect("reactor");
                let opts = WorkerOptions::new().batch_replies(true);
                let workers: Vec<Worker> = (0..n)
                    .map(|_| r.spawn_with(&opts, |v: Value| v).expect("spawn"))
                    .collect();
                let (mut batched, mut batched_cpus) = (Vec::new(), Vec::new());
                for _ in 0..b.n(5, 1) {
                    let (rate, cpu) = pipelined(&mut r, &workers, 64, dur, true);
                    batched.push(rate);
                    batched_cpus.push(cpu);
                }
                b.push(Row {
                    group: "pipelined",
                    name: "N=16 absolute, batched replies".into(),
                    unit: "msg/s",
                    value: median(&mut batched),
                    p99: None,
                    floor: Some(rate),
                    floor_name: "per-reply writes",
                    target: None,
                });
                b.push(Row {
                    group: "pipelined",
                    name: "N=16 CPU per message, batched replies".into(),
                    unit: "us/msg",
                    value: median(&mut batched_cpus),
                    p99: None,
                    floor: Some(cpu_floor),
                    floor_name: "raw per-reply writes",
                    target: None,
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
            let workers: Vec<Worker> = (0..n)
                .map(|_| r.spawn(|v: Value| v).expect("spawn"))
                .collect();
            let spawn_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
            // One round trip each, so every worker has used its buffers once.
            for &w in &workers {
                r.send(w, &Value::Int(1)).expect("send");
            }
            for &w in &workers {
                r.recv::<Value>(w, Some(Duration::from_secs(60)))
                    .expect("recv");
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
            b.push(Row::new(
                "memory",
                format!("child PSS (median), N={n}"),
                "KiB",
                median(&mut pss),
            ));
            drop(r);
        }
    }
    // ---- wait_any with one ready worker among N
    if b.runs("wait_any") {
        // On one CPU, like the round trips: what varies with N must be
        // miniray's cost, not where the scheduler put the one busy child.
        let all_cpus = all_cpus();
        pin(&[0]);
        let mut wait_costs = Vec::new();
        for n in [10usize, 1000, 10_000] {
            let n = if quick { n.min(200) } else { n };
            if n as u64 + 64 > limit {
                continue;
            }
            let mut r = Reactor::new().expect("reactor");
            let workers: Vec<Worker> = (0..n)
                .map(|_| r.spawn(|v: Value| v).expect("spawn"))
                .collect();
            let w = workers[n / 2];
            let rounds = b.n(3000, 200);
            let msg = small();
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
                r.try_recv::<Value>(w).expect("reply");
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
    // ---- encode / decode MB/s of line bytes, typed and Value
    if b.runs("codec") {
        let rec = record();
        let rec_value = record_value(&rec);
        let floats = random_floats(100_000);
        let floats_v = floats_value(&floats);
        let (dict_reps, floats_reps) = (b.n(20_000, 300), b.n(20, 2));
        for format in [Format::Json, Format::Marshal] {
            codec_rows(&mut b, format, "1 KB dict struct", &rec, dict_reps);
            codec_rows(&mut b, format, "1 KB dict Value", &rec_value, dict_reps);
            codec_rows(&mut b, format, "100k floats Vec<f64>", &floats, floats_reps);
            codec_rows(&mut b, format, "100k floats Value", &floats_v, floats_reps);
        }
        unhashable_row(&mut b);
    }
    // ---- memory to decode a 100 MB line, typed and Value
    if b.runs("memory") {
        let size = b.n(100_000_000, 2_000_000);
        // 12 line bytes per float in marshal (9 raw, base64); JSON's count
        // is measured on a sample (about 20: 17 digits, `0.`, `, `).
        let marshal_line = marshal_float_line(&random_floats(size / 12));
        let sample = Format::Json.encode(&random_floats(10_000)).expect("encode");
        let json_floats = (size as f64 * 10_000.0 / sample.len() as f64) as usize;
        let json_line = Format::Json
            .encode(&random_floats(json_floats))
            .expect("encode");
        let mut r = Reactor::new().expect("reactor");
        for (format, line) in [(Format::Marshal, marshal_line), (Format::Json, json_line)] {
            let mb = line.len() as f64 / 1e6;
            let body = &line[..line.len() - 1];
            // `Format::decode` on a line the caller holds (so the line is
            // not counted; marshal's copy of it for base64 is).
            let (typed, decode_typed) =
                peak_extra(|| format.decode::<Vec<f64>>(body).expect("decode"));
            let n = typed.len();
            drop(typed);
            let (value, decode_value) =
                peak_extra(|| format.decode::<Value>(body).expect("decode"));
            drop(value);
            // `recv` of the same line from an exec'd `cat`, timed only once
            // the whole line waits queued (so reading it is not counted;
            // marshal's base64 is decoded in place).
            let recv_typed = recv_peak::<Vec<f64>>(&mut r, format, &line);
            let recv_value = recv_peak::<Value>(&mut r, format, &line);
            println!("{format} memory line: {n} floats, {mb:.1} MB");
            for (how, kind, peak) in [
                ("decode", "Vec<f64>", decode_typed),
                ("decode", "Value", decode_value),
                ("recv", "Vec<f64>", recv_typed),
                ("recv", "Value", recv_value),
            ] {
                b.push(Row {
                    group: "memory",
                    name: format!("{how} {format} {mb:.0} MB line to {kind}"),
                    unit: "x line",
                    value: peak as f64 / line.len() as f64,
                    p99: None,
                    floor: None,
                    floor_name: "",
                    target: Some(Target::AtMost(3.0)),
                });
            }
        }
        drop(r);
    }
    // ---- SharedMemory handoff beside its floor, per size
    if b.runs("shm") {
        bench_shm(&mut b);
    }
    // ---- Pool: 1M trivial tasks beside Python's multiprocessing.Pool
    if b.runs("pool") {
        bench_pool(&mut b);
    }
    // ---- TCP round trips: plain, authenticated (tagged), encrypted
    if b.runs("auth") {
        bench_auth(&mut b);
    }
    let after = cpu_busy_fraction(Duration::from_millis(300));
    let report = json!({
        "machine": {
            "cpus": all_cpus().len(),
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
