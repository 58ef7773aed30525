//! Descriptors pair with the right line. Plain lines, region lines and plain
//! lines shaped like the region envelope, interleaved in every order, with
//! the receiver deliberately late (so one `recvmsg` returns several of them:
//! plain bytes and then the bytes that carry descriptors), in both
//! directions; a line split across many reads before a region line;
//! over-long lines; a peer that attaches descriptors to a line that is no
//! envelope; envelope-shaped user messages sent without descriptors, which
//! must arrive unchanged.

mod common;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::DEADLINE;
use miniray::{
    Channel, ConnectOptions, Error, Format, Reactor, ServerOptions, SharedMemory, WorkerOptions,
};
use serde_json::{json, Value};

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Every sequence of 1 to 4 kinds over `P` (plain), `R` (with a region) and
/// `S` (a plain message shaped like the envelope): 120 sequences.
fn sequences() -> Vec<String> {
    let mut len_n = vec![String::new()];
    let mut out = Vec::new();
    for _ in 0..4 {
        len_n = len_n
            .iter()
            .flat_map(|s| ['P', 'R', 'S'].map(|c| format!("{s}{c}")))
            .collect();
        out.extend(len_n.iter().cloned());
    }
    out
}

/// The value of the `j`-th message of a round, for kinds `P` and `S`.
fn plain_value(round: u64, j: usize, kind: char) -> Value {
    if kind == 'S' {
        // Even positions name no ids (this used to arrive unwrapped), odd
        // ones name ids (this used to fail as "no descriptors came with it").
        let ids: Vec<u64> = if j.is_multiple_of(2) {
            vec![]
        } else {
            vec![1, round + 2]
        };
        json!({"miniray.regions": ids, "msg": {"round": round, "j": j}})
    } else {
        json!({"round": round, "j": j, "kind": "plain"})
    }
}

/// The bytes a round's region starts with.
fn tag(round: u64, j: usize) -> [u8; 8] {
    ((round << 8) | j as u64).to_le_bytes()
}

/// The `j`-th message of a round and, for kind `R`, the region it carries.
fn message(round: u64, j: usize, kind: char) -> miniray::Result<(Value, Option<SharedMemory>)> {
    if kind != 'R' {
        return Ok((plain_value(round, j, kind), None));
    }
    let mut region = SharedMemory::create("pairing", 4096)?;
    if let Some(bytes) = region.as_mut_slice() {
        bytes[..8].copy_from_slice(&tag(round, j));
    }
    let msg = json!({"round": round, "j": j, "region": region.id()});
    Ok((msg, Some(region)))
}

/// `None` if `got` is the `j`-th message of the round, else what is wrong.
fn check(
    round: u64,
    j: usize,
    kind: char,
    got: miniray::Result<(Value, Vec<SharedMemory>)>,
) -> Option<String> {
    let what = format!("round {round} message {j} ({kind})");
    let (value, regions) = match got {
        Ok(m) => m,
        Err(e) => return Some(format!("{what}: error {e}")),
    };
    if kind != 'R' {
        if value != plain_value(round, j, kind) || !regions.is_empty() {
            return Some(format!(
                "{what}: got {value} with {} regions",
                regions.len()
            ));
        }
        return None;
    }
    match regions.as_slice() {
        [region]
            if value == json!({"round": round, "j": j, "region": region.id()})
                && region.as_slice()[..8] == tag(round, j) =>
        {
            None
        }
        _ => Some(format!(
            "{what}: got {value} with {} regions",
            regions.len()
        )),
    }
}

fn side_error(_: std::io::Error) -> Error {
    Error::Region {
        reason: "the side channel failed",
    }
}

