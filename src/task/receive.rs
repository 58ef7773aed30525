//! The receive side of the calls layer: each worker's queued items taken
//! and heard (an answer matched to its call, a settled protocol, a stray, a
//! loss of step, a failed line, an end), a plain local worker's lines held
//! until it waits for input again.

use std::time::Instant;

use serde::de::DeserializeOwned;

use super::answer::{self, Answer, Heard};
use super::calls::{Calls, Event};
use super::slot::{CallId, Proto, Stop, SETTLE_MAX};
use super::Cause;
use crate::error::Error;
use crate::frame;
use crate::reactor::Incoming;
use crate::worker::Worker;

impl<Rep, S> Calls<Rep, S> {
    /// Takes every item queued for `w`, matching answers to calls.
    pub(super) fn drain(&mut self, w: Worker)
    where
        Rep: DeserializeOwned,
    {
        loop {
            if !self.settled(w) {
                return;
            }
            let item = match self.reactor.take_incoming(w) {
                Ok(Some(item)) => item,
                Ok(None) => return,
                // Gone from the reactor without a `Closed` we saw.
                Err(_) => return self.ended(w, None),
            };
            match item {
                Incoming::Line(msg) => self.line(w, msg),
                Incoming::Failed(e) => self.failed_line(w, e),
                Incoming::Exited(status) => {
                    // Gone, though a descendant holds the socket: nothing
                    // more will answer. Close it so `Closed` follows.
                    if let Some(slot) = self.slots.get_mut(w) {
                        slot.stopped.get_or_insert(Stop::Exited);
                    }
                    let kind = self.slots.get(w).and_then(|s| s.kind);
                    self.fail_all(w, |_| Cause::WorkerLost { status, kind });
                    let _ = self.reactor.close(w);
                }
                Incoming::Closed(status) => return self.ended(w, status),
            }
        }
    }

    /// Whether `w`'s queued lines may be taken now. A plain peer answers
    /// by position, and the line it wrote last before it waits for its
    /// next request is its answer: a local plain worker's lines are taken
    /// only once it waits for input (`/proc/PID/syscall`), so every line it
    /// wrote for the request is in, and a stray line (a `print`) is seen as
    /// one line too many, never taken for the answer. A worker that does
    /// not go quiet within [`SETTLE_MAX`], or whose state cannot be read,
    /// has its lines taken as they stand.
    fn settled(&mut self, w: Worker) -> bool {
        let Some(slot) = self.slots.get_mut(w) else {
            return true;
        };
        let waiting = slot.stopped.is_none() && slot.calls.iter().any(|c| !c.framed);
        let Some(pid) = slot
            .pid
            .filter(|_| waiting && self.reactor.queued_plain_lines(w) > 0)
        else {
            slot.settling = None;
            return true;
        };
        let now = Instant::now();
        let since = *slot.settling.get_or_insert(now);
        match crate::sys::waits_for_input(pid) {
            Some(true) => {
                slot.settling = None;
                // What it wrote before it went quiet.
                self.reactor.read_conn(w);
                true
            }
            Some(false) if now.duration_since(since) < SETTLE_MAX => {
                if !self.settling.contains(&w) {
                    self.settling.push(w);
                }
                false
            }
            _ => {
                slot.settling = None;
                true
            }
        }
    }

