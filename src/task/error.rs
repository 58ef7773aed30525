//! What a task's end says: its id, and for a failure every try's cause, in
//! words a person can read.

use std::fmt;
use std::process::ExitStatus;
use std::time::Duration;

use crate::process::describe;
use crate::worker::Worker;

/// A task's number: unique within its [`Tasks`](crate::task::Tasks) or
/// [`Pool`](crate::pool::Pool), in the order tasks were made (a pool's
/// first task is 0, and each item of a `map` on a fresh pool has its input
/// index). `Display` writes "task 7".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(pub(crate) u64);

impl TaskId {
    /// The number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {}", self.0)
    }
}

/// Why one try of a task failed.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Cause {
    /// The worker answered with an error reply in the task's place
    /// ([`Error::Remote`](crate::Error::Remote)): `"panic"` (the worker then
    /// exits), `"error"`, `"decode"` (it could not read the request), or a
    /// Python peer's own kind.
    Remote {
        /// What failed, in a word or two.
        kind: String,
        /// Why, as the worker put it.
        message: String,
    },
    /// The worker ended while the task was in flight (killed by a signal,
    /// exited, crashed): its exit status.
    WorkerLost {
        /// How the worker ended (`None`: unknown).
        status: Option<ExitStatus>,
    },
    /// The task's own deadline passed; its worker was killed with `SIGKILL`.
    Deadline {
        /// The time the task was given.
        timeout: Duration,
    },
    /// The worker was killed because another task's deadline on it passed;
    /// this task was queued behind or beside it and may well succeed again.
    KilledForDeadline {
        /// The task whose deadline passed.
        task: TaskId,
    },
    /// A reply line came, but not as the reply type (it did not decode, or
    /// it was longer than the line limit): the message says which.
    Reply {
        /// The error, in words.
        message: String,
    },
    /// The request could not be sent (it could not be encoded, say).
    Send {
        /// The error, in words.
        message: String,
    },
    /// The worker's connection failed in a way that is no reply at all.
    Connection {
        /// The error, in words.
        message: String,
    },
    /// No worker could take the task: workers kept ending before their first
    /// reply, or could not be spawned.
    NoWorkers {
        /// What happened to the last one.
        message: String,
    },
    /// The pool was terminated (or dropped) before the task finished.
    Terminated,
}

impl Cause {
    /// Whether another try on another worker may succeed: the worker was
    /// lost (including a panic, after which it exits) or a deadline passed.
    /// A request the worker refused or a reply that does not decode would
    /// fail again the same way, so those are final. (A
    /// [`Pool`](crate::pool::Pool) retries a panic only with
    /// [`PoolOptions::retry_panics`](crate::pool::PoolOptions::retry_panics):
    /// the same input usually panics again.)
    pub fn is_retryable(&self) -> bool {
        match self {
            Cause::Remote { kind, .. } => kind == "panic",
            Cause::WorkerLost { .. }
            | Cause::Deadline { .. }
            | Cause::KilledForDeadline { .. }
            | Cause::Connection { .. } => true,
            Cause::Reply { .. }
            | Cause::Send { .. }
            | Cause::NoWorkers { .. }
            | Cause::Terminated => false,
        }
    }

    /// True for a panic the worker reported ([`Cause::Remote`] with kind
    /// `"panic"`): retried by a [`Pool`](crate::Pool) only when
    /// [`PoolOptions::retry_panics`](crate::PoolOptions::retry_panics) says so.
    pub fn is_panic(&self) -> bool {
        matches!(self, Cause::Remote { kind, .. } if kind == "panic")
    }

    /// True for [`Cause::Deadline`].
    pub fn is_deadline(&self) -> bool {
        matches!(self, Cause::Deadline { .. })
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Remote { kind, message } => write!(f, "worker reported {kind}: {message}"),
            Cause::WorkerLost { status } => write!(f, "worker lost: {}", describe(*status)),
            Cause::Deadline { timeout } => {
                write!(f, "deadline of {timeout:?} passed; worker killed")
            }
            Cause::KilledForDeadline { task } => write!(f, "worker killed: deadline of {task}"),
            Cause::Reply { message } => write!(f, "bad reply: {message}"),
            Cause::Send { message } => write!(f, "cannot send: {message}"),
            Cause::Connection { message } => write!(f, "connection failed: {message}"),
            Cause::NoWorkers { message } => write!(f, "no worker could run it: {message}"),
            Cause::Terminated => f.write_str("pool terminated"),
        }
    }
}

/// One failed try: where it ran and why it failed.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// The worker it ran on (`None`: it never reached one).
    pub worker: Option<Worker>,
    /// Why it failed.
    pub cause: Cause,
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.worker {
            Some(w) => write!(f, "on {w}: {}", self.cause),
            None => self.cause.fmt(f),
        }
    }
}

/// A task that failed: which, and every try's cause, first to last.
///
/// `Display`: `task 3 failed: on worker 5: worker reported panic: boom`
/// for one try, and `task 3 failed 3 times: (1) on worker 5: ...; (2) on
/// worker 9: ...; (3) ...` for several.
#[derive(Clone, Debug)]
pub struct TaskError {
    task: TaskId,
    tries: Vec<Attempt>,
}

impl TaskError {
    pub(crate) fn new(task: TaskId, worker: Option<Worker>, cause: Cause) -> Self {
        TaskError {
            task,
            tries: vec![Attempt { worker, cause }],
        }
    }

    pub(crate) fn with_tries(task: TaskId, tries: Vec<Attempt>) -> Self {
        TaskError { task, tries }
    }

    pub(crate) fn into_tries(self) -> Vec<Attempt> {
        self.tries
    }

    /// The task.
    pub fn task(&self) -> TaskId {
        self.task
    }

    /// Every try, first to last (never empty).
    pub fn tries(&self) -> &[Attempt] {
        &self.tries
    }

    /// The last try's cause: the one that ended the task.
    pub fn cause(&self) -> &Cause {
        // `new` and `with_tries` are only called with at least one try.
        &self.tries[self.tries.len() - 1].cause
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.tries.as_slice() {
            [one] => write!(f, "{} failed: {one}", self.task),
            tries => {
                write!(f, "{} failed {} times: ", self.task, tries.len())?;
                for (n, t) in tries.iter().enumerate() {
                    let sep = if n == 0 { "" } else { "; " };
                    write!(f, "{sep}({}) {t}", n + 1)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for TaskError {}
