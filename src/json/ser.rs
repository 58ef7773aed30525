//! The serializer: any `Serialize` value to the bytes Python's
//! `json.dumps(v)` writes with its defaults. The writer state it shares
//! with dict keys is in [`writer`](super::writer).

use serde::ser::{self, Serialize};

use super::error::SerError;
use super::escape::{write_float, write_int, write_str};
use super::key_ser::KeySerializer;
use super::writer::{Payload, Serializer};
use crate::value::magic::{
    BIGINT_TOKEN, COMPLEX_TOKEN, FROZENSET_TOKEN, SET_TOKEN, SURROGATES_TOKEN,
};

type Result<T, E = SerError> = std::result::Result<T, E>;

impl<'a> Serializer<'a> {
    fn compound(&mut self, open: &[u8], close: &'static [u8]) -> Result<Compound<'a, '_>> {
        self.enter(open)?;
        Ok(Compound {
            ser: self,
            first: true,
            close,
        })
    }

    fn variant_open(&mut self, variant: &str) -> Result<()> {
        self.enter(b"{")?;
        write_str(self.out, variant);
        self.out.extend_from_slice(b": ");
        Ok(())
    }
}

/// A list, dict or variant being written.
pub(crate) struct Compound<'a, 'b> {
    ser: &'b mut Serializer<'a>,
    first: bool,
    close: &'static [u8],
}

impl Compound<'_, '_> {
    fn comma(&mut self) {
        if !self.first {
            self.ser.out.extend_from_slice(b", ");
        }
        self.first = false;
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.comma();
        value.serialize(&mut *self.ser)
    }

    fn field<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<()> {
        self.comma();
        write_str(self.ser.out, key);
        self.ser.out.extend_from_slice(b": ");
        value.serialize(&mut *self.ser)
    }

    fn finish(self) -> Result<()> {
        self.ser.out.extend_from_slice(self.close);
        self.ser.leave();
        Ok(())
    }
}

impl<'a, 'b> ser::Serializer for &'b mut Serializer<'a> {
    type Ok = ();
    type Error = SerError;
    type SerializeSeq = Compound<'a, 'b>;
    type SerializeTuple = Compound<'a, 'b>;
    type SerializeTupleStruct = Compound<'a, 'b>;
    type SerializeTupleVariant = Compound<'a, 'b>;
    type SerializeMap = Compound<'a, 'b>;
    type SerializeStruct = Compound<'a, 'b>;
    type SerializeStructVariant = Compound<'a, 'b>;

    fn is_human_readable(&self) -> bool {
        true
    }

    fn serialize_bool(self, v: bool) -> Result<()> {
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
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
        write_int(self.out, v < 0, v.unsigned_abs());
        Ok(())
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
        write_int(self.out, false, v);
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Result<()> {
        self.serialize_f64(v.into())
    }
    fn serialize_f64(self, v: f64) -> Result<()> {
        write_float(self.out, v);
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<()> {
        write_str(self.out, v.encode_utf8(&mut [0; 4]));
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<()> {
        write_str(self.out, v);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<()> {
        let payload = std::mem::replace(&mut self.payload, Payload::None);
        self.write_payload(payload, v)
    }
    fn serialize_none(self) -> Result<()> {
        self.serialize_unit()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<()> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<()> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<()> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result<()> {
        write_str(self.out, variant);
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<()> {
        let payload = match name {
            SET_TOKEN => return Err(SerError::not_serializable("set")),
            FROZENSET_TOKEN => return Err(SerError::not_serializable("frozenset")),
            COMPLEX_TOKEN => return Err(SerError::not_serializable("complex")),
            BIGINT_TOKEN => Payload::BigInt,
            SURROGATES_TOKEN => Payload::Surrogates,
            _ => return value.serialize(self),
        };
        self.payload = payload;
        let r = value.serialize(&mut *self);
        // A payload that was not bytes leaves the mark behind: refuse it.
        if std::mem::replace(&mut self.payload, Payload::None) != Payload::None {
            return Err(SerError(format!("malformed payload for {name}")));
        }
        r
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<()> {
        self.variant_open(variant)?;
        value.serialize(&mut *self)?;
        self.out.push(b'}');
        self.leave();
        Ok(())
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq> {
        self.compound(b"[", b"]")
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple> {
        self.compound(b"[", b"]")
    }
    fn serialize_tuple_struct(self, _: &'static str, _len: usize) -> Result<Self::SerializeTuple> {
        self.compound(b"[", b"]")
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant> {
        self.variant_open(variant)?;
        self.compound(b"[", b"]}")
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap> {
        self.compound(b"{", b"}")
    }
    fn serialize_struct(self, _: &'static str, _len: usize) -> Result<Self::SerializeStruct> {
        self.compound(b"{", b"}")
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant> {
        self.variant_open(variant)?;
        self.compound(b"{", b"}}")
    }
}

impl ser::SerializeSeq for Compound<'_, '_> {
    type Ok = ();
    type Error = SerError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.element(value)
    }
    fn end(self) -> Result<()> {
        self.finish()
    }
}

impl ser::SerializeTuple for Compound<'_, '_> {
    type Ok = ();
    type Error = SerError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.element(value)
    }
    fn end(self) -> Result<()> {
        self.finish()
    }
}

impl ser::SerializeTupleStruct for Compound<'_, '_> {
    type Ok = ();
    type Error = SerError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.element(value)
    }
    fn end(self) -> Result<()> {
        self.finish()
    }
}

impl ser::SerializeTupleVariant for Compound<'_, '_> {
    type Ok = ();
    type Error = SerError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.element(value)
    }
    fn end(self) -> Result<()> {
        // The variant's `{` was entered too.
        self.ser.leave();
        self.finish()
    }
}

impl ser::SerializeMap for Compound<'_, '_> {
    type Ok = ();
    type Error = SerError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<()> {
        self.comma();
        key.serialize(KeySerializer {
            ser: &mut *self.ser,
        })?;
        self.ser.out.extend_from_slice(b": ");
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        value.serialize(&mut *self.ser)
    }
    fn end(self) -> Result<()> {
        self.finish()
    }
}

impl ser::SerializeStruct for Compound<'_, '_> {
    type Ok = ();
    type Error = SerError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<()> {
        self.field(key, value)
    }
    fn end(self) -> Result<()> {
        self.finish()
    }
}

impl ser::SerializeStructVariant for Compound<'_, '_> {
    type Ok = ();
    type Error = SerError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<()> {
        self.field(key, value)
    }
    fn end(self) -> Result<()> {
        self.ser.leave();
        self.finish()
    }
}
