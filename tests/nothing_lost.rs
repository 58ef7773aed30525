//! Nothing lost: at least a million sequence-numbered messages through 100
//! local and 100 TCP workers at once, both directions busy, sizes from 1 byte
//! to 16 MiB, with random closes. Every message sent before a close comes
//! back exactly once and in order; nothing is accepted after it.

mod common;

use std::time::{Duration, Instant};

use common::Rng;
use miniray::{ConnectOptions, Error, Reactor, ServerOptions, Worker};
use serde_json::{json, Value};

struct Lane {
    w: Worker,
    sent: u64,
    got: u64,
    closed: bool,
    done: bool,
}

/// Message sizes: mostly 1 to 64 bytes, some 64 KiB to 1 MiB.
fn size(rng: &mut Rng) -> usize {
    let roll = rng.next() % 100_000;
    if roll < 40 {
        64 * 1024 + (rng.next() % (960 * 1024)) as usize
    } else {
        1 + (rng.next() % 64) as usize
    }
}

#[test]
fn a_million_messages_arrive_exactly_once_in_order() {
    miniray::raise_fd_limit().expect("rlimit");
    let mut r = Reactor::new().expect("reactor");
    let server = r
        .listen("127.0.0.1:0", &ServerOptions::new(), |v: Value| v)
        .expect("listen");
    let addr = r.server_addr(server).expect("addr");
    let mut lanes = Vec::new();
    for i in 0..200 {
        let w = if i < 100 {
            r.spawn(|v: Value| v).expect("spawn")
        } else {
            r.connect(addr, &ConnectOptions::new(), Some(common::DEADLINE))
                .expect("connect")
        };
        lanes.push(Lane {
            w,
            sent: 0,
            got: 0,
            closed: false,
            done: false,
        });
    }
    // Early closes cut a tenth on average: 1.2 M planned, over 1 M sent.
    let total: u64 = 1_200_000;
    let per_lane = total / 200;
    let mut rng = Rng(0x1234_5678_9abc_def1);
    // Four 16 MiB messages, two local and two TCP, early in their lanes.
    let big_lanes = [1usize, 50, 101, 150];
    let mut big_sent = 0;
    // A fifth of the lanes close at a random point before their quota.
    let close_at: Vec<Option<u64>> = (0..200)
        .map(|i| (i % 5 == 3).then(|| 20 + rng.next() % (per_lane - 20)))
        .collect();
    let pad = "p".repeat(16 << 20);
    let mut delivered = 0u64;
    let mut ready = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    let index: std::collections::HashMap<Worker, usize> =
        lanes.iter().enumerate().map(|(i, l)| (l.w, i)).collect();
    loop {
        assert!(
            Instant::now() < deadline,
            "stalled at {delivered} delivered"
        );
        // Keep up to 32 in flight per open lane.
        for (i, lane) in lanes.iter_mut().enumerate() {
            while !lane.closed && lane.sent < per_lane && lane.sent - lane.got < 32 {
                let n = if big_lanes.contains(&i) && lane.sent == 10 {
                    big_sent += 1;
                    16 << 20
                } else {
                    size(&mut rng)
                };
                let msg = json!({"s": lane.sent, "d": &pad[..n]});
                match r.send(lane.w, &msg) {
                    Ok(()) => lane.sent += 1,
                    Err(Error::Backpressure { .. }) => break,
                    Err(e) => panic!("send: {e}"),
                }
                if close_at[i] == Some(lane.sent) {
                    r.close(lane.w).expect("close");
                    lane.closed = true;
                    // Nothing is accepted after the close.
                    assert!(r.send(lane.w, &json!({"s": lane.sent})).is_err());
                }
            }
        }
        if lanes.iter().all(|l| l.done) {
            break;
        }
        r.wait_any_into(&mut ready, Some(Duration::from_secs(1)))
            .expect("wait_any");
        let _ = r.take_server_events();
        for &w in &ready {
            let lane = &mut lanes[index[&w]];
            loop {
                match r.try_recv::<Value>(w) {
                    Ok(Some(v)) => {
                        assert_eq!(v["s"], json!(lane.got), "in order, exactly once");
                        lane.got += 1;
                        delivered += 1;
                    }
                    Ok(None) => break,
                    Err(Error::Closed { .. }) => {
                        assert!(lane.closed, "only closed lanes close");
                        assert_eq!(lane.got, lane.sent, "all before the close came back");
                        lane.done = true;
                        break;
                    }
                    Err(e) => panic!("lane error: {e}"),
                }
            }
            if !lane.closed && lane.got == per_lane {
                r.close(w).expect("close");
                lane.closed = true;
            }
        }
    }
    let closed_early = close_at.iter().filter(|c| c.is_some()).count();
    assert_eq!(
        lanes.iter().filter(|l| l.got < per_lane).count(),
        closed_early
    );
    let sent: u64 = lanes.iter().map(|l| l.sent).sum();
    assert!(sent >= 1_000_000, "only {sent} sent");
    assert_eq!(delivered, sent, "every message sent came back");
    assert_eq!(big_sent, 4, "all four 16 MiB messages were sent");
}
