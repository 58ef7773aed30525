//! A list encoded item by item in a line format: an item that cannot be
//! encoded is left out and the items around it stand, so one bad item of a
//! chunk (a reply holding a set, in JSON) fails alone. The raw bytes are
//! then finished into a line (marshal's base64 around them).

use base64_simd::STANDARD;
use serde::Serialize;

use crate::error::Result;
use crate::format::Format;

/// Marshal's list code: `[` then the item count (u32, little-endian).
const MARSHAL_LIST: u8 = b'[';

/// A list being written (see the module docs).
#[derive(Debug)]
pub(crate) struct ListWriter {
    format: Format,
    raw: Vec<u8>,
    count: u32,
}

impl ListWriter {
    /// An empty list in `format`, written into `raw` (cleared first, so its
    /// allocation is reused).
    pub(crate) fn new(format: Format, mut raw: Vec<u8>) -> Self {
        raw.clear();
        match format {
            Format::Json => raw.push(b'['),
            Format::Marshal => {
                raw.push(MARSHAL_LIST);
                raw.extend_from_slice(&0u32.to_le_bytes());
            }
        }
        ListWriter {
            format,
            raw,
            count: 0,
        }
    }

    /// Appends `item`; on an error nothing of it stays.
    pub(crate) fn push<T: Serialize + ?Sized>(&mut self, item: &T) -> Result<()> {
        let before = self.raw.len();
        self.separate();
        let done = match self.format {
            Format::Json => crate::json::to_writer(item, &mut self.raw),
            Format::Marshal => crate::marshal::to_writer(item, &mut self.raw),
        };
        match done {
            Ok(()) => {
                self.count += 1;
                Ok(())
            }
            Err(e) => {
                self.raw.truncate(before);
                Err(e)
            }
        }
    }

    /// Appends an item already encoded in this format's raw form (a list
    /// [`ListWriter::finish`]ed, say).
    pub(crate) fn push_raw(&mut self, encoded: &[u8]) {
        self.separate();
        self.raw.extend_from_slice(encoded);
        self.count += 1;
    }

    /// Items written so far.
    pub(crate) fn len(&self) -> usize {
        self.count as usize
    }

    /// Where the list stands now, to go back to with [`ListWriter::truncate`].
    pub(crate) fn mark(&self) -> (usize, u32) {
        (self.raw.len(), self.count)
    }

    /// Drops the items written since `mark`.
    pub(crate) fn truncate(&mut self, (len, count): (usize, u32)) {
        self.raw.truncate(len);
        self.count = count;
    }

    /// How long the finished list will be as line text (marshal's base64
    /// is 4/3 of the bytes).
    pub(crate) fn text_len(&self) -> usize {
        match self.format {
            Format::Json => self.raw.len() + 1,
            Format::Marshal => self.raw.len().div_ceil(3) * 4,
        }
    }

    /// The finished list's raw bytes.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        match self.format {
            Format::Json => self.raw.push(b']'),
            Format::Marshal => self.raw[1..5].copy_from_slice(&self.count.to_le_bytes()),
        }
        self.raw
    }

    fn separate(&mut self) {
        if self.format == Format::Json && self.count > 0 {
            self.raw.extend_from_slice(b", ");
        }
    }
}

/// Appends a value in `format`'s raw form as a line's text (JSON as it is,
/// marshal as base64), and the `\n`.
pub(crate) fn append_line(format: Format, raw: &[u8], out: &mut Vec<u8>) {
    match format {
        Format::Json => out.extend_from_slice(raw),
        Format::Marshal => STANDARD.encode_append(raw, out),
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Value;

    fn line_of(format: Format, w: ListWriter) -> Vec<u8> {
        let mut out = Vec::new();
        append_line(format, &w.finish(), &mut out);
        out.pop();
        out
    }

    #[test]
    fn a_list_written_item_by_item_is_the_list_encoded_whole() {
        for format in [Format::Json, Format::Marshal] {
            let mut w = ListWriter::new(format, Vec::new());
            for n in [1i64, 2, 1 << 40] {
                w.push(&n).expect("int");
            }
            let mut inner = ListWriter::new(format, Vec::new());
            inner.push("x").expect("str");
            w.push_raw(&inner.finish());
            assert_eq!(w.len(), 4);
            let line = line_of(format, w);
            let got: Value = format.decode(&line).expect("decode");
            assert_eq!(got, crate::py!([1, 2, 1099511627776i64, ["x"]]), "{format}");
        }
    }

    #[test]
    fn an_item_that_cannot_be_encoded_is_left_out() {
        let mut w = ListWriter::new(Format::Json, Vec::new());
        w.push(&1).expect("int");
        let set = crate::py!(set[1]);
        assert!(w.push(&set).is_err());
        w.push(&2).expect("int");
        assert_eq!(line_of(Format::Json, w), b"[1, 2]");
    }
}
