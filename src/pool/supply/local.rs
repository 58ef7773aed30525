//! Local workers: forked closure workers, or an exec'd program, kept at a
//! size; a supply that gives up after workers in a row end before their
//! first answer (or fail to spawn).

use std::fmt;
use std::time::Instant;

use super::{End, Outlook, Started, Supply};
use crate::error::Result;
use crate::process::{describe_as, ChildKind};
use crate::reactor::Reactor;
use crate::task::calls::{Proto, Stop};
use crate::worker::Worker;

/// Makes one worker.
pub(crate) type Spawner = Box<dyn FnMut(&mut Reactor) -> Result<Worker>>;

/// A local supply (see the module docs).
pub(crate) struct Local {
    spawn: Spawner,
    /// How its workers are spoken to first: frames for the pool's own,
    /// plain until announced for a program.
    proto: Proto,
    kind: ChildKind,
    size: usize,
    alive: usize,
    start_failures: u32,
    max_start_failures: u32,
    last_failure: String,
    stopped: bool,
}

impl fmt::Debug for Local {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Local")
            .field("proto", &self.proto)
            .field("size", &self.size)
            .field("alive", &self.alive)
            .field("start_failures", &self.start_failures)
            .finish_non_exhaustive()
    }
}

impl Local {
    pub(crate) fn new(
        spawn: Spawner,
        proto: Proto,
        kind: ChildKind,
        size: usize,
        max_start_failures: u32,
    ) -> Self {
        Local {
            spawn,
            proto,
            kind,
            size,
            alive: 0,
            start_failures: 0,
            max_start_failures: max_start_failures.max(1),
            last_failure: String::new(),
            stopped: false,
        }
    }

    /// Spawns one worker now (a pool's first ones: an error is the pool's).
    pub(crate) fn spawn_one(&mut self, reactor: &mut Reactor) -> Result<Started> {
        let worker = (self.spawn)(reactor)?;
        self.alive += 1;
        Ok(Started {
            worker,
            proto: self.proto,
            host: None,
            kind: Some(self.kind),
        })
    }

    /// Workers it keeps.
    pub(crate) fn size(&self) -> usize {
        self.size
    }
}

impl Supply for Local {
    fn is_local(&self) -> bool {
        true
    }

    fn top_up(&mut self, reactor: &mut Reactor, _now: Instant, started: &mut Vec<Started>) {
        while !self.stopped
            && self.alive < self.size
            && self.start_failures < self.max_start_failures
        {
            match self.spawn_one(reactor) {
                Ok(s) => started.push(s),
                Err(e) => {
                    self.start_failures += 1;
                    self.last_failure = format!("spawn failed: {e}");
                }
            }
        }
    }

    fn ended(&mut self, end: &End, _now: Instant) {
        self.alive = self.alive.saturating_sub(1);
        let ours = end.on_purpose
            || matches!(
                end.stopped,
                Some(Stop::Deadline | Stop::Owner | Stop::Cancelled)
            );
        if end.answers == 0 && !ours {
            self.start_failures += 1;
            self.last_failure = format!(
                "{} ended before its first reply: {}",
                end.worker,
                describe_as(self.kind, end.status)
            );
        }
    }

    fn answered(&mut self, _host: Option<usize>) {
        self.start_failures = 0;
    }

    fn deadline_hit(&mut self, _host: Option<usize>) {}

    fn may_take(&self, _host: Option<usize>) -> bool {
        true
    }

    fn dispatched(&mut self, _host: Option<usize>) {}

    fn wake_at(&self, _now: Instant) -> Option<Instant> {
        None
    }

    fn outlook(&mut self, _now: Instant) -> Outlook {
        if self.alive > 0 || (!self.stopped && self.start_failures < self.max_start_failures) {
            return Outlook::Working;
        }
        if self.last_failure.is_empty() {
            return Outlook::GaveUp("the pool has no workers".to_owned());
        }
        Outlook::GaveUp(format!(
            "{} workers in a row could not start; the last: {}",
            self.start_failures, self.last_failure
        ))
    }

    fn stop(&mut self) {
        self.stopped = true;
    }
}
