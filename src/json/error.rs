//! The JSON format's private serde error types and their conversion to
//! the crate's public errors at the module boundary.

use std::fmt;

use jiter::{JiterError, JiterErrorType, JsonErrorType};

use crate::error::{DecodeError, DecodeErrorKind};
use crate::format_kind::Format;

/// What went wrong while decoding; mirrors the [`DecodeErrorKind`]s this
/// format produces (that type is not `Clone` and has no `Display` of its own).
#[derive(Debug)]
pub(crate) enum Kind {
    /// Malformed JSON: jiter's message or our own string decoder's.
    Syntax(String),
    /// The value does not fit the type asked for (serde's message).
    Mismatch(String),
    /// A str with a lone surrogate, asked for outside exact mode.
    LoneSurrogate,
    /// An int of more than `MAX_INT_DIGITS` digits.
    IntTooLarge,
    /// Nesting deeper than `MAX_DEPTH`.
    TooDeep(usize),
    /// Something after the value.
    TrailingBytes,
    /// Bytes that are not UTF-8 (nor an encoded surrogate) inside a string.
    InvalidUtf8,
    /// A type JSON has no form for (`"bytes"`).
    Unsupported(&'static str),
}

/// The deserializer's error: a kind and, once known, the byte offset of
/// the value it is about (filled in by the innermost value that sees it).
/// Boxed, as serde_json's, so every `Result` on the hot path stays small.
#[derive(Debug)]
pub(crate) struct DeError(Box<Inner>);

/// What a [`DeError`] holds.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) kind: Kind,
    pub(crate) position: Option<usize>,
}

impl DeError {
    pub(crate) fn new(kind: Kind, position: Option<usize>) -> Self {
        DeError(Box::new(Inner { kind, position }))
    }

    pub(crate) fn at(kind: Kind, position: usize) -> Self {
        DeError::new(kind, Some(position))
    }

    pub(crate) fn kind(&self) -> &Kind {
        &self.0.kind
    }

    #[cfg(test)]
    pub(crate) fn position(&self) -> Option<usize> {
        self.0.position
    }

    /// jiter's error, its index shifted by `base` (where the jiter's slice begins).
    pub(crate) fn jiter(e: JiterError, base: usize) -> Self {
        let position = base + e.index;
        let kind = match &e.error_type {
            JiterErrorType::JsonError(JsonErrorType::TrailingCharacters) => Kind::TrailingBytes,
            JiterErrorType::JsonError(JsonErrorType::NumberOutOfRange) => Kind::IntTooLarge,
            t => Kind::Syntax(t.to_string()),
        };
        DeError::at(kind, position)
    }

    /// Sets the position if no inner value has set it yet.
    pub(crate) fn or_at(mut self, position: usize) -> Self {
        self.0.position.get_or_insert(position);
        self
    }

    /// The public error.
    pub(crate) fn into_public(self) -> DecodeError {
        let Inner { kind, position } = *self.0;
        let kind = match kind {
            Kind::Syntax(m) => DecodeErrorKind::Syntax(m),
            Kind::Mismatch(m) => DecodeErrorKind::Mismatch(m),
            Kind::LoneSurrogate => DecodeErrorKind::LoneSurrogate,
            Kind::IntTooLarge => DecodeErrorKind::IntTooLarge,
            Kind::TooDeep(d) => DecodeErrorKind::TooDeep(d),
            Kind::TrailingBytes => DecodeErrorKind::TrailingBytes,
            Kind::InvalidUtf8 => DecodeErrorKind::InvalidUtf8,
            Kind::Unsupported(t) => DecodeErrorKind::Unsupported(t),
        };
        DecodeError {
            format: Format::Json,
            position: position.unwrap_or(0),
            kind,
        }
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0.kind {
            Kind::Syntax(m) | Kind::Mismatch(m) => f.write_str(m),
            Kind::LoneSurrogate => f.write_str("str holds a lone surrogate"),
            Kind::IntTooLarge => f.write_str("integer too large"),
            Kind::TooDeep(d) => write!(f, "nesting deeper than {d}"),
            Kind::TrailingBytes => f.write_str("trailing bytes after the value"),
            Kind::InvalidUtf8 => f.write_str("str is not valid UTF-8"),
            Kind::Unsupported(t) => write!(f, "Python {t} has no JSON form"),
        }?;
        if let Some(p) = self.0.position {
            write!(f, " at byte {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for DeError {}

impl serde::de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError::new(Kind::Mismatch(msg.to_string()), None)
    }
}

/// The serializer's error: why the value has no JSON form (worded as
/// Python's `TypeError`/`ValueError` where Python refuses the same value).
#[derive(Debug)]
pub(crate) struct SerError(pub(crate) String);

impl SerError {
    /// Python's message for a value `json.dumps` cannot write.
    pub(crate) fn not_serializable(python_type: &str) -> Self {
        SerError(format!(
            "Object of type {python_type} is not JSON serializable"
        ))
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
        SerError(msg.to_string())
    }
}
