//! [`ConvertError`]: why [`to_value`](super::to_value) or
//! [`from_value`](super::from_value) failed.

use std::fmt;

/// Why a Rust value did not become a [`Value`](super::Value)
/// ([`to_value`](super::to_value)) or a `Value` did not fit a Rust type
/// ([`from_value`](super::from_value)): serde's message (`invalid type:
/// string "x", expected i32`, a missing field, ...) or miniray's (an int
/// past 128 bits or a lone surrogate for a type other than `Value`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvertError(String);

impl ConvertError {
    /// The message alone (what `Display` writes).
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConvertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConvertError {}

impl serde::ser::Error for ConvertError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ConvertError(msg.to_string())
    }
}

impl serde::de::Error for ConvertError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ConvertError(msg.to_string())
    }
}
