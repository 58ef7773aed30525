//! Run work in many processes and talk to all of them from one thread.
//!
//! miniray is the Rust rendition of the Python library of the same name. A
//! [`Reactor`] is a single-threaded `mio` event loop; each local [`Worker`]
//! is a forked child joined to it by a Unix socketpair. A message is any
//! serde type, one per line, in one of two [`Format`]s that Python peers
//! read and write unchanged: `json` (exactly Python's `json` module) and
//! `marshal` (Python's marshal version 4, base64-encoded).
//!
//! ```
//! use std::time::Duration;
//! use miniray::Reactor;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Job {
//!     n: i64,
//! }
//!
//! fn main() -> miniray::Result<()> {
//!     let mut reactor = Reactor::new()?;
//!     // Four children, each answering a Job with a number.
//!     let workers: Vec<_> = (0..4)
//!         .map(|_| reactor.spawn(|job: Job| job.n * 2))
//!         .collect::<Result<_, _>>()?;
//!     for (n, &w) in workers.iter().enumerate() {
//!         reactor.send(w, &Job { n: n as i64 })?; // never blocks
//!     }
//!     let (mut replies, mut total) = (0, 0);
//!     while replies < workers.len() {
//!         for w in reactor.wait_any(Some(Duration::from_secs(10)))? {
//!             while let Some(doubled) = reactor.try_recv::<i64>(w)? {
//!                 total += doubled;
//!                 replies += 1;
//!             }
//!         }
//!     }
//!     assert_eq!(total, 2 * (0 + 1 + 2 + 3));
//!     Ok(()) // dropping the reactor closes, waits for and reaps every child
//! }
//! ```
//!
//! # Messages
//!
//! Anything `Serialize` can be sent and anything `DeserializeOwned` can be
//! received; it goes straight between your type and the line, with no
//! value tree in between. A struct is a Python dict with str keys, a tuple
//! a tuple, a `Vec` a list, an `Option` a value or `None` (the README's
//! table maps every Python type). [`Value`] is the type for messages whose
//! shape you do not know: Python's data model exactly (ints of any size,
//! tuples, bytes, sets, complex, dicts with any keys, strings with lone
//! surrogates), built with the [`py!`] macro.
//!
//! Received lines wait as bytes and are decoded when you take them
//! ([`Reactor::recv`], [`Reactor::try_recv`], [`Channel::recv`]), into the
//! type you ask for: a message that does not fit it fails alone with
//! [`Error::Decode`] ([`DecodeErrorKind::Mismatch`], naming what was found
//! and where), and the next call reads the next message. So one worker can
//! answer with different types, and you choose per call.
//!
//! # The parts
//!
//! * [`framing::LineBuffer`]: incremental `\n` framing with a maximum line
//!   length ([`framing::DEFAULT_MAX_LINE`], 64 MiB; per connection with
//!   [`WorkerOptions::max_line`], [`ConnectOptions::max_line`] or
//!   [`ServerOptions::max_line`]).
//! * [`Format`], [`json`] and [`marshal`]: the two line formats, serde data
//!   formats of their own ([`json::to_vec`], [`marshal::from_slice`], ...).
//! * [`value`]: [`Value`], Python's values.
//! * [`Reactor`]: the event loop, `send`/`recv`/`wait_any`, reaping.
//! * [`worker`]: local spawn options ([`WorkerOptions`]), the [`Worker`]
//!   handle, the child's [`Channel`], [`Exec`] workers (any program that
//!   reads and writes lines).
//! * [`process`]: every exit code a miniray child can end with (`EXIT_PANIC`,
//!   `EXIT_IDLE`, ...), in one place.
//! * [`shm`]: [`SharedMemory`], sealed memfd regions inherited at spawn
//!   ([`WorkerOptions::region`]) or sent with a message
//!   ([`Reactor::send_regions`], [`Channel::send_regions`]) as descriptors.
//! * [`remote`]: TCP in the same reactor. [`Reactor::connect`] makes a
//!   remote worker: a [`Worker`] like a local one (same
//!   `send`/`recv`/`wait_any`), set up with [`ConnectOptions`];
//!   [`Reactor::listen`] makes a [`Server`] that forks a child per accepted
//!   connection, set up with [`ServerOptions`]. Same protocol, same
//!   formats, and Python peers of the original library on either side.
//!   [`Secret`] turns on mutual authentication of TCP peers, each line
//!   after it bound to the handshake (tagged, or encrypted with
//!   [`ConnectOptions::encrypt`]); off by default. Failures are
//!   [`Error::Auth`] naming the peer and an [`AuthFailure`].
//!
//! # Errors
//!
//! Everything fails with [`Error`], and nothing fails silently. A malformed
//! line, or one that does not fit the type asked for, fails that one
//! message ([`Error::Decode`], [`Error::LineTooLong`]); a peer that
//! disconnects in the middle of a line gives [`Error::TruncatedLine`] and
//! then [`Error::Closed`], whose status reads as "exited with 101
//! (panicked)" or "killed by SIGKILL". A worker that cannot answer a
//! request (its closure panicked, the request did not decode) says so in
//! place of the reply, and `recv` returns [`Error::Remote`] with the
//! worker's words (see [`worker`](crate::worker#errors-from-a-worker)).
//!
//! # Tasks and pools
//!
//! [`Pool`] runs one function on N local workers: [`Pool::map`] yields
//! results in input order as they come, holding a bounded window of tasks
//! whatever the input's length ([`Pool::map_unordered`], [`Pool::submit`]
//! and [`Pool::get`] too). A try whose worker is lost (killed, crashed)
//! or whose deadline passes (the worker is killed) runs again on another
//! worker, up to [`PoolOptions::max_retries`]; then the task fails with a
//! [`TaskError`] naming every try's cause. A panic fails its task at once
//! with the panic's message (retried only with
//! [`PoolOptions::retry_panics`]). Ended workers are
//! replaced; dropping the pool leaves no child behind.
//!
//! ```
//! use std::time::Duration;
//! use miniray::{Pool, PoolOptions};
//!
//! fn main() -> miniray::Result<()> {
//!     let opts = PoolOptions::new()
//!         .workers(4)
//!         .timeout(Duration::from_secs(5)) // too slow: worker killed, task retried
//!         .max_retries(2); // then it fails, naming each try's cause
//!     let mut pool = Pool::new(&opts, |n: u64| n * n)?;
//!     for (n, result) in (0u64..).zip(pool.map(0..1000u64)) {
//!         match result {
//!             Ok(square) => assert_eq!(square, n * n),
//!             Err(e) => eprintln!("{e}"), // task 7 failed 3 times: (1) on worker 3: ...
//!         }
//!     }
//!     Ok(())
//! }
//! ```
//!
//! Underneath, each try is one call to one worker, matched to its answer
//! by the id its frame carries (the pool's own workers, Rust hosts, the
//! Python worker helper: see `PROTOCOL.md`) or, for a plain peer, by
//! position, taken only once the peer waits for its next request: a stray
//! line makes the worker lose step (recycled, its tasks run again), never
//! reach a task. A worker's life comes from facts (its exit, its hang-up,
//! a stop of the pool's), never from what it answers.
//!
//! The same pool runs local workers ([`Pool::new`], [`Pool::fallible`]),
//! programs ([`Pool::exec`]), remote hosts ([`Pool::remote`] over
//! [`pool::Hosts`]) or a mix ([`Pool::builder`]); tiny tasks travel in
//! chunks ([`PoolOptions::chunk_size`]). [`PoolHandle`] is a pool on a
//! thread of its own, `Send + Sync + Clone`, whose calls are futures (any
//! runtime) and blocking waits alike.
//!
//! # Timeouts
//!
//! Every call that blocks takes the same kind of bound, `timeout:
//! Option<Duration>`: `None` waits without limit, `Some(Duration::ZERO)`
//! only looks, and a duration too long to be a deadline (`Duration::MAX`)
//! is the same as `None`. What "nothing came in time" looks like depends
//! on what the call waits for:
//!
//! * for **one thing** ([`Reactor::recv`], [`Reactor::recv_regions`],
//!   [`Reactor::connect`]): [`Error::Timeout`], since there is no value to
//!   return;
//! * for **whatever is ready** ([`Reactor::wait_any`],
//!   [`Reactor::wait_any_into`], [`Reactor::wait_events`],
//!   [`Reactor::wait_events_into`]): an empty list, a normal answer (the
//!   non-blocking step of an embedding returns one most of the time).
//!
//! Limits that are set once and then apply to every connection are plain
//! `Duration`s on the option builders (not calling the builder means no
//! limit): [`ServerOptions::idle_timeout`], [`ServerOptions::auth_timeout`],
//! [`ServerOptions::accept_backoff`], [`Reactor::set_grace`].
//! [`Channel::set_idle_timeout`] is a setter, so it takes an `Option`
//! (`None` clears it).
//!
//! # Descriptors and scale
//!
//! A running closure worker costs its parent exactly one descriptor (its end
//! of the socketpair); between hang-up and exit a child briefly holds a pidfd
//! too. An exec worker also has a pidfd from spawn (so its exit is seen even
//! while a background job holds its socket), while descriptors are
//! plentiful: see [`Reactor`]'s contract. Readiness comes from epoll, so there is no 1024-descriptor limit as
//! with `select()`: 10,000 workers fit under a 20,000 open-file limit. Call
//! [`raise_fd_limit`] first. An idle worker's buffers are freed, so it costs
//! the parent under 1 KiB of heap (891 B measured at 10,000 workers; see the
//! README's table).
//!
//! # Fork and threads
//!
//! Spawning forks the calling process. In the child only the forking thread
//! exists; the child closes every inherited descriptor from 3 up except its
//! socket and those listed with [`WorkerOptions::keep_fd`] (so it never holds
//! another worker's socket or the epoll descriptor), sets
//! `PR_SET_PDEATHSIG` and exits at once if the parent is already gone, runs
//! the work function (catching a panic) and leaves with `_exit`.
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked exits: spawn from a
//! thread that lives as long as its workers. Under `cargo test`, which runs
//! each test on its own thread, a test's workers die with that test's thread.
//!
//! Locks held by the parent's other threads at the fork stay held in the
//! child forever. Up to your work function the child takes none, and a
//! panic in it does not wait for the backtrace lock: miniray installs a
//! panic hook (once, chaining to the previous one in the parent) that writes
//! with a raw `write(2)` in workers. Your own code in a worker must not take
//! a lock another thread could hold (`println!` takes stdout's). The exact
//! guarantees, and how to kill a worker that never answers, are in
//! [`worker`].
//!
//! # Embedding
//!
//! miniray can live inside an event loop you already have (tokio, calloop,
//! glib, a hand-written `poll(2)` loop). The contract:
//!
//! * **The reactor's descriptor** ([`AsRawFd`](std::os::fd::AsRawFd) /
//!   [`AsFd`](std::os::fd::AsFd) on [`Reactor`]: its epoll descriptor) reads
//!   ready whenever [`Reactor::wait_any`] or [`Reactor::wait_events`] has
//!   something to return, including messages already decoded and queued but
//!   not yet returned, which epoll alone would not signal. Asking for the
//!   descriptor switches on an eventfd wake-up for exactly that: each wait
//!   that returns work writes it (as do [`Reactor::recv`], whatever it
//!   returns, [`Reactor::connect`], [`Reactor::stop_server`] and
//!   [`Reactor::shutdown`], which may read or queue events for others), so
//!   an edge-triggered loop (mio, tokio's
//!   `AsyncFd`) gets a fresh edge and a level-triggered one (`poll`,
//!   `select`-style) sees the descriptor readable until the next wait finds
//!   nothing. Spurious wake-ups happen (one when the deadline of a wait of
//!   100 ms or more passes after that wait returned); a wait that finds
//!   nothing clears them.
//! * **Sending writes through**: [`Reactor::send`] writes the line at once
//!   (one non-blocking `send(2)`) when nothing is queued ahead of it, so a
//!   request sent before the loop's first step is already on its way. What
//!   the socket does not take stays queued in order behind it, and the
//!   socket's `WRITABLE` readiness, registered by the write that stopped
//!   short, makes the reactor's descriptor ready; the next step writes it.
//!   No flush call is needed in an embedding ([`Reactor::flush`] writes
//!   everything queued now, if you want it out before your loop turns).
//!   For throughput with many small messages, send them in a
//!   [`Reactor::batch`]: held back while it lives, written together (one
//!   `send(2)` per worker) when it drops.
//! * **The non-blocking step** is `wait_events(Some(Duration::ZERO))` (or
//!   `wait_any`, below): flush queued output, one `epoll_wait` with no
//!   timeout, return one stream of [`Event`]s: [`Event::Worker`] for a worker
//!   with messages or state changes queued (drain it with `try_recv`),
//!   [`Event::Server`] for what a server did, [`Event::User`] for your own
//!   sources. Call it when the descriptor is ready.
//! * **Workers only**: `wait_any(Some(Duration::ZERO))` returns just the
//!   ready workers, the common case. A new server or user event also ends
//!   its wait (perhaps with no worker) but stays queued: take it with
//!   [`Reactor::take_server_events`] / [`Reactor::take_user_events`] after
//!   that `wait_any`, or with the next `wait_events`, which takes every
//!   queued event. Events a `wait_any` announced and left untaken neither
//!   end later `wait_any`s nor keep the descriptor readable.
//! * **Your own sources** can share the reactor: register them with
//!   [`Reactor::register_source`] under a [`Token`] below
//!   [`USER_TOKEN_LIMIT`] (miniray's tokens never are); they come as
//!   [`Event::User`] (or from `take_user_events`). Or register the reactor's
//!   descriptor in your own mio or calloop loop, as
//!   `examples/embed_tokio.rs` does with tokio's `AsyncFd`.
//! * **A worker's descriptor** ([`Worker::fileno`]) is for readiness only:
//!   never read from, write to or close it; miniray owns it. After the
//!   worker hangs up the descriptor is closed and its number may be reused,
//!   so stop watching it when its `Closed` event arrives (or when you call
//!   [`Reactor::close`] and no longer care for replies).
//! * Use poll or epoll, never `select()`: worker descriptors pass 1024 quickly.
//!
//! In tokio (current-thread here): the reactor's descriptor is its epoll
//! descriptor, the same for the reactor's whole life and closed only when
//! the reactor is dropped, which is what tokio's `AsyncFd::register` asks
//! its caller to promise. With the cargo feature `tokio`,
//! `Reactor::into_async_fd()` makes this registration for you, and your code
//! needs no `unsafe`; without it, as below:
//!
//! ```
//! use std::time::Duration;
//! use miniray::Reactor;
//! use tokio::io::{unix::AsyncFd, Interest};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut reactor = Reactor::new()?;
//! let w = reactor.spawn(|n: u64| n + 1)?;
//! reactor.send(w, &41u64)?; // already written: no flush, no wait needed
//! // SAFETY: the reactor owns its epoll descriptor for its whole life and
//! // `as_raw_fd` always returns that same descriptor; the `AsyncFd` owns
//! // the reactor, so it deregisters before the descriptor is closed.
//! let registered = unsafe { AsyncFd::register_with_interest(reactor, Interest::READABLE) };
//! let mut fd = registered.unwrap_or_else(|e| panic!("cannot watch the reactor: {e}"));
//! let reply = 'outer: loop {
//!     let mut ready = fd.readable_mut().await?;
//!     let reactor = ready.get_inner_mut();
//!     // The non-blocking step; then take what it found.
//!     for w in reactor.wait_any(Some(Duration::ZERO))? {
//!         if let Some(n) = reactor.try_recv::<u64>(w)? {
//!             break 'outer n;
//!         }
//!     }
//!     ready.clear_ready();
//! };
//! assert_eq!(reply, 42);
//! # Ok(())
//! # }
//! ```
//!
//! Examples: `examples/embed_poll.rs` (a `poll(2)` loop over stdin and the
//! reactor) and `examples/embed_tokio.rs` (tokio TCP requests answered by
//! miniray workers).
#![deny(missing_docs, missing_debug_implementations)]
#![warn(rust_2018_idioms, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod auth;
mod channel;
mod client;
pub mod cluster;
mod conn;
mod envelope;
pub mod error;
mod error_path;
mod fork;
pub mod format;
mod format_kind;
pub mod frame;
pub mod framing;
mod inbound;
pub mod json;
mod list_writer;
mod listener;
pub mod marshal;
mod options;
pub mod pool;
pub mod process;
mod reactor;
mod registry;
mod remote_error;
mod serve;
mod server;
pub mod shm;
mod sys;
pub mod task;
mod token;
pub mod value;
pub mod worker;

