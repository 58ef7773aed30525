//! The original library's testing checklist, as a program:
//! a worker echoes, `recv` gets the echo back, `wait_any` finds the ready worker.
//!
//! `cargo run --example echo [-- --format marshal]`

use std::time::Duration;

use miniray::{Format, Reactor, WorkerOptions};
use serde::{Deserialize, Serialize};

/// The message: any serde type travels as itself (a dict `{"test": n}` on
/// the wire, in either format).
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Ping {
    test: u32,
}

#[path = "common/args.rs"]
mod args;

const USAGE: &str = "\
usage: echo [--format json|marshal]
  --format F   the worker's wire format, json or marshal (default json)
";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut format = Format::Json;
    let mut args = args::Args::new("echo", USAGE);
    while let Some(flag) = args.next_flag() {
        match flag.as_str() {
            "--format" => format = args.value(&flag),
            _ => args.unknown(&flag),
        }
    }
    let mut reactor = Reactor::new()?;
    let opts = WorkerOptions::new().format(format);
    let worker = reactor.spawn_with(&opts, |msg: Ping| msg)?;
    let timeout = Some(Duration::from_secs(5));

    // Test 1: the worker works.
    reactor.send(worker, &Ping { test: 123 })?;
    let reply: Ping = reactor.recv(worker, timeout)?;
    assert_eq!(reply, Ping { test: 123 });
    println!("1. echo round trip ({format}): {reply:?}");

    // Test 3: wait_any finds it.
    reactor.send(worker, &Ping { test: 456 })?;
    let ready = reactor.wait_any(timeout)?;
    assert_eq!(ready, vec![worker]);
    let reply = reactor.try_recv::<Ping>(worker)?;
    println!(
        "3. wait_any returned {} ready worker: {reply:?}",
        ready.len()
    );

    // Closing: the child sees EOF, exits 0 and is reaped.
    reactor.close(worker)?;
    match reactor.recv::<Ping>(worker, timeout) {
        Err(miniray::Error::Closed { status }) => println!("closed: {status:?}"),
        other => return Err(format!("expected Closed, got {other:?}").into()),
    }
    Ok(())
}
