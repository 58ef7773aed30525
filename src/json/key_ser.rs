//! Dict keys as `json.dumps` converts them: a str as is; `True`, `False`,
//! `None` as `"true"`, `"false"`, `"null"`; an int as its decimal text; a
//! float as its repr (or `NaN`/`Infinity`); anything else refused with
//! Python's `TypeError` message.

use serde::ser::{self, Impossible, Serialize};

use super::error::SerError;
use super::escape::{write_float, write_int, write_str};
use super::writer::{Payload, Serializer};
use crate::value::magic::{
    BIGINT_TOKEN, COMPLEX_TOKEN, FROZENSET_TOKEN, SET_TOKEN, SURROGATES_TOKEN,
};

type Result<T, E = SerError> = std::result::Result<T, E>;

/// Serializes one dict key into its quoted JSON text.
pub(crate) struct KeySerializer<'a, 'b> {
    pub(crate) ser: &'b mut Serializer<'a>,
}

impl KeySerializer<'_, '_> {
    /// Text that is a key only once quoted (numbers, `true`, ...).
    fn quoted(self, write: impl FnOnce(&mut Vec<u8>)) -> Result<()> {
        self.ser.out.push(b'"');
        write(self.ser.out);
        self.ser.out.push(b'"');
        Ok(())
    }
}

/// Python's `TypeError` for a key of type `python_type`.
fn bad_key(python_type: &str) -> SerError {
    SerError(format!(
        "keys must be str, int, float, bool or None, not {python_type}"
    ))
}

impl ser::Serializer for KeySerializer<'_, '_> {
    type Ok = ();
    type Error = SerError;
    type SerializeSeq = Impossible<(), SerError>;
    type SerializeTuple = Impossible<(), SerError>;
    type SerializeTupleStruct = Impossible<(), SerError>;
    type SerializeTupleVariant = Impossible<(), SerError>;
    type SerializeMap = Impossible<(), SerError>;
    type SerializeStruct = Impossible<(), SerError>;
    type SerializeStructVariant = Impossible<(), SerError>;

    fn is_human_readable(&self) -> bool {
        true
    }

    fn serialize_bool(self, v: bool) -> Result<()> {
        self.quoted(|out| out.extend_from_slice(if v { b"true" } else { b"false" }))
    }
    fn serialize_i8(self, v: i8) -> Result<()> {
        self.serialize_i128(v.into())
    }
    fn serialize_i16(self, v: i16) -> Result<()> {
        self.serialize_i128(v.into())
    }
    fn serialize_i32(self, v: i32) -> Result<()> {
        self.serialize_i128(v.into())
    }
    fn serialize_i64(self, v: i64) -> Result<()> {
        self.serialize_i128(v.into())
    }
    fn serialize_i128(self, v: i128) -> Result<()> {
        self.quoted(|out| write_int(out, v < 0, v.unsigned_abs()))
    }
    fn serialize_u8(self, v: u8) -> Result<()> {
        self.serialize_u128(v.into())
    }
    fn serialize_u16(self, v: u16) -> Result<()> {
        self.serialize_u128(v.into())
    }
    fn serialize_u32(self, v: u32) -> Result<()> {
        self.serialize_u128(v.into())
    }
    fn serialize_u64(self, v: u64) -> Result<()> {
        self.serialize_u128(v.into())
    }
    fn serialize_u128(self, v: u128) -> Result<()> {
        self.quoted(|out| write_int(out, false, v))
    }
    fn serialize_f32(self, v: f32) -> Result<()> {
        self.serialize_f64(v.into())
    }
    fn serialize_f64(self, v: f64) -> Result<()> {
        self.quoted(|out| write_float(out, v))
    }
    fn serialize_char(self, v: char) -> Result<()> {
        write_str(self.ser.out, v.encode_utf8(&mut [0; 4]));
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<()> {
        write_str(self.ser.out, v);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<()> {
        match std::mem::replace(&mut self.ser.payload, Payload::None) {
            Payload::None => Err(bad_key("bytes")),
            Payload::Surrogates => self.ser.write_payload(Payload::Surrogates, v),
            Payload::BigInt => {
                self.ser.out.push(b'"');
                self.ser.write_payload(Payload::BigInt, v)?;
                self.ser.out.push(b'"');
                Ok(())
            }
        }
    }
    fn serialize_none(self) -> Result<()> {
        self.serialize_unit()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<()> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<()> {
        self.quoted(|out| out.extend_from_slice(b"null"))
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<()> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result<()> {
        write_str(self.ser.out, variant);
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<()> {
        let payload = match name {
            SET_TOKEN => return Err(bad_key("set")),
            FROZENSET_TOKEN => return Err(bad_key("frozenset")),
            COMPLEX_TOKEN => return Err(bad_key("complex")),
            BIGINT_TOKEN => Payload::BigInt,
            SURROGATES_TOKEN => Payload::Surrogates,
            _ => return value.serialize(self),
        };
        self.ser.payload = payload;
        let ser = &mut *self.ser;
        let r = value.serialize(KeySerializer { ser: &mut *ser });
        if std::mem::replace(&mut ser.payload, Payload::None) != Payload::None {
            return Err(SerError(format!("malformed payload for {name}")));
        }
        r
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<()> {
        Err(bad_key("dict"))
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq> {
        Err(bad_key("list"))
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple> {
        Err(bad_key("tuple"))
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeTuple> {
        Err(bad_key("tuple"))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant> {
        Err(bad_key("dict"))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap> {
        Err(bad_key("dict"))
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct> {
        Err(bad_key("dict"))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant> {
        Err(bad_key("dict"))
    }
}
