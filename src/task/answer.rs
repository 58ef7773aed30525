//! What one line from a worker means, given how the worker is spoken to and
//! what it was asked: an answer to a call (matched by id for a framed
//! worker, by position for a plain one), a settled protocol, a stray, or a
//! loss of step. Bounded by the line: a frame's header is at most
//! [`MAX_HEADER`](crate::frame::MAX_HEADER) bytes, its payload is decoded
//! once, and a chunk reply's counts are checked against its call.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::slot::{CallId, Proto};
use super::{Cause, RemoteKind};
use crate::error::Error;
use crate::format::Format;
use crate::frame::{self, quote, Kind};
use crate::inbound::Msg;

/// How a call ended.
#[derive(Debug)]
pub(crate) enum Answer<Rep> {
    /// The reply to a single request.
    One(Rep),
    /// The reply to a chunk: one outcome per item, in order.
    Chunk {
        /// The replies of the items that succeeded, in order.
        replies: Vec<Rep>,
        /// The items that failed: their index in the chunk and why.
        failures: Vec<(usize, Cause)>,
        /// The worker's own time on the items.
        work: Duration,
    },
    /// No reply: why (for a chunk, every item's cause).
    Failed(Cause),
}

/// What a line was heard as.
#[derive(Debug)]
pub(crate) enum Heard<Rep> {
    /// An accept: the worker speaks frames from now on.
    Spoke(bool),
    /// A plain answer to our hello: a plain peer (the line is dropped).
    HelloAnswered,
    /// An answer to a call that is not in flight (dropped, counted).
    Stray,
    /// Call `id` ended.
    Answer(CallId, Answer<Rep>),
    /// The worker lost step or broke the protocol: why, quoting the line.
    OutOfSync(String),
}

/// A chunk reply as it travels: replies of the items that succeeded,
/// `[index, kind, message]` of those that failed, the worker's nanoseconds.
#[derive(Deserialize)]
struct ChunkReply<Rep>(Vec<Rep>, Vec<(usize, String, String)>, u64);

/// Hears one line. `call(id, framed)` finds the call a line answers: the
/// framed call `id`, or (`framed` false) the oldest plain call, as its id
/// and its chunk's item count (0 for a single request). `plain_calls` is
/// how many plain calls are in flight and `plain_queued` how many more
/// plain lines wait behind this one: a plain peer that sent more lines than
/// it was asked for has lost step, whichever of them is the stray.
pub(crate) fn hear<Rep: DeserializeOwned>(
    proto: Proto,
    msg: &Msg,
    format: Format,
    call: impl Fn(CallId, bool) -> Option<(CallId, u32)>,
    plain_calls: usize,
    plain_queued: usize,
) -> Heard<Rep> {
    let line = msg.line();
    let (h, payload) = match frame::parse(line) {
        Ok(Some(f)) => f,
        Ok(None) => return plain(proto, line, format, call, plain_calls, plain_queued),
        Err(e) => return Heard::OutOfSync(e.to_string()),
    };
    match (proto, h.kind) {
        (Proto::Hello | Proto::Announce, Kind::Accept) => return Heard::Spoke(true),
        (Proto::Framed, k) if k.is_answer() => {}
        (_, k) => {
            return Heard::OutOfSync(format!(
                "a {k:?} frame from a worker spoken to as {proto:?}: {}",
                quote(line)
            ))
        }
    }
    let Some((id, items)) = call(h.id, true) else {
        return Heard::Stray;
    };
    let answer = match (h.kind, items) {
        (Kind::Reply, 0) => match format.decode(payload) {
            Ok(rep) => Answer::One(rep),
            Err(e) => Answer::Failed(Cause::Reply {
                message: e.to_string(),
            }),
        },
        (Kind::ChunkReply, n) if n > 0 => match format.decode::<ChunkReply<Rep>>(payload) {
            Ok(reply) => match chunk(reply, n as usize) {
                Some(answer) => answer,
                None => {
                    return Heard::OutOfSync(format!(
                        "a chunk reply that does not answer its {n} items: {}",
                        quote(line)
                    ))
                }
            },
            // One reply of the chunk that does not decode fails the chunk
            // as a whole: its items are sent again one by one.
            Err(e) => Answer::Failed(Cause::Reply {
                message: e.to_string(),
            }),
        },
        (Kind::Error, _) => match format.decode::<Vec<String>>(payload) {
            Ok(mut parts) if (2..=3).contains(&parts.len()) => {
                let trace = (parts.len() == 3).then(|| parts.pop()).flatten();
                let message = parts.pop().unwrap_or_default();
                let kind = parts.pop().unwrap_or_default();
                Answer::Failed(Cause::Remote {
                    kind: RemoteKind::from_wire(&kind),
                    message,
                    trace,
                })
            }
            _ => {
                return Heard::OutOfSync(format!(
                    "an error frame that is not [kind, message]: {}",
                    quote(line)
                ))
            }
        },
        (kind, _) => {
            return Heard::OutOfSync(format!(
                "a {kind:?} frame for a call of {items} items: {}",
                quote(line)
            ))
        }
    };
    Heard::Answer(id, answer)
}

/// A plain line: the oldest plain call's answer, if it can be.
fn plain<Rep: DeserializeOwned>(
    proto: Proto,
    line: &[u8],
    format: Format,
    call: impl Fn(CallId, bool) -> Option<(CallId, u32)>,
    plain_calls: usize,
    plain_queued: usize,
) -> Heard<Rep> {
    if proto == Proto::Hello {
        return Heard::HelloAnswered;
    }
    let Some((id, _)) = call(0, false) else {
        return Heard::OutOfSync(format!(
            "a line with no request waiting for it: {}",
            quote(line)
        ));
    };
    if 1 + plain_queued > plain_calls {
        return Heard::OutOfSync(format!(
            "{} lines for {plain_calls} {}; the first: {}",
            1 + plain_queued,
            if plain_calls == 1 {
                "request"
            } else {
                "requests"
            },
            quote(line)
        ));
    }
    if let Some(Error::Remote { kind, message }) = crate::remote_error::parse(line) {
        return Heard::Answer(
            id,
            Answer::Failed(Cause::Remote {
                kind: RemoteKind::from_wire(&kind),
                message,
                trace: None,
            }),
        );
    }
    match format.decode(line) {
        Ok(rep) => Heard::Answer(id, Answer::One(rep)),
        Err(e) => Heard::OutOfSync(format!(
            "a line that is not the reply ({e}): {}",
            quote(line)
        )),
    }
}

/// A chunk reply's outcomes, if its counts answer `n` items exactly.
fn chunk<Rep>(reply: ChunkReply<Rep>, n: usize) -> Option<Answer<Rep>> {
    let ChunkReply(replies, failed, nanos) = reply;
    let rising = failed.windows(2).all(|p| p[0].0 < p[1].0);
    if replies.len() + failed.len() != n || !rising || failed.last().is_some_and(|f| f.0 >= n) {
        return None;
    }
    let failures = failed
        .into_iter()
        .map(|(i, kind, message)| {
            let cause = Cause::Remote {
                kind: RemoteKind::from_wire(&kind),
                message,
                trace: None,
            };
            (i, cause)
        })
        .collect();
    Some(Answer::Chunk {
        replies,
        failures,
        work: Duration::from_nanos(nanos),
    })
}
