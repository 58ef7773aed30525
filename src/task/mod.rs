//! Tasks: what a request to a worker is called, and how its end is told.
//!
//! A [`TaskId`] names one task of a [`Pool`](crate::pool::Pool); a task
//! that failed reports a [`TaskError`] with every try ([`Attempt`]) and its
//! [`Cause`]. The calls underneath (crate-internal: `calls.rs`) send each
//! try to a worker and match its answer by the id a frame carries (between
//! miniray peers) or by position (plain peers), and end a worker only on
//! facts: its exit, its hang-up, a kill of ours.

mod answer;
mod attached;
pub(crate) mod calls;
mod deadlines;
mod error;
mod receive;
mod slot;
mod slots;

pub(crate) use answer::Answer;
pub use error::{Attempt, Cause, RemoteKind, TaskError, TaskId};
