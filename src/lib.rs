//! Run work in many processes and talk to all of them from one thread.
//!
//! miniray is the Rust rendition of the Python library of the same name. A
//! [`Reactor`] is a single-threaded `mio` event loop; each local [`Worker`]
//! is a forked child joined to it by a Unix socketpair. Messages are
//! [`serde_json::Value`]s, one per line, in one of two [`Format`]s that
//! Python peers read and write unchanged: `json` and `marshal` (Python's
//! marshal version 4, base64-encoded).
//!
//! ```
//! use std::time::Duration;
//! use miniray::{Reactor, serde_json::json};
//!
//! fn main() -> miniray::Result<()> {
//!     let mut reactor = Reactor::new()?;
//!     // Four children, each answering a request with a reply.
//!     let workers: Vec<_> = (0..4)
//!         .map(|_| reactor.spawn(|msg| json!(msg["n"].as_i64().unwrap_or(0) * 2)))
//!         .collect::<Result<_, _>>()?;
//!     for (n, &w) in workers.iter().enumerate() {
//!         reactor.send(w, &json!({"n": n}))?; // never blocks
//!     }
//!     let mut replies = 0;
//!     while replies < workers.len() {
//!         for w in reactor.wait_any(Some(Duration::from_secs(10)))? {
//!             while let Some(reply) = reactor.try_recv(w)? {
//!                 assert!(reply.as_i64().is_some());
//!                 replies += 1;
//!             }
//!         }
//!     }
//!     Ok(()) // dropping the reactor closes, waits for and reaps every child
//! }
//! ```
//!
//! # The parts
//!
//! * [`framing::LineBuffer`]: incremental `\n` framing with a maximum line
//!   length ([`framing::DEFAULT_MAX_LINE`], 64 MiB, per worker with
//!   [`WorkerOptions::max_line`]).
//! * [`Format`] and [`marshal`]: the two line formats. Integers of any size
//!   stay exact and dict key order is kept in both.
//! * [`Reactor`]: the event loop, `send`/`recv`/`wait_any`, reaping.
//! * [`worker`]: spawn options, the [`Worker`] handle, the child's [`Channel`].
//!
//! # Errors
//!
//! Everything fails with [`Error`]. A malformed line fails that one message
//! ([`Error::Decode`], [`Error::LineTooLong`]); a peer that disconnects in the
//! middle of a line gives [`Error::TruncatedLine`] and then [`Error::Closed`].
//!
//! # Descriptors and scale
//!
//! A running local worker costs its parent exactly one descriptor (its end
//! of the socketpair); between hang-up and exit a child briefly holds a pidfd
//! too. Readiness comes from epoll, so there is no 1024-descriptor limit as
//! with `select()`: 10,000 workers fit under a 20,000 open-file limit. Call
//! [`raise_fd_limit`] first. An idle worker's buffers are freed, so it costs
//! the parent a few hundred bytes of memory.
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
//! # Embedding
//!
//! The reactor ([`AsRawFd`](std::os::fd::AsRawFd) on [`Reactor`]: its epoll
//! descriptor) and each worker ([`Worker::fileno`]) expose descriptors for
//! readiness. Call [`Reactor::wait_any`] with a zero timeout when one reads
//! ready, and drain what it returns. Never read from or close these
//! descriptors yourself. Use poll or epoll, never `select()`: worker
//! descriptors pass 1024 quickly.
#![deny(missing_docs, missing_debug_implementations)]
#![warn(rust_2018_idioms, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]

pub mod error;
pub mod format;
pub mod framing;
pub mod marshal;
mod reactor;
mod sys;
pub mod worker;

pub use error::{DecodeError, DecodeErrorKind, Error, Result};
pub use format::Format;
pub use reactor::{Reactor, DEFAULT_GRACE};
pub use serde_json;
pub use sys::raise_fd_limit;
pub use worker::{Channel, Worker, WorkerOptions};
