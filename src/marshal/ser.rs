//! The marshal serializer: any `T: Serialize` to marshal v4 bytes, written
//! straight into a `Vec<u8>`, in the codes CPython 3.11 chooses (see the
//! module docs for where the bytes differ from `marshal.dumps`).

use serde::ser::{self, Serialize};

use super::error::SerError;
use super::long::{write_int, write_long_bytes};
use crate::value::magic::{
    decode_bigint, BIGINT_TOKEN, COMPLEX_TOKEN, FROZENSET_TOKEN, SET_TOKEN, SURROGATES_TOKEN,
};

/// What the next value is, when a magic newtype announced it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Plain,
    /// `serialize_seq` writes `<`.
    Set,
    /// `serialize_seq` writes `>`.
    FrozenSet,
    /// `serialize_tuple` of two floats writes `y`.
    Complex,
    /// `serialize_bytes` is a big int payload.
    BigInt,
    /// `serialize_bytes` is generalized UTF-8 for `u`.
    Surrogates,
}

/// Writes one value to `out`.
pub(crate) struct Ser<'a> {
    out: &'a mut Vec<u8>,
    mode: Mode,
    /// Inside a dict key or set member (which, for the error): a list,
    /// dict or set here is refused, as `marshal.loads` would refuse it.
    key: Option<&'static str>,
}

impl<'a> Ser<'a> {
    pub(crate) fn new(out: &'a mut Vec<u8>) -> Self {
        Ser::inside(out, None)
    }

    fn inside(out: &'a mut Vec<u8>, key: Option<&'static str>) -> Self {
        Ser {
            out,
            mode: Mode::Plain,
            key,
        }
    }

    /// Refuses a `kind` container inside a key: Python cannot hash it.
    fn hashable(&self, kind: &str) -> Result<(), SerError> {
        match self.key {
            Some(what) => Err(SerError::new(format!(
                "unhashable type: '{kind}' in a {what} (Python cannot hash it)"
            ))),
            None => Ok(()),
        }
    }
}

fn len_u32(n: usize) -> Result<u32, SerError> {
    u32::try_from(n).map_err(|_| SerError::new("length does not fit marshal's 32 bits"))
}

fn put_u32(out: &mut Vec<u8>, n: usize) -> Result<(), SerError> {
    out.extend_from_slice(&len_u32(n)?.to_le_bytes());
    Ok(())
}

/// A str as CPython 3.11 writes one it has not interned: ASCII as `z`
/// (under 256 bytes) or `a`, anything else `u` with its UTF-8.
pub(crate) fn write_str(s: &str, out: &mut Vec<u8>) -> Result<(), SerError> {
    let bytes = s.as_bytes();
    if bytes.is_ascii() {
        if bytes.len() < 256 {
            out.push(b'z');
            out.push(bytes.len() as u8);
        } else {
            out.push(b'a');
            put_u32(out, bytes.len())?;
        }
    } else {
        out.push(b'u');
        put_u32(out, bytes.len())?;
    }
    out.extend_from_slice(bytes);
    Ok(())
}

#[inline]
fn write_f64(f: f64, out: &mut Vec<u8>) {
    out.push(b'g');
    out.extend_from_slice(&f.to_le_bytes());
}

/// A container whose count is patched at its end.
pub(crate) struct Compound<'a> {
    out: &'a mut Vec<u8>,
    kind: Kind,
    /// Where the count goes.
    at: usize,
    items: usize,
    /// Set members: each must be hashable.
    members: bool,
    /// Inside a dict key or set member, as [`Ser::key`].
    key: Option<&'static str>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `[`, `<`, `>`, `(`: a u32 count.
    Count32,
    /// `)`: a u8 count (under 256 items).
    Count8,
    /// `y`: two floats, no count.
    Complex,
    /// `{`: entries then `0`; `close` more `0`s for a variant's dicts.
    Dict { close: usize },
    /// A tuple variant: `{` name `[` items `]`-patched, then `0`.
    VariantList,
}

impl<'a> Compound<'a> {
    fn counted(out: &'a mut Vec<u8>, code: u8, kind: Kind, key: Option<&'static str>) -> Self {
        out.push(code);
        let at = out.len();
        match kind {
            Kind::Count8 => out.push(0),
            _ => out.extend_from_slice(&[0; 4]),
        }
        Compound {
            members: code == b'<' || code == b'>',
            out,
            kind,
            at,
            items: 0,
            key,
        }
    }

