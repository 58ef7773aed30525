//! A remote worker client (`Reactor::connect`): reads one Python value per
//! line on stdin (JSON as Python's `json.loads` reads it, or with
//! `--input marshal` base64 marshal as Python's
//! `base64.b64encode(marshal.dumps(v))` writes it), sends each to a server
//! (pipelined, order kept), prints each reply on one line as Python's
//! `repr` (or, with `--output json|marshal`, as a line in that format),
//! exits 0 after the last reply. A request the server answers with an error
//! (a message it cannot decode, a panic) is reported on stderr as
//! `call: reply N: worker reported KIND: MESSAGE`, the other replies are
//! still printed, and the exit status is then 1. Other errors go to
//! stderr with a non-zero exit.
//!
//! ```text
//! call --connect ADDR [--format json|marshal] [--input json|marshal] [--output repr|json|marshal]
//!      [--timeout SECS] [--secret-file PATH] [--encrypt]
//! ```
//!
//! With `MINIRAY_SECRET` in the environment (or `--secret-file`, which must
//! not be readable by group or others), both sides prove the secret to each
//! other and every line is tagged; `--encrypt` encrypts the connection too
//! (a miniray server only). A failed authentication (a wrong secret, none
//! where the server requires one, one where the server has none) is said on
//! stderr naming the secret, and the exit status is 1.

use std::io::{BufRead, Write};
use std::time::Duration;

use miniray::{ConnectOptions, Error, Format, Reactor, Secret, Value};

#[path = "common/args.rs"]
mod args;

const USAGE: &str = "\
usage: call --connect ADDR [--format json|marshal] [--input json|marshal] [--output repr|json|marshal]
            [--timeout SECS] [--secret-file PATH] [--encrypt] < LINES
  --connect ADDR       server address (required)
  --format F           the connection's format, json or marshal (default json)
  --input F            how stdin lines are written, json or marshal (default json)
  --output F           how replies are printed: repr (Python's), json or marshal (default repr)
  --timeout SECS       wait at most this long for each reply (default 30)
  --secret-file PATH   authenticate with this secret, a file only its owner may read (default: $MINIRAY_SECRET, else none)
  --encrypt            encrypt the connection (needs a secret and a miniray server)
";

fn main() {
    match run() {
        Ok(()) => {}
        Err(e) => {
            eprintln!("call: {e}");
            std::process::exit(1);
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut connect = None;
    let mut format = Format::Json;
    let mut input = Format::Json;
    let mut output: Option<Format> = None;
    let mut timeout = Duration::from_secs(30);
    let mut secret = Secret::from_env(miniray::SECRET_ENV)?;
    let mut encrypt = false;
    let mut args = args::Args::new("call", USAGE);
    while let Some(flag) = args.next_flag() {
        match flag.as_str() {
            "--connect" => connect = Some(args.value::<String>(&flag)),
            "--format" => format = args.value(&flag),
            "--input" => input = args.value(&flag),
            "--output" => {
                let name: String = args.value(&flag);
                output = match name.as_str() {
                    "repr" => None,
                    other => match other.parse() {
                        Ok(f) => Some(f),
                        Err(e) => args.fail(format!("--output: {e} or repr")),
                    },
                };
            }
            "--timeout" => {
                let secs: f64 = args.value(&flag);
                timeout = match Duration::try_from_secs_f64(secs) {
                    Ok(d) => d,
                    Err(e) => args.fail(format!("--timeout {secs}: {e}")),
                };
            }
            "--secret-file" => {
                let path: String = args.value(&flag);
                secret = Some(Secret::from_file(&path)?);
            }
            "--encrypt" => encrypt = true,
            _ => args.unknown(&flag),
        }
    }
    let Some(addr) = connect else {
        args.fail("--connect is required")
    };

    let mut messages = Vec::new();
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = input
            .decode(line.trim_end().as_bytes())
            .map_err(|e| format!("stdin line {}: {e}", n + 1))?;
        messages.push(v);
    }

    let mut reactor = Reactor::new()?;
    let mut opts = ConnectOptions::new().format(format);
    if let Some(secret) = secret {
        opts = opts.secret(secret);
    }
    opts = opts.encrypt(encrypt);
    let w = reactor
        .connect(addr.as_str(), &opts, Some(timeout))
        .map_err(explain)?;
    let out = std::io::stdout();
    let mut out = out.lock();
    let (mut sent, mut received, mut failed) = (0, 0, 0);
    while received < messages.len() {
        // Pipeline: queue as much as the high-water mark allows.
        while sent < messages.len() {
            match reactor.send(w, &messages[sent]) {
                Ok(()) => sent += 1,
                Err(Error::Backpressure { .. }) => break,
                Err(e) => return Err(explain(e)),
            }
        }
        received += 1;
        match reactor.recv::<Value>(w, Some(timeout)) {
            Ok(reply) => match output {
                None => writeln!(out, "{reply}")?,
                Some(f) => out.write_all(&f.encode(&reply)?)?,
            },
            // The server's error reply for this request, or a reply we
            // cannot read: said on stderr, the other replies still printed.
            Err(e) if e.is_message_error() => {
                out.flush()?;
                eprintln!("call: reply {received}: {e}");
                failed += 1;
            }
            Err(e) => return Err(explain(e)),
        }
    }
    out.flush()?;
    if failed > 0 {
        return Err(format!("{failed} of {received} requests failed").into());
    }
    Ok(())
}

/// The error, with what to check when it is about the secret.
fn explain(e: Error) -> Box<dyn std::error::Error> {
    match &e {
        Error::Auth { reason, .. } if reason.is_setting() => format!(
            "{e} (the secret comes from ${} or --secret-file)",
            miniray::SECRET_ENV
        )
        .into(),
        _ => e.into(),
    }
}
