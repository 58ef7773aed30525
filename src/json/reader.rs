//! The parser state one JSON text is read with: jiter's `Jiter`, where its
//! slice begins in the text, the nesting depth, and the exact-mode mark.
//! The serde side ([`de`](super::de)) and the accessors
//! ([`access`](super::access)) both step it; it imports neither.

use jiter::{Jiter, JiterError, JiterErrorType, JsonErrorType, Peek};

use super::error::{DeError, Kind};
use crate::marshal::MAX_DEPTH;

pub(crate) type Result<T, E = DeError> = std::result::Result<T, E>;

/// Reads one JSON text.
pub(crate) struct Deserializer<'de> {
    pub(crate) data: &'de [u8],
    pub(crate) jiter: Jiter<'de>,
    /// Where `jiter`'s slice begins in `data`.
    pub(crate) base: usize,
    depth: usize,
    /// The next `deserialize_any` reports Python kinds through `visit_magic`.
    pub(super) exact: bool,
}

/// jiter errors on a string that our own decoder may still read (lone
/// surrogates, escaped or as raw bytes) or must report precisely.
pub(crate) fn string_fallback(e: &JiterError) -> bool {
    matches!(
        e.error_type,
        JiterErrorType::JsonError(
            JsonErrorType::LoneLeadingSurrogateInHexEscape
                | JsonErrorType::UnexpectedEndOfHexEscape
                | JsonErrorType::InvalidUnicodeCodePoint
                | JsonErrorType::InvalidEscape
        )
    )
}

impl<'de> Deserializer<'de> {
    pub(crate) fn new(data: &'de [u8]) -> Self {
        Deserializer {
            data,
            jiter: Jiter::new(data).with_allow_inf_nan(),
            base: 0,
            depth: 0,
            exact: false,
        }
    }

    /// Byte offset of the parser in `data`.
    pub(crate) fn pos(&self) -> usize {
        self.base + self.jiter.current_index()
    }

    /// Continues parsing at `data[pos]`, after a stretch read without jiter.
    pub(crate) fn reseat(&mut self, pos: usize) {
        self.jiter = Jiter::new(&self.data[pos..]).with_allow_inf_nan();
        self.base = pos;
    }

    pub(crate) fn jerr(&self, e: JiterError) -> DeError {
        DeError::jiter(e, self.base)
    }

    pub(super) fn peek(&mut self) -> Result<Peek> {
        let base = self.base;
        self.jiter.peek().map_err(|e| DeError::jiter(e, base))
    }

    /// Only whitespace may follow the value.
    pub(crate) fn end(&mut self) -> Result<()> {
        let base = self.base;
        self.jiter.finish().map_err(|e| DeError::jiter(e, base))
    }

    /// One more level of nesting, refused past `MAX_DEPTH`.
    pub(crate) fn enter(&mut self, start: usize) -> Result<()> {
        if self.depth >= MAX_DEPTH {
            return Err(DeError::at(Kind::TooDeep(MAX_DEPTH), start));
        }
        self.depth += 1;
        Ok(())
    }

    pub(crate) fn leave(&mut self) {
        self.depth -= 1;
    }
}