    #[inline]
    fn element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), SerError> {
        self.items += 1;
        if self.members {
            return self.key(v, "set member");
        }
        if self.kind == Kind::Complex {
            // The payload's floats are written without their `g`.
            let at = self.out.len();
            v.serialize(Ser::inside(self.out, self.key))?;
            if self.items > 2 || self.out.len() != at + 9 || self.out[at] != b'g' {
                return Err(SerError::new("a complex is two floats"));
            }
            self.out.remove(at);
            return Ok(());
        }
        v.serialize(Ser::inside(self.out, self.key))
    }

    fn finish(self) -> Result<(), SerError> {
        match self.kind {
            Kind::Count32 | Kind::VariantList => {
                let n = len_u32(self.items)?.to_le_bytes();
                self.out[self.at..self.at + 4].copy_from_slice(&n);
                if self.kind == Kind::VariantList {
                    self.out.push(b'0');
                }
            }
            Kind::Count8 => self.out[self.at] = self.items as u8,
            Kind::Complex => {
                if self.items != 2 {
                    return Err(SerError::new("a complex is two floats"));
                }
            }
            Kind::Dict { close } => {
                for _ in 0..=close {
                    self.out.push(b'0');
                }
            }
        }
        Ok(())
    }

    /// A dict key or set member: a list, dict or set anywhere in it is
    /// refused as it is written ([`Ser::hashable`]): `marshal.loads` would
    /// raise on it (unhashable).
    fn key<T: Serialize + ?Sized>(&mut self, key: &T, what: &'static str) -> Result<(), SerError> {
        key.serialize(Ser::inside(self.out, Some(what)))
    }
}

impl<'a> ser::Serializer for Ser<'a> {
    type Ok = ();
    type Error = SerError;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = Compound<'a>;
    type SerializeMap = Compound<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = Compound<'a>;

    fn is_human_readable(&self) -> bool {
        true
    }

    fn serialize_bool(self, v: bool) -> Result<(), SerError> {
        self.out.push(if v { b'T' } else { b'F' });
        Ok(())
    }

    fn serialize_i8(self, v: i8) -> Result<(), SerError> {
        self.serialize_i64(i64::from(v))
    }

    fn serialize_i16(self, v: i16) -> Result<(), SerError> {
        self.serialize_i64(i64::from(v))
    }

    fn serialize_i32(self, v: i32) -> Result<(), SerError> {
        self.serialize_i64(i64::from(v))
    }

    #[inline]
    fn serialize_i64(self, v: i64) -> Result<(), SerError> {
        write_int(v < 0, u128::from(v.unsigned_abs()), self.out);
        Ok(())
    }

    fn serialize_i128(self, v: i128) -> Result<(), SerError> {
        write_int(v < 0, v.unsigned_abs(), self.out);
        Ok(())
    }

    fn serialize_u8(self, v: u8) -> Result<(), SerError> {
        self.serialize_i64(i64::from(v))
    }

    fn serialize_u16(self, v: u16) -> Result<(), SerError> {
        self.serialize_i64(i64::from(v))
    }

    fn serialize_u32(self, v: u32) -> Result<(), SerError> {
        self.serialize_i64(i64::from(v))
    }

    fn serialize_u64(self, v: u64) -> Result<(), SerError> {
        write_int(false, u128::from(v), self.out);
        Ok(())
    }

    fn serialize_u128(self, v: u128) -> Result<(), SerError> {
        write_int(false, v, self.out);
        Ok(())
    }

    fn serialize_f32(self, v: f32) -> Result<(), SerError> {
        write_f64(f64::from(v), self.out);
        Ok(())
    }

    #[inline]
    fn serialize_f64(self, v: f64) -> Result<(), SerError> {
        write_f64(v, self.out);
        Ok(())
    }

    fn serialize_char(self, v: char) -> Result<(), SerError> {
        write_str(v.encode_utf8(&mut [0; 4]), self.out)
    }

    fn serialize_str(self, v: &str) -> Result<(), SerError> {
        write_str(v, self.out)
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), SerError> {
        match self.mode {
            Mode::BigInt => {
                let (negative, magnitude) =
                    decode_bigint(v).ok_or_else(|| SerError::new("malformed big int payload"))?;
                if super::long::magnitude_too_long(magnitude) {
                    return Err(SerError::new(
                        "int has more than 4300 decimal digits (CPython's limit, which the decoder keeps)",
                    ));
                }
                if magnitude.iter().all(|&b| b == 0) {
                    write_int(false, 0, self.out);
                } else {
                    write_long_bytes(negative, magnitude, self.out);
                }
            }
            Mode::Surrogates => {
                // Already generalized UTF-8, what `u` holds (surrogatepass).
                self.out.push(b'u');
                put_u32(self.out, v.len())?;
                self.out.extend_from_slice(v);
            }
            _ => {
                self.out.push(b's');
                put_u32(self.out, v.len())?;
                self.out.extend_from_slice(v);
            }
        }
        Ok(())
    }