/// TCP in one place: the server side ([`Server`], made by
/// [`Reactor::listen`] and its kin, its [`ServerOptions`] and
/// [`ServerEvent`]s) and the client side ([`ConnectOptions`] for
/// [`Reactor::connect`], which makes a remote [`Worker`]).
pub mod remote {
    pub use crate::client::{ConnectOptions, Keepalive};
    pub use crate::listener::{
        Server, ServerEvent, ServerOptions, DEFAULT_ACCEPT_BACKOFF, DEFAULT_MAX_CONNECTIONS,
    };
}

pub use auth::{Secret, MIN_SECRET_LEN, SECRET_ENV};
/// Plain-old-data casts, re-exported for [`SharedMemory::view`]'s `Pod`
/// bound (the version miniray uses).
pub use bytemuck;
pub use client::{ConnectOptions, Keepalive};
pub use error::{AuthFailure, DecodeError, DecodeErrorKind, Error, Result};
pub use format::Format;
pub use listener::{Server, ServerEvent, ServerOptions};
pub use mio::{Interest, Token};
/// The big integers of [`Value::BigInt`], re-exported so its version is
/// always the one miniray uses.
pub use num_bigint;
pub use pool::{Hosts, Pool, PoolHandle, PoolOptions, PoolStats};
pub use process::Signal;
pub use reactor::{Batch, Event, Reactor, UserEvent, DEFAULT_GRACE, USER_TOKEN_LIMIT};
pub use shm::SharedMemory;
pub use sys::raise_fd_limit;
pub use task::{Cause, RemoteKind, TaskError, TaskId};
pub use value::{Dict, Set, SurrogateStr, Value};
pub use worker::{Channel, Exec, Worker, WorkerOptions};