/// The test's worker. A round's spec says its sequence and direction.
/// `down`: answer "ready", wait for the parent's signal on the side socket
/// (by then the whole sequence sits in our socket), then read and check it
/// and answer the list of problems. `up`: send the sequence, then signal.
fn peer(ch: &mut Channel, side: &UnixStream) -> miniray::Result<()> {
    side.set_read_timeout(Some(DEADLINE)).map_err(side_error)?;
    while let Some(spec) = ch.recv::<Value>()? {
        let round = spec["round"].as_u64().unwrap_or(0);
        let seq = spec["seq"].as_str().unwrap_or("").to_owned();
        if spec["dir"] == "down" {
            ch.send(&json!("ready"))?;
            let mut byte = [0u8];
            (&*side).read_exact(&mut byte).map_err(side_error)?;
            let mut problems = Vec::new();
            for (j, kind) in seq.chars().enumerate() {
                let got = ch.recv_regions().and_then(|m| {
                    m.ok_or(Error::Region {
                        reason: "end of stream",
                    })
                });
                problems.extend(check(round, j, kind, got));
            }
            ch.send(&json!(problems))?;
        } else {
            for (j, kind) in seq.chars().enumerate() {
                let (msg, region) = message(round, j, kind)?;
                match &region {
                    Some(r) => ch.send_regions(&msg, &[r])?,
                    None => ch.send(&msg)?,
                }
            }
            ch.flush()?;
            (&*side).write_all(b"!").map_err(side_error)?;
        }
    }
    Ok(())
}

/// Every interleaving, both directions, in one format; returns the problems.
fn interleavings(format: Format) -> Vec<String> {
    let (mine, theirs) = UnixStream::pair().expect("side socketpair");
    mine.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut r = Reactor::new().expect("reactor");
    let opts = WorkerOptions::new()
        .format(format)
        .keep_fd(theirs.as_raw_fd());
    let side = &theirs;
    let w = r
        .spawn_channel(&opts, move |ch| peer(ch, side))
        .expect("spawn");
    drop(theirs);
    let mut problems = Vec::new();
    for (round, seq) in (0u64..).zip(sequences()) {
        // Parent → child, the child late.
        r.send(w, &json!({"round": round, "seq": seq, "dir": "down"}))
            .expect("spec");
        assert_eq!(
            r.recv::<Value>(w, Some(DEADLINE)).expect("ready"),
            json!("ready")
        );
        for (j, kind) in seq.chars().enumerate() {
            // send_regions duplicates the descriptors it queues, so the
            // region may be dropped at once.
            let (msg, region) = message(round, j, kind).expect("message");
            match &region {
                Some(reg) => r.send_regions(w, &msg, &[reg]).expect("send_regions"),
                None => r.send(w, &msg).expect("send"),
            }
        }
        r.flush();
        assert_eq!(r.pending_output(w).expect("pending"), 0, "all written");
        (&mine).write_all(b"!").expect("signal");
        let report = r.recv::<Value>(w, Some(DEADLINE)).expect("report");
        for p in report.as_array().into_iter().flatten() {
            problems.push(format!(
                "{format} down {seq}: {}",
                p.as_str().unwrap_or("?")
            ));
        }
        // Child → parent, the parent late: nothing reads the socket until
        // the child says everything is sent.
        r.send(w, &json!({"round": round, "seq": seq, "dir": "up"}))
            .expect("spec");
        r.flush();
        let mut byte = [0u8];
        (&mine).read_exact(&mut byte).expect("the child's signal");
        for (j, kind) in seq.chars().enumerate() {
            let got = r.recv_regions(w, Some(DEADLINE));
            if let Some(p) = check(round, j, kind, got) {
                problems.push(format!("{format} up {seq}: {p}"));
            }
        }
    }
    r.close(w).expect("close");
    problems
}

#[test]
fn every_interleaving_pairs_descriptors_with_their_line_json() {
    let problems = interleavings(Format::Json);
    assert!(
        problems.is_empty(),
        "{} problems, first: {:#?}",
        problems.len(),
        &problems[..problems.len().min(12)]
    );
}

#[test]
fn every_interleaving_pairs_descriptors_with_their_line_marshal() {
    let problems = interleavings(Format::Marshal);
    assert!(
        problems.is_empty(),
        "{} problems, first: {:#?}",
        problems.len(),
        &problems[..problems.len().min(12)]
    );
}

/// Big plain lines (of these lengths) before region lines.
const BIG: [usize; 3] = [(4 << 20) + 1000, (1 << 20) + 77, (3 << 20) + 4093];

fn big_line(round: usize) -> Value {
    json!("x".repeat(BIG[round]))
}

