//! Chunks: one request line carrying several calls, and its one reply
//! line ([`ChunkReply`]) answering each call in order. Only a pool's own
//! closure workers speak it (see `pool/chunk.rs`).

use std::cmp::Reverse;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Call, Cause, Done, Due, TaskError, TaskId, Tasks};
use crate::error::{Error, Result};
use crate::process::deadline_after;
use crate::worker::Worker;

/// The reply to a chunk, one line (only a pool's own closure workers send
/// it, so Python peers never see it): the replies of the items that
/// succeeded, in order, then the failed ones as (index in the chunk, kind,
/// message), indices rising, then the nanoseconds the worker spent on the
/// chunk's items (what an automatic chunk size learns from: a round trip
/// on a loaded machine is mostly waiting). Replies and failures are kept
/// apart so a chunk of plain replies is a plain list on the wire, with no
/// per-item tag to encode and decode.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ChunkReply<Rep>(
    pub(crate) Vec<Rep>,
    pub(crate) Vec<(usize, String, String)>,
    pub(crate) u64,
);

impl<Rep: DeserializeOwned> Tasks<Rep> {
    /// Sends `msg`, a chunk of `ids.len()` items, as one line to `w`, with
    /// a call per item: its one reply line is a [`ChunkReply`] answering
    /// each call in order, and an error reply in its
    /// place fails every call of the chunk. Each call keeps its own
    /// deadline (from now), and a worker's end fails exactly the calls
    /// still in flight, as for plain calls.
    pub(crate) fn call_chunk_as<T: Serialize + ?Sized>(
        &mut self,
        ids: &[TaskId],
        w: Worker,
        msg: &T,
        timeout: Option<Duration>,
    ) -> Result<()> {
        if self.flights.get(&w).is_some_and(|f| f.killed) {
            return Err(Error::Closed { status: None });
        }
        self.reactor.send(w, msg)?;
        let at = timeout.and_then(deadline_after);
        let calls = &mut self.flights.entry(w).or_default().calls;
        for (i, &id) in ids.iter().enumerate() {
            // One deadline entry per chunk, its lead's: its calls share the
            // time and are answered together, and `expire` fails every call
            // past its own deadline.
            if let (Some(at), 0) = (at, i) {
                self.deadlines.push(Reverse(Due { at, id, worker: w }));
            }
            let chunk = if i == 0 { ids.len() } else { 0 };
            calls.push_back(Call {
                id,
                timeout,
                at,
                chunk,
            });
        }
        self.in_flight += ids.len();
        Ok(())
    }

    /// (first task, size, the worker's own time on its items) of each
    /// chunk answered since the last call, oldest first.
    pub(crate) fn take_chunk_work(&mut self) -> std::vec::Drain<'_, (TaskId, usize, Duration)> {
        self.chunk_work.drain(..)
    }

    /// A chunk's reply line from `w`: one outcome per call of the chunk
    /// the oldest call leads, in order.
    pub(super) fn chunk_reply(&mut self, w: Worker, reply: ChunkReply<Rep>) {
        let flight = self.flights.entry(w).or_default();
        let n = flight
            .calls
            .front()
            .map_or(0, |c| c.chunk)
            .min(flight.calls.len());
        let ChunkReply(oks, errs, nanos) = reply;
        let rising = errs.windows(2).all(|p| p[0].0 < p[1].0);
        if oks.len() + errs.len() != n || !rising || errs.last().is_some_and(|e| e.0 >= n) {
            let message = format!(
                "a chunk reply had {} replies and {} failures for {n} tasks",
                oks.len(),
                errs.len()
            );
            return self.reply(w, Err(Cause::Reply { message }));
        }
        flight.replies += 1;
        self.in_flight -= n;
        if let Some(lead) = flight.calls.front() {
            self.chunk_work
                .push((lead.id, n, Duration::from_nanos(nanos)));
        }
        let (mut oks, mut errs) = (oks.into_iter(), errs.into_iter().peekable());
        for (i, c) in flight.calls.drain(..n).enumerate() {
            let result = match errs.next_if(|e| e.0 == i) {
                Some((_, kind, message)) => Err(TaskError::new(
                    c.id,
                    Some(w),
                    Cause::Remote { kind, message },
                )),
                // Counted above: one reply per item that did not fail.
                None => match oks.next() {
                    Some(rep) => Ok(rep),
                    None => Err(TaskError::new(
                        c.id,
                        Some(w),
                        Cause::Reply {
                            message: "a chunk reply was short".into(),
                        },
                    )),
                },
            };
            self.done.push(Done {
                id: c.id,
                worker: w,
                result,
            });
        }
    }
}
