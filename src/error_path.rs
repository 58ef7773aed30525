//! Where in a message a type mismatch happened: `.jobs[3].name`, found by
//! decoding again with `serde_path_to_error` only after a decode failed,
//! so a successful decode pays nothing for it.

use serde::de::DeserializeOwned;
use serde::Deserializer;

use crate::error::{DecodeError, DecodeErrorKind};

/// `err` with the path of its mismatch appended (`... at .jobs[3].name`)
/// when `again` (a fresh deserializer over the same input) finds one; any
/// other error is returned as it is.
pub(crate) fn with_path<'de, T, D>(mut err: DecodeError, again: D) -> DecodeError
where
    T: DeserializeOwned,
    D: Deserializer<'de>,
{
    if let DecodeErrorKind::Mismatch(message) = &mut err.kind {
        if let Err(e) = serde_path_to_error::deserialize::<_, T>(again) {
            append(message, &e.path().to_string());
        }
    }
    err
}

/// Appends ` at PATH` to `message` unless the path is the root (`.`).
pub(crate) fn append(message: &mut String, path: &str) {
    if path != "." {
        message.push_str(" at ");
        message.push_str(path);
    }
}
