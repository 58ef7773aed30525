//! The serde error types of the marshal format, private to it: converted to
//! [`crate::DecodeError`] and [`crate::Error::Encode`] at the public API.
//! Both are one pointer wide, so the `Result` of every value read or
//! written stays in registers.

use std::fmt;

use crate::error::{DecodeError, DecodeErrorKind};
use crate::format_kind::Format;

/// A decode failure while the value is being built. `position` is filled
/// in by the innermost value being read when the error passes through it,
/// so a visitor's own error (serde's `invalid type ...`) points at the
/// value that did not fit.
#[derive(Debug)]
pub(crate) struct DeError(Box<Failure>);

#[derive(Debug)]
struct Failure {
    kind: DecodeErrorKind,
    position: Option<usize>,
}

impl DeError {
    /// A failure of `kind` at byte `position`.
    #[cold]
    pub(crate) fn at(position: usize, kind: DecodeErrorKind) -> Self {
        DeError(Box::new(Failure {
            kind,
            position: Some(position),
        }))
    }

    /// Gives a position-less error (one a visitor raised) the start of the
    /// value it was raised for.
    #[cold]
    pub(crate) fn within(mut self, start: usize) -> Self {
        self.0.position.get_or_insert(start);
        self
    }

    /// The public error; `end` stands in for a position never set.
    pub(crate) fn into_public(self, end: usize) -> DecodeError {
        DecodeError {
            format: Format::Marshal,
            position: self.0.position.unwrap_or(end),
            kind: self.0.kind,
        }
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Shown only when nested in another error (an untagged enum's, say).
        match (&self.0.kind, self.0.position) {
            (DecodeErrorKind::Mismatch(m), _) => f.write_str(m),
            (other, Some(p)) => write!(f, "marshal decode error at byte {p}: {other:?}"),
            (other, None) => write!(f, "marshal decode error: {other:?}"),
        }
    }
}

impl std::error::Error for DeError {}

impl serde::de::Error for DeError {
    #[cold]
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError(Box::new(Failure {
            kind: DecodeErrorKind::Mismatch(msg.to_string()),
            position: None,
        }))
    }
}

/// An encode failure: the reason, as [`crate::Error::Encode`] carries it.
#[derive(Debug)]
pub(crate) struct SerError(Box<str>);

impl SerError {
    /// A failure for `reason`.
    #[cold]
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        SerError(reason.into().into_boxed_str())
    }

    /// The reason.
    pub(crate) fn into_reason(self) -> String {
        self.0.into()
    }
}

impl fmt::Display for SerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SerError {}

impl serde::ser::Error for SerError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        SerError::new(msg.to_string())
    }
}