    /// One line from `w`.
    fn line(&mut self, w: Worker, msg: crate::inbound::Msg)
    where
        Rep: DeserializeOwned,
    {
        let format = match self.reactor.format(w) {
            Ok(f) => f,
            Err(_) => return,
        };
        // Plain lines waiting behind this one, counted only for a plain line.
        let queued = if msg.line().first() == Some(&b'#') {
            0
        } else {
            self.reactor.queued_plain_lines(w)
        };
        let Some(slot) = self.slots.get_mut(w) else {
            return;
        };
        if slot.stopped.is_some() {
            // What a stopped worker still sends answers no one.
            self.strays += 1;
            return;
        }
        let plain_calls = slot.calls.iter().filter(|c| !c.framed).count();
        let calls = &slot.calls;
        let find = |id: CallId, framed: bool| {
            calls
                .iter()
                .find(|c| c.framed == framed && (!framed || c.id == id))
                .map(|c| (c.id, c.items))
        };
        let heard = answer::hear(slot.proto, &msg, format, find, plain_calls, queued);
        match heard {
            Heard::Spoke(framed) => {
                slot.proto = if framed { Proto::Framed } else { Proto::Plain };
                self.events.push(Event::Spoke { worker: w, framed });
            }
            Heard::HelloAnswered => {
                slot.proto = Proto::Plain;
                self.events.push(Event::Spoke {
                    worker: w,
                    framed: false,
                });
            }
            Heard::Stray => self.strays += 1,
            Heard::Answer(id, answer) => {
                slot.answers += 1;
                self.finish(w, id, answer);
            }
            Heard::OutOfSync(reason) => self.lost_step(w, reason),
        }
    }

    /// A line that failed before it could be read.
    fn failed_line(&mut self, w: Worker, e: Error) {
        let Some(slot) = self.slots.get_mut(w) else {
            return;
        };
        if slot.stopped.is_some() {
            return;
        }
        match e {
            // The peer hung up mid-line: no answer, `Closed` follows.
            Error::TruncatedLine { .. } => {}
            Error::LineTooLong { ref start, .. } => {
                let message = e.to_string();
                // Whose answer was it? A frame's header names its call;
                // a plain peer's line is its oldest call's.
                let call = match frame::parse(start) {
                    Ok(Some((h, _))) if h.kind.is_answer() => {
                        slot.calls.iter().find(|c| c.framed && c.id == h.id)
                    }
                    Ok(None) => slot.calls.iter().find(|c| !c.framed),
                    _ => None,
                }
                .map(|c| c.id);
                match call {
                    Some(id) => {
                        slot.answers += 1;
                        self.finish(w, id, Answer::Failed(Cause::Reply { message }));
                    }
                    None => self.lost_step(w, format!("an answer no call waits for: {message}")),
                }
            }
            e if e.is_message_error() => {
                // A line whose descriptors were unusable, say: it was a
                // plain peer's answer, or it breaks the protocol.
                let message = e.to_string();
                match slot.calls.iter().find(|c| !c.framed).map(|c| c.id) {
                    Some(id) if !slot.framed() => {
                        slot.answers += 1;
                        self.finish(w, id, Answer::Failed(Cause::Reply { message }));
                    }
                    _ => self.lost_step(w, message),
                }
            }
            e => {
                // No answer and no end: the connection is unusable.
                let message = e.to_string();
                self.stop(w, Stop::Broken, |_| Cause::Connection {
                    message: message.clone(),
                });
                if let Some(slot) = self.slots.get_mut(w) {
                    slot.broke.get_or_insert(e);
                }
            }
        }
    }

    /// Call `id` of `w` ended with `answer`.
    fn finish(&mut self, w: Worker, id: CallId, answer: Answer<Rep>) {
        let Some(slot) = self.slots.get_mut(w) else {
            return;
        };
        let Some(i) = slot.calls.iter().position(|c| c.id == id) else {
            self.strays += 1;
            return;
        };
        slot.calls.remove(i);
        self.in_flight -= 1;
        self.events.push(Event::Done {
            worker: w,
            call: id,
            answer,
            answers: slot.answers,
        });
    }

    /// `w` lost step: stopped, its calls retried elsewhere.
    fn lost_step(&mut self, w: Worker, reason: String) {
        self.out_of_sync += 1;
        self.stop(w, Stop::OutOfSync, |_| Cause::OutOfSync {
            reason: reason.clone(),
        });
        self.last_out_of_sync = Some(reason);
    }
}
