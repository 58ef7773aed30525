//! The `Format` enum alone: which of the two line formats, and its name.
//! Kept apart from the codecs (`format.rs`) so that `error.rs` and
//! `marshal/` can name a format without importing the code that uses
//! them (no import circle).

use std::fmt;
use std::str::FromStr;

/// How a message is written on its line.
///
/// Both formats carry a [`serde_json::Value`] and both put exactly one message
/// on one `\n`-terminated line, so Python peers of the original library read
/// and write them with `json.dumps`/`json.loads` or
/// `base64.b64encode(marshal.dumps(x))`/`marshal.loads(base64.b64decode(line))`.
///
/// Integers of any size stay exact in both (serde_json's `arbitrary_precision`);
/// dict key order is kept (`preserve_order`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Format {
    /// One compact JSON text per line. `NaN` and `Infinity` are refused.
    #[default]
    Json,
    /// Python marshal version 4, base64 with the standard padded alphabet.
    Marshal,
}

impl Format {
    /// The format's name: `"json"` or `"marshal"`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Marshal => "marshal",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name given to [`Format::from_str`] was neither `json` nor `marshal`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownFormat(pub String);

impl fmt::Display for UnknownFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown format {:?} (expected json or marshal)", self.0)
    }
}

impl std::error::Error for UnknownFormat {}

impl FromStr for Format {
    type Err = UnknownFormat;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(Format::Json),
            "marshal" => Ok(Format::Marshal),
            other => Err(UnknownFormat(other.to_owned())),
        }
    }
}