#[test]
fn a_line_split_across_reads_then_a_region_line_parent_to_child() {
    let mut r = Reactor::new().expect("reactor");
    let w = r
        .spawn_channel(&WorkerOptions::new(), |ch| {
            // A late reader, made deterministic: each read waits for 256 KiB
            // (or for the segment that carries descriptors, which ends a read
            // early), so a big line's tail and the region line after it
            // always arrive in one read.
            let lowat: libc::c_int = 256 * 1024;
            // SAFETY: setsockopt on our own socket with a valid int option.
            let rc = unsafe {
                libc::setsockopt(
                    ch.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVLOWAT,
                    (&lowat as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            let mut problems = Vec::new();
            if rc != 0 {
                problems.push(json!("setsockopt(SO_RCVLOWAT) failed"));
            }
            for round in 0..BIG.len() {
                match ch.recv_regions::<Value>() {
                    Ok(Some((v, regions))) if v == big_line(round) && regions.is_empty() => {}
                    Ok(_) => problems.push(json!(format!("round {round}: the big line is wrong"))),
                    Err(e) => problems.push(json!(format!("round {round}: big line: {e}"))),
                }
                let got = ch.recv_regions().and_then(|m| {
                    m.ok_or(Error::Region {
                        reason: "end of stream",
                    })
                });
                problems.extend(check(round as u64, 1, 'R', got).map(Value::from));
            }
            ch.send(&json!(problems))
        })
        .expect("spawn");
    for round in 0..BIG.len() {
        r.send(w, &big_line(round)).expect("big");
        let (msg, region) = message(round as u64, 1, 'R').expect("message");
        let region = region.expect("a region");
        r.send_regions(w, &msg, &[&region]).expect("send_regions");
    }
    let report = r.recv::<Value>(w, Some(DEADLINE)).expect("report");
    assert_eq!(report, json!([]));
}

#[test]
fn a_line_split_across_reads_then_a_region_line_child_to_parent() {
    let mut r = Reactor::new().expect("reactor");
    let w = r
        .spawn_channel(&WorkerOptions::new(), |ch| {
            for round in 0..BIG.len() {
                ch.send(&big_line(round))?;
                let (msg, region) = message(round as u64, 1, 'R')?;
                if let Some(region) = region {
                    ch.send_regions(&msg, &[&region])?;
                }
            }
            Ok(())
        })
        .expect("spawn");
    // A late reader: read what is there, then pause, so the child fills the
    // socket and writes the big line's tail and the region line together.
    let mut got = Vec::new();
    let mut ended = false;
    let end = Instant::now() + DEADLINE;
    while got.len() < 2 * BIG.len() && !ended {
        assert!(Instant::now() < end, "only {} messages", got.len());
        r.wait_any(Some(Duration::ZERO)).expect("wait_any");
        while got.len() < 2 * BIG.len() {
            match r.try_recv_regions(w) {
                Ok(Some(m)) => got.push(Ok(m)),
                Ok(None) => break,
                Err(e) => {
                    // A failed message counts; the end of the worker ends the test.
                    ended = !e.is_message_error();
                    got.push(Err(e));
                    if ended {
                        break;
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut problems = Vec::new();
    for (i, m) in got.into_iter().enumerate() {
        let round = i / 2;
        if i % 2 == 0 {
            match m {
                Ok((v, regions)) if v == big_line(round) && regions.is_empty() => {}
                Ok(_) => problems.push(format!("round {round}: the big line is wrong")),
                Err(e) => problems.push(format!("round {round}: big line: {e}")),
            }
        } else {
            problems.extend(check(round as u64, 1, 'R', m));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn over_long_lines_take_their_descriptors_with_them() {
    const LIMIT: usize = 1024;
    let (mine, theirs) = UnixStream::pair().expect("side socketpair");
    mine.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut r = Reactor::new().expect("reactor");
    let opts = WorkerOptions::new()
        .max_line(LIMIT)
        .keep_fd(theirs.as_raw_fd());
    let side = &theirs;
    let w = r
        .spawn_channel(&opts, move |ch| {
            side.set_read_timeout(Some(DEADLINE)).map_err(side_error)?;
            let before = fd_count();
            ch.send(&json!("ready"))?;
            let mut byte = [0u8];
            (&*side).read_exact(&mut byte).map_err(side_error)?;
            let mut seen = Vec::new();
            for _ in 0..6 {
                seen.push(match ch.recv_regions::<Value>() {
                    Ok(Some((v, regions))) => json!({"msg": v, "regions": regions.len()}),
                    Ok(None) => json!("eof"),
                    Err(Error::LineTooLong { .. }) => json!("too long"),
                    Err(e) => json!(format!("error: {e}")),
                });
            }
            ch.send(&json!({"seen": seen, "before": before, "after": fd_count()}))
        })
        .expect("spawn");
    drop(theirs);
    assert_eq!(
        r.recv::<Value>(w, Some(DEADLINE)).expect("ready"),
        json!("ready")
    );
    let region = SharedMemory::create("long", 4096).expect("create");
    let long = "y".repeat(10 * LIMIT);
    r.send(w, &json!(long)).expect("long plain");
    r.send_regions(w, &json!(1), &[&region]).expect("region 1");
    r.send_regions(w, &json!(long), &[&region])
        .expect("long region line");
    r.send_regions(w, &json!(2), &[&region]).expect("region 2");
    r.send(w, &json!(long)).expect("long plain");
    r.send(w, &json!(3)).expect("plain");
    r.flush();
    assert_eq!(r.pending_output(w).expect("pending"), 0, "all written");
    (&mine).write_all(b"!").expect("signal");
    let report = r.recv::<Value>(w, Some(DEADLINE)).expect("report");
    assert_eq!(
        report["seen"],
        json!([
            "too long",
            {"msg": 1, "regions": 1},
            "too long",
            {"msg": 2, "regions": 1},
            "too long",
            {"msg": 3, "regions": 0},
        ])
    );
    assert_eq!(report["before"], report["after"], "descriptors leaked");
}

#[test]
fn envelope_shaped_messages_sent_plain_arrive_unchanged() {
    let shaped = [
        json!({"miniray.regions": [], "msg": 5}),
        json!({"miniray.regions": [1], "msg": 5}),
        json!({"miniray.regions": [1, 2, 3], "msg": {"miniray.regions": [], "msg": 6}}),
    ];
    for format in [Format::Json, Format::Marshal] {
        let mut r = Reactor::new().expect("reactor");
        let w = r
            .spawn_channel(&WorkerOptions::new().format(format), |ch| {
                while let Some((msg, regions)) = ch.recv_regions::<Value>()? {
                    ch.send(&json!({"got": msg, "regions": regions.len()}))?;
                    // And back, as sent.
                    ch.send(&msg)?;
                }
                Ok(())
            })
            .expect("spawn");
        for v in &shaped {
            r.send(w, v).expect("send");
            assert_eq!(
                r.recv::<Value>(w, Some(DEADLINE)).expect("reply"),
                json!({"got": v, "regions": 0}),
                "{format}"
            );
            let (back, regions) = r.recv_regions(w, Some(DEADLINE)).expect("back");
            assert_eq!((&back, regions.len()), (v, 0), "{format}");
        }
        // Sent as the message of a real envelope, it is unwrapped once only.
        let region = SharedMemory::create("shaped", 4096).expect("create");
        r.send_regions(w, &shaped[1], &[&region])
            .expect("send_regions");
        assert_eq!(
            r.recv::<Value>(w, Some(DEADLINE)).expect("reply"),
            json!({"got": shaped[1], "regions": 1}),
            "{format}"
        );
        r.recv::<Value>(w, Some(DEADLINE)).expect("back");
        // No regions: the plain message, no envelope.
        r.send_regions(w, &shaped[0], &[]).expect("send_regions");
        assert_eq!(
            r.recv::<Value>(w, Some(DEADLINE)).expect("reply"),
            json!({"got": shaped[0], "regions": 0}),
            "{format}"
        );
        r.recv::<Value>(w, Some(DEADLINE)).expect("back");
    }
}

#[test]
fn envelope_shaped_messages_cross_tcp_unchanged() {
    let mut r = Reactor::new().expect("reactor");
    let server = r
        .listen("127.0.0.1:0", &ServerOptions::new(), |v: Value| v)
        .expect("listen");
    let addr = r.server_addr(server).expect("addr");
    let w = r
        .connect(addr, &ConnectOptions::new(), Some(DEADLINE))
        .expect("connect");
    for v in [
        json!({"miniray.regions": [], "msg": 5}),
        json!({"miniray.regions": [1], "msg": 5}),
    ] {
        r.send(w, &v).expect("send");
        assert_eq!(r.recv::<Value>(w, Some(DEADLINE)).expect("echo"), v);
    }
}

/// A Python peer that breaks the wire contract on purpose: descriptors
/// attached to a line that is no envelope, then a proper envelope, then a
/// plain line.
const PYTHON_MISPAIRED: &str = r#"
import os, socket, sys
sock = socket.socket(fileno=1)
fd = os.memfd_create("py", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
os.ftruncate(fd, 4096)
import fcntl
fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
socket.send_fds(sock, [b'"not an envelope"\n'], [fd])
socket.send_fds(sock, [b'{"miniray.regions": [9], "msg": "good"}\n'], [fd])
sock.sendall(b'"plain"\n')
sys.stdin.read()
"#;

#[test]
fn descriptors_with_a_line_that_is_no_envelope_fail_that_line_only() {
    let mut r = Reactor::new().expect("reactor");
    let exec = miniray::Exec::new("python3", ["-c", PYTHON_MISPAIRED]).expect("exec");
    let w = r.spawn_exec(&WorkerOptions::new(), &exec).expect("spawn");
    match r.recv_regions::<Value>(w, Some(DEADLINE)) {
        Err(Error::Region { reason }) => assert!(reason.contains("envelope"), "{reason}"),
        other => panic!("expected a region error, got {other:?}"),
    }
    let (msg, regions) = r.recv_regions::<Value>(w, Some(DEADLINE)).expect("good");
    assert_eq!(msg, json!("good"));
    assert_eq!(regions.len(), 1);
    assert_eq!(regions[0].id(), 9);
    drop(regions);
    let (msg, regions) = r.recv_regions(w, Some(DEADLINE)).expect("plain");
    assert_eq!((msg, regions.len()), (json!("plain"), 0));
    r.close(w).expect("close");
}

/// Region lines longer than one write: `(pad bytes, with a region)`.
const MIXED: [(usize, bool); 6] = [
    (2 << 20, true),
    (10, false),
    (300 << 10, true),
    (10, true),
    (70 << 10, false),
    (10, true),
];

/// The `j`-th message of [`MIXED`] and its region.
fn mixed(j: usize) -> miniray::Result<(Value, Option<SharedMemory>)> {
    let (pad, with_region) = MIXED[j];
    let region = if with_region {
        let mut region = SharedMemory::create("mixed", 4096)?;
        if let Some(bytes) = region.as_mut_slice() {
            bytes[..8].copy_from_slice(&tag(99, j));
        }
        Some(region)
    } else {
        None
    };
    let id = region.as_ref().map(|r| r.id());
    Ok((
        json!({"j": j, "region": id, "pad": "z".repeat(pad)}),
        region,
    ))
}

fn check_mixed(j: usize, got: miniray::Result<(Value, Vec<SharedMemory>)>) -> Option<String> {
    let (pad, with_region) = MIXED[j];
    match got {
        Ok((v, regions)) => {
            let ok = v["j"] == json!(j)
                && v["pad"].as_str().map(str::len) == Some(pad)
                && regions.len() == usize::from(with_region)
                && regions
                    .iter()
                    .all(|r| v["region"] == json!(r.id()) && r.as_slice()[..8] == tag(99, j));
            (!ok).then(|| format!("message {j}: {} regions", regions.len()))
        }
        Err(e) => Some(format!("message {j}: {e}")),
    }
}

#[test]
fn envelope_lines_longer_than_one_write_both_ways() {
    let mut r = Reactor::new().expect("reactor");
    let w = r
        .spawn_channel(&WorkerOptions::new(), |ch| {
            let mut problems = Vec::new();
            for j in 0..MIXED.len() {
                let got = ch.recv_regions().and_then(|m| {
                    m.ok_or(Error::Region {
                        reason: "end of stream",
                    })
                });
                problems.extend(check_mixed(j, got));
            }
            ch.send(&json!(problems))?;
            for j in 0..MIXED.len() {
                let (msg, region) = mixed(j)?;
                match &region {
                    Some(reg) => ch.send_regions(&msg, &[reg])?,
                    None => ch.send(&msg)?,
                }
            }
            Ok(())
        })
        .expect("spawn");
    for j in 0..MIXED.len() {
        let (msg, region) = mixed(j).expect("message");
        match &region {
            Some(reg) => r.send_regions(w, &msg, &[reg]).expect("send_regions"),
            None => r.send(w, &msg).expect("send"),
        }
    }
    assert_eq!(
        r.recv::<Value>(w, Some(DEADLINE)).expect("report"),
        json!([])
    );
    let problems: Vec<String> = (0..MIXED.len())
        .filter_map(|j| check_mixed(j, r.recv_regions(w, Some(DEADLINE))))
        .collect();
    assert!(problems.is_empty(), "{problems:#?}");
}
