//! miniray inside tokio: the reactor's fd is wrapped in `AsyncFd`, and a
//! tokio TCP listener's requests are answered by miniray workers.
//!
//! `cargo run --example embed_tokio` starts the server on 127.0.0.1 (an
//! ephemeral port), runs a small client against it, prints the replies and
//! exits. `-- --serve` keeps serving instead: try `nc 127.0.0.1 PORT`.
//!
//! Workers are spawned before the runtime starts, while the process has one
//! thread (fork and threads: see the crate docs).

use std::collections::VecDeque;
use std::time::Duration;

use miniray::{Reactor, Worker};
use serde_json::{json, Value};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// A request from a connection task to the reactor task.
struct Job {
    line: String,
    reply: oneshot::Sender<Value>,
}

#[path = "common/args.rs"]
mod args;

const USAGE: &str = "\
usage: embed_tokio [--serve]
  --serve   keep serving TCP requests until killed (default: send four requests itself, then exit)
";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut serve_forever = false;
    let mut args = args::Args::new("embed_tokio", USAGE);
    while let Some(flag) = args.next_flag() {
        match flag.as_str() {
            "--serve" => serve_forever = true,
            _ => args.unknown(&flag),
        }
    }
    let mut reactor = Reactor::new()?;
    let workers = (0..4)
        .map(|_| {
            reactor.spawn(|v: Value| {
                let text = v.as_str().unwrap_or("");
                json!({"words": text.split_whitespace().count(), "pid": std::process::id()})
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        println!("listening on {addr}");
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>(1024);
        tokio::spawn(reactor_task(reactor, workers, jobs_rx));
        let accept = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    break;
                };
                tokio::spawn(connection(sock, jobs_tx.clone()));
            }
        });
        if serve_forever {
            accept.await?;
            return Ok(());
        }
        client(addr).await
    })
}

/// Owns the reactor: sends jobs to workers round-robin, routes replies back.
async fn reactor_task(reactor: Reactor, workers: Vec<Worker>, mut jobs: mpsc::Receiver<Job>) {
    // SAFETY: the reactor owns its epoll descriptor for its whole life and
    // `as_raw_fd` always returns that same descriptor.
    let registered = unsafe { AsyncFd::register_with_interest(reactor, Interest::READABLE) };
    let mut afd = match registered {
        Ok(afd) => afd,
        Err(e) => {
            eprintln!("cannot watch the reactor: {e}");
            return;
        }
    };
    let mut waiting: Vec<VecDeque<oneshot::Sender<Value>>> =
        workers.iter().map(|_| VecDeque::new()).collect();
    let mut next = 0;
    loop {
        tokio::select! {
            job = jobs.recv() => {
                let Some(job) = job else { return };
                let i = next % workers.len();
                next += 1;
                let reactor = afd.get_mut();
                // send writes through; what the socket does not take is
                // written when the reactor's descriptor turns ready.
                if reactor.send(workers[i], &json!(job.line)).is_ok() {
                    waiting[i].push_back(job.reply);
                }
            }
            guard = afd.readable_mut() => {
                let Ok(mut guard) = guard else { return };
                let reactor = guard.get_inner_mut();
                let ready = reactor.wait_any(Some(Duration::ZERO)).unwrap_or_default();
                for w in ready {
                    let Some(i) = workers.iter().position(|&x| x == w) else { continue };
                    while let Ok(Some(reply)) = reactor.try_recv(w) {
                        if let Some(tx) = waiting[i].pop_front() {
                            let _ = tx.send(reply);
                        }
                    }
                }
                // The reactor re-arms its fd while work is queued, so clearing
                // here never strands a reply.
                guard.clear_ready();
            }
        }
    }
}

/// One TCP client: each line in, one JSON line out.
async fn connection(sock: TcpStream, jobs: mpsc::Sender<Job>) {
    let (rd, mut wr) = sock.into_split();
    let mut lines = BufReader::new(rd).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let (tx, rx) = oneshot::channel();
        if jobs.send(Job { line, reply: tx }).await.is_err() {
            return;
        }
        let Ok(reply) = rx.await else { return };
        if wr.write_all(format!("{reply}\n").as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn client(addr: std::net::SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let sock = TcpStream::connect(addr).await?;
    let (rd, mut wr) = sock.into_split();
    let mut replies = BufReader::new(rd).lines();
    for text in [
        "one",
        "two words",
        "three little words",
        "and now four words",
    ] {
        wr.write_all(format!("{text}\n").as_bytes()).await?;
        let reply = tokio::time::timeout(Duration::from_secs(10), replies.next_line())
            .await??
            .ok_or("server closed")?;
        println!("{text:?} -> {reply}");
    }
    Ok(())
}
