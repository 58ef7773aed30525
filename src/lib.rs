//! placeholder
#![deny(missing_docs)]
pub mod error;
pub mod format;
pub mod framing;
pub mod marshal;
mod reactor;
mod sys;
pub mod worker;
pub use error::{Error, Result, DecodeError, DecodeErrorKind};
pub use format::Format;
pub use reactor::{Reactor, DEFAULT_GRACE};
pub use worker::{Channel, Worker, WorkerOptions};
pub use sys::raise_fd_limit;
pub use serde_json;
