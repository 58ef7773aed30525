//! The original library's testing checklist, as a program:
//! a worker echoes, `recv` gets the echo back, `wait_any` finds the ready worker.
//!
//! `cargo run --example echo [-- --format marshal]`

use std::time::Duration;

use miniray::serde_json::json;
use miniray::{Format, Reactor, WorkerOptions};

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
    let worker = reactor.spawn_with(&opts, |msg| msg)?;
    let timeout = Some(Duration::from_secs(5));

    // Test 1: the worker works.
    reactor.send(worker, &json!({"test": 123}))?;
    let reply = reactor.recv(worker, timeout)?;
    assert_eq!(reply, json!({"test": 123}));
    println!("1. echo round trip ({format}): {reply}");

    // Test 3: wait_any finds it.
    reactor.send(worker, &json!({"test": 456}))?;
    let ready = reactor.wait_any(timeout)?;
    assert_eq!(ready, vec![worker]);
    let reply = reactor.try_recv(worker)?;
    println!(
        "3. wait_any returned {} ready worker: {reply:?}",
        ready.len()
    );

    // Closing: the child sees EOF, exits 0 and is reaped.
    reactor.close(worker)?;
    match reactor.recv(worker, timeout) {
        Err(miniray::Error::Closed { status }) => println!("closed: {status:?}"),
        other => return Err(format!("expected Closed, got {other:?}").into()),
    }
    Ok(())
}