    fn serialize_none(self) -> Result<(), SerError> {
        self.out.push(b'N');
        Ok(())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), SerError> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), SerError> {
        self.serialize_none()
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), SerError> {
        self.serialize_none()
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), SerError> {
        write_str(variant, self.out)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<(), SerError> {
        let mode = match name {
            SET_TOKEN => Mode::Set,
            FROZENSET_TOKEN => Mode::FrozenSet,
            COMPLEX_TOKEN => Mode::Complex,
            BIGINT_TOKEN => Mode::BigInt,
            SURROGATES_TOKEN => Mode::Surrogates,
            _ => Mode::Plain,
        };
        value.serialize(Ser {
            out: self.out,
            mode,
            key: self.key,
        })
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), SerError> {
        self.hashable("dict")?;
        self.out.push(b'{');
        write_str(variant, self.out)?;
        value.serialize(Ser::new(self.out))?;
        self.out.push(b'0');
        Ok(())
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Compound<'a>, SerError> {
        let code = match self.mode {
            Mode::Set => b'<',
            Mode::FrozenSet => b'>',
            _ => b'[',
        };
        match code {
            b'<' => self.hashable("set")?,
            b'[' => self.hashable("list")?,
            _ => {}
        }
        Ok(Compound::counted(self.out, code, Kind::Count32, self.key))
    }

    fn serialize_tuple(self, len: usize) -> Result<Compound<'a>, SerError> {
        if self.mode == Mode::Complex {
            self.out.push(b'y');
            return Ok(Compound {
                at: self.out.len(),
                out: self.out,
                kind: Kind::Complex,
                items: 0,
                members: false,
                key: self.key,
            });
        }
        // CPython 3.11: `)` and a u8 count under 256 items, else `(`.
        Ok(if len < 256 {
            Compound::counted(self.out, b')', Kind::Count8, self.key)
        } else {
            Compound::counted(self.out, b'(', Kind::Count32, self.key)
        })
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Compound<'a>, SerError> {
        self.serialize_tuple(len)
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, SerError> {
        self.hashable("dict")?;
        self.out.push(b'{');
        write_str(variant, self.out)?;
        Ok(Compound::counted(self.out, b'[', Kind::VariantList, None))
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Compound<'a>, SerError> {
        self.hashable("dict")?;
        self.out.push(b'{');
        Ok(Compound {
            at: 0,
            out: self.out,
            kind: Kind::Dict { close: 0 },
            items: 0,
            members: false,
            key: None,
        })
    }

    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<Compound<'a>, SerError> {
        self.serialize_map(Some(len))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, SerError> {
        self.hashable("dict")?;
        self.out.push(b'{');
        write_str(variant, self.out)?;
        self.out.push(b'{');
        Ok(Compound {
            at: 0,
            out: self.out,
            kind: Kind::Dict { close: 1 },
            items: 0,
            members: false,
            key: None,
        })
    }
}

impl ser::SerializeSeq for Compound<'_> {
    type Ok = ();
    type Error = SerError;
    #[inline]
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), SerError> {
        self.element(v)
    }
    fn end(self) -> Result<(), SerError> {
        self.finish()
    }
}

impl ser::SerializeTuple for Compound<'_> {
    type Ok = ();
    type Error = SerError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), SerError> {
        if self.kind == Kind::Count8 && self.items == 255 {
            return Err(SerError::new("tuple longer than its announced length"));
        }
        self.element(v)
    }
    fn end(self) -> Result<(), SerError> {
        self.finish()
    }
}

impl ser::SerializeTupleStruct for Compound<'_> {
    type Ok = ();
    type Error = SerError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), SerError> {
        ser::SerializeTuple::serialize_element(self, v)
    }
    fn end(self) -> Result<(), SerError> {
        self.finish()
    }
}

impl ser::SerializeTupleVariant for Compound<'_> {
    type Ok = ();
    type Error = SerError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), SerError> {
        self.element(v)
    }
    fn end(self) -> Result<(), SerError> {
        self.finish()
    }
}

impl ser::SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = SerError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), SerError> {
        self.key(key, "dict key")
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), SerError> {
        v.serialize(Ser::new(self.out))
    }
    fn end(self) -> Result<(), SerError> {
        self.finish()
    }
}

impl ser::SerializeStruct for Compound<'_> {
    type Ok = ();
    type Error = SerError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), SerError> {
        write_str(key, self.out)?;
        v.serialize(Ser::new(self.out))
    }
    fn end(self) -> Result<(), SerError> {
        self.finish()
    }
}

impl ser::SerializeStructVariant for Compound<'_> {
    type Ok = ();
    type Error = SerError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), SerError> {
        ser::SerializeStruct::serialize_field(self, key, v)
    }
    fn end(self) -> Result<(), SerError> {
        self.finish()
    }
}
