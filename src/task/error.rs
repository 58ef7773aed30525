//! What a task's end says: its id, and for a failure every try's cause, in
//! words a person can read.

use std::fmt;
use std::process::ExitStatus;
use std::time::Duration;

use crate::process::{describe, describe_as, ChildKind};
use crate::worker::Worker;

/// A task's number: unique within its [`Pool`](crate::pool::Pool), in the
/// order tasks were made (a pool's first task is 0, and each item of a
/// `map` on a fresh pool has its input index). `Display` writes "task 7".
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

/// What a worker said failed, in place of a reply: the kinds miniray's
/// workers send, or a peer's own (a Python exception's type). Data for the
/// caller, never control: a worker's life never depends on it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RemoteKind {
    /// A Rust work function panicked (`"panic"`); the worker then exits.
    Panic,
    /// The work function returned an error (`"error"`).
    Error,
    /// The request did not decode into the type the worker takes (`"decode"`).
    Decode,
    /// The reply could not be encoded in the connection's format (`"encode"`).
    Encode,
    /// The request, or the answer, was over the line limit (`"line too long"`).
    LineTooLong,
    /// The request's shared memory regions could not be used (`"region"`).
    Region,
    /// The worker was sent something that is no request (`"frame"`).
    Frame,
    /// A kind of the peer's own, as it named it (`"ValueError"`).
    Other(String),
}

impl RemoteKind {
    /// The kind as it travels.
    pub fn as_str(&self) -> &str {
        match self {
            RemoteKind::Panic => "panic",
            RemoteKind::Error => "error",
            RemoteKind::Decode => "decode",
            RemoteKind::Encode => "encode",
            RemoteKind::LineTooLong => "line too long",
            RemoteKind::Region => "region",
            RemoteKind::Frame => "frame",
            RemoteKind::Other(s) => s,
        }
    }

    /// The kind a wire name stands for.
    pub fn from_wire(s: &str) -> Self {
        match s {
            "panic" => RemoteKind::Panic,
            "error" => RemoteKind::Error,
            "decode" => RemoteKind::Decode,
            "encode" => RemoteKind::Encode,
            "line too long" => RemoteKind::LineTooLong,
            "region" => RemoteKind::Region,
            "frame" => RemoteKind::Frame,
            other => RemoteKind::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for RemoteKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why one try of a task failed.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Cause {
    /// The worker answered with an error in the task's place: what failed
    /// ([`RemoteKind`]) and why, in its words; a Python peer's traceback
    /// when it sent one.
    Remote {
        /// What failed.
        kind: RemoteKind,
        /// Why, as the worker put it.
        message: String,
        /// The peer's traceback, if it sent one.
        trace: Option<String>,
    },
    /// The worker ended while the task was in flight (killed by a signal,
    /// exited, crashed, its connection lost): its exit status.
    WorkerLost {
        /// How the worker ended (`None`: unknown, or a remote worker).
        status: Option<ExitStatus>,
        /// What the worker ran, which says what its exit code means (`None`:
        /// a remote worker, whose process is the server's).
        kind: Option<ChildKind>,
    },
    /// The task's own deadline passed; its worker was killed (a remote
    /// worker's connection dropped).
    Deadline {
        /// The time the task was given.
        timeout: Duration,
    },
    /// The worker was killed because another task's deadline on it passed;
    /// this task was beside it and may well succeed again.
    KilledForDeadline {
        /// The task whose deadline passed.
        task: TaskId,
    },
    /// The worker was killed because its caller gave up on another task on
    /// it ([`Cause::Cancelled`]); this one may well succeed again.
    KilledForCancel {
        /// The task given up on.
        task: TaskId,
    },
    /// The worker lost step with its caller: a plain peer sent a line that
    /// answers no request (one with nothing in flight, more lines than
    /// requests, a line that is not the reply), or a framed peer broke the
    /// protocol. The worker was recycled and its tasks run again.
    OutOfSync {
        /// What came, with the line's first 200 bytes.
        reason: String,
    },
    /// The worker's answer could not be used: it did not decode as the reply
    /// type, or it was over the line limit.
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
    /// reply, could not be spawned, or every host stayed unreachable.
    NoWorkers {
        /// What happened, worker by worker or host by host.
        message: String,
    },
    /// The caller gave up on the task (dropped its future): the try in
    /// flight was ended as a deadline ends one, and it is not tried again.
    Cancelled,
    /// The pool was terminated (or dropped) before the task finished.
    Terminated,
}

impl Cause {
    /// Whether another try on another worker may succeed: the worker was
    /// lost, a deadline passed, the worker lost step. A request the worker
    /// refused or a reply that does not decode would fail again the same
    /// way, so those are final, as is a panic unless
    /// [`PoolOptions::retry_panics`](crate::pool::PoolOptions::retry_panics)
    /// says otherwise (the same input usually panics again).
    pub fn is_retryable(&self) -> bool {
        match self {
            Cause::WorkerLost { .. }
            | Cause::Deadline { .. }
            | Cause::KilledForDeadline { .. }
            | Cause::KilledForCancel { .. }
            | Cause::OutOfSync { .. }
            | Cause::Connection { .. } => true,
            Cause::Remote { .. }
            | Cause::Reply { .. }
            | Cause::Send { .. }
            | Cause::NoWorkers { .. }
            | Cause::Cancelled
            | Cause::Terminated => false,
        }
    }

    /// True for a panic the worker reported ([`Cause::Remote`] of kind
    /// [`RemoteKind::Panic`]).
    pub fn is_panic(&self) -> bool {
        matches!(
            self,
            Cause::Remote {
                kind: RemoteKind::Panic,
                ..
            }
        )
    }

    /// True for [`Cause::Deadline`].
    pub fn is_deadline(&self) -> bool {
        matches!(self, Cause::Deadline { .. })
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Remote { kind, message, .. } => write!(f, "worker reported {kind}: {message}"),
            Cause::WorkerLost {
                status,
                kind: Some(kind),
            } => write!(f, "worker lost: {}", describe_as(*kind, *status)),
            Cause::WorkerLost {
                status: None,
                kind: None,
            } => f.write_str("worker lost: its connection closed"),
            Cause::WorkerLost { status, kind: None } => {
                write!(f, "worker lost: {}", describe(*status))
            }
            Cause::Deadline { timeout } => {
                write!(f, "deadline of {timeout:?} passed; worker killed")
            }
            Cause::KilledForDeadline { task } => write!(f, "worker killed: deadline of {task}"),
            Cause::KilledForCancel { task } => write!(f, "worker killed: {task} was cancelled"),
            Cause::OutOfSync { reason } => write!(f, "worker out of step, recycled: {reason}"),
            Cause::Reply { message } => write!(f, "bad reply: {message}"),
            Cause::Send { message } => write!(f, "cannot send: {message}"),
            Cause::Connection { message } => write!(f, "connection failed: {message}"),
            Cause::NoWorkers { message } => write!(f, "no worker could run it: {message}"),
            Cause::Cancelled => f.write_str("cancelled by its caller"),
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
