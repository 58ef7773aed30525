//! Call deadlines: a heap of (time, call, worker), earliest first; when
//! one passes, the answers already received are taken, then the worker is
//! stopped and its calls fail (`Deadline` for each past its own, the others
//! victims). Entries of finished calls stay until they come up or the heap
//! is rebuilt (when they outnumber the calls in flight).

use std::cmp::Reverse;
use std::time::Instant;

use serde::de::DeserializeOwned;

use super::calls::Calls;
use super::slot::{CallId, Stop};
use super::{Cause, TaskId};
use crate::worker::Worker;

impl<Rep, S> Calls<Rep, S> {
    /// Stops the workers of calls whose deadline passed by `now`.
    pub(super) fn expire(&mut self, now: Instant)
    where
        Rep: DeserializeOwned,
    {
        while let Some(Reverse(due)) = self.deadlines.peek() {
            if due.at > now {
                break;
            }
            let (id, w) = (due.call, due.worker);
            self.deadlines.pop();
            if !self.is_in_flight(w, id) {
                continue;
            }
            // Answers already here are taken first, each by its call.
            self.drain(w);
            if !self.is_in_flight(w, id) {
                continue;
            }
            let Some(slot) = self.slots.get_mut(w) else {
                continue;
            };
            // Every call past its own deadline fails with `Deadline`; the
            // others are victims of call `id`.
            let causes: Vec<(CallId, Cause)> = slot
                .calls
                .iter()
                .map(|c| {
                    let cause = match c.timeout {
                        Some(timeout) if c.id == id || c.at.is_some_and(|at| at <= now) => {
                            Cause::Deadline { timeout }
                        }
                        _ => Cause::KilledForDeadline { task: TaskId(id) },
                    };
                    (c.id, cause)
                })
                .collect();
            self.stop(w, Stop::Deadline, |call| {
                causes.iter().find(|(c, _)| *c == call).map_or(
                    Cause::KilledForDeadline { task: TaskId(id) },
                    |(_, cause)| cause.clone(),
                )
            });
        }
        // Entries of finished calls pile up with a long timeout: rebuild
        // when they outnumber the calls in flight, so memory stays flat.
        if self.deadlines.len() > 2 * self.in_flight + 64 {
            let slots = &self.slots;
            self.deadlines.retain(|Reverse(due)| {
                slots.get(due.worker).is_some_and(|s| {
                    s.stopped.is_none() && s.calls.iter().any(|c| c.id == due.call)
                })
            });
        }
    }

    fn is_in_flight(&self, w: Worker, id: CallId) -> bool {
        self.slots
            .get(w)
            .is_some_and(|s| s.stopped.is_none() && s.calls.iter().any(|c| c.id == id))
    }
}
