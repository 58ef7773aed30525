//! [`to_value`]: any `T: Serialize` as a [`Value`], through a serde
//! `Serializer` that builds one (serde_json's `to_value`, the Python way).

use serde::ser::{self, Serialize};

use super::convert_error::ConvertError;
use super::magic;
use super::{Dict, Value};

/// `value` as a [`Value`], shaped as miniray's formats would carry it:
/// unit and `None` are `None`, `Some(x)` is `x`, a struct is a dict with
/// `str` keys, a Rust tuple or tuple struct a `tuple`, a sequence a
/// `list`, a map a `dict`, bytes (`serde_bytes`) `bytes`, a `char` a
/// one-character `str`, a unit variant its name, other variants
/// `{name: content}` (a tuple variant's content as a list). A [`Value`]
/// comes back exactly (sets, complex numbers, big ints and lone surrogates
/// included). Fails only if `T`'s own `Serialize` does.
///
/// ```
/// use miniray::{py, value::to_value};
/// #[derive(serde::Serialize)]
/// struct Job { id: u32, args: (i32, String), tags: Vec<&'static str> }
/// let job = Job { id: 7, args: (1, "x".into()), tags: vec!["a"] };
/// assert_eq!(to_value(&job)?, py!({"id": 7, "args": (1, "x"), "tags": ["a"]}));
/// # Ok::<(), miniray::value::ConvertError>(())
/// ```
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value, ConvertError> {
    value.serialize(ValueSerializer)
}

/// The serializer whose output is a [`Value`].
struct ValueSerializer;

fn malformed(token: &str) -> ConvertError {
    <ConvertError as ser::Error>::custom(format_args!("malformed payload for {token}"))
}

impl ser::Serializer for ValueSerializer {
    type Ok = Value;
    type Error = ConvertError;
    type SerializeSeq = Items;
    type SerializeTuple = Items;
    type SerializeTupleStruct = Items;
    type SerializeTupleVariant = Variant<Items>;
    type SerializeMap = Entries;
    type SerializeStruct = Entries;
    type SerializeStructVariant = Variant<Entries>;

    fn serialize_bool(self, v: bool) -> Result<Value, ConvertError> {
        Ok(Value::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Value, ConvertError> {
        Ok(Value::from(v))
    }
    fn serialize_i16(self, v: i16) -> Result<Value, ConvertError> {
        Ok(Value::from(v))
    }
    fn serialize_i32(self, v: i32) -> Result<Value, ConvertError> {
        Ok(Value::from(v))
    }
    fn serialize_i64(self, v: i64) -> Result<Value, ConvertError> {
        Ok(Value::from(v))
    }
    fn serialize_i128(self, v: i128) -> Result<Value, ConvertError> {
        Ok(Value::from(v))
    }
    fn serialize_u8(self, v: u8) -> Result<Value, ConvertError> {
        Ok(Value::from(v))
    }
    fn serialize_u16(self, v: u16) -> Result<Value, ConvertError> {
        Ok(Value::from(v))
    }
    fn serialize_u32(self, v: u32) -> Result<Value, ConvertError> {
        Ok(Value::from(v))
    }
    fn serialize_u64(self, v: u64) -> Result<Value, ConvertError> {
        Ok(Value::from(v))
    }
    fn serialize_u128(self, v: u128) -> Result<Value, ConvertError> {
        Ok(Value::from(v))
    }
    fn serialize_f32(self, v: f32) -> Result<Value, ConvertError> {
        Ok(Value::from(v))
    }
    fn serialize_f64(self, v: f64) -> Result<Value, ConvertError> {
        Ok(Value::Float(v))
    }
    fn serialize_char(self, v: char) -> Result<Value, ConvertError> {
        Ok(Value::from(v))
    }
    fn serialize_str(self, v: &str) -> Result<Value, ConvertError> {
        Ok(Value::from(v))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Value, ConvertError> {
        Ok(Value::Bytes(v.to_vec()))
    }
    fn serialize_none(self) -> Result<Value, ConvertError> {
        Ok(Value::None)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<Value, ConvertError> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<Value, ConvertError> {
        Ok(Value::None)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Value, ConvertError> {
        Ok(Value::None)
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Value, ConvertError> {
        Ok(Value::from(variant))
    }

    /// A newtype is its content, except magic.rs's reserved names, which
    /// rebuild the Python kind serde has no word for.
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        v: &T,
    ) -> Result<Value, ConvertError> {
        let payload = v.serialize(ValueSerializer)?;
        match name {
            magic::SET_TOKEN | magic::FROZENSET_TOKEN => {
                let Value::List(items) = payload else {
                    return Err(malformed(name));
                };
                let set = items.into_iter().collect();
                Ok(if name == magic::SET_TOKEN {
                    Value::Set(set)
                } else {
                    Value::FrozenSet(set)
                })
            }
            magic::COMPLEX_TOKEN => match payload.as_seq() {
                Some(&[Value::Float(re), Value::Float(im)]) => Ok(Value::Complex { re, im }),
                _ => Err(malformed(name)),
            },
            magic::BIGINT_TOKEN => {
                let (negative, magnitude) = payload
                    .as_bytes()
                    .and_then(magic::decode_bigint)
                    .ok_or_else(|| malformed(name))?;
                let sign = if negative {
                    num_bigint::Sign::Minus
                } else {
                    num_bigint::Sign::Plus
                };
                Ok(Value::from_bigint(num_bigint::BigInt::from_bytes_le(
                    sign, magnitude,
                )))
            }
            magic::SURROGATES_TOKEN => payload
                .as_bytes()
                .and_then(Value::from_generalized_utf8)
                .ok_or_else(|| malformed(name)),
            _ => Ok(payload),
        }
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<Value, ConvertError> {
        let mut d = Dict::with_capacity(1);
        d.insert(Value::from(variant), to_value(v)?);
        Ok(Value::Dict(d))
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Items, ConvertError> {
        Ok(Items::new(false, len.unwrap_or(0)))
    }
    fn serialize_tuple(self, len: usize) -> Result<Items, ConvertError> {
        Ok(Items::new(true, len))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Items, ConvertError> {
        Ok(Items::new(true, len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Variant<Items>, ConvertError> {
        Ok(Variant {
            name: variant,
            inner: Items::new(false, len),
        })
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Entries, ConvertError> {
        Ok(Entries::new(len.unwrap_or(0)))
    }
    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<Entries, ConvertError> {
        Ok(Entries::new(len))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Variant<Entries>, ConvertError> {
        Ok(Variant {
            name: variant,
            inner: Entries::new(len),
        })
    }
}

/// Most items reserved up front from a size hint.
const MAX_PREALLOC: usize = 4096;

/// A list or tuple being built.
#[derive(Debug)]
struct Items {
    tuple: bool,
    items: Vec<Value>,
}

impl Items {
    fn new(tuple: bool, len: usize) -> Items {
        Items {
            tuple,
            items: Vec::with_capacity(len.min(MAX_PREALLOC)),
        }
    }
    fn push<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), ConvertError> {
        self.items.push(to_value(v)?);
        Ok(())
    }
    fn finish(self) -> Value {
        if self.tuple {
            Value::Tuple(self.items)
        } else {
            Value::List(self.items)
        }
    }
}

impl ser::SerializeSeq for Items {
    type Ok = Value;
    type Error = ConvertError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), ConvertError> {
        self.push(v)
    }
    fn end(self) -> Result<Value, ConvertError> {
        Ok(self.finish())
    }
}

impl ser::SerializeTuple for Items {
    type Ok = Value;
    type Error = ConvertError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), ConvertError> {
        self.push(v)
    }
    fn end(self) -> Result<Value, ConvertError> {
        Ok(self.finish())
    }
}

impl ser::SerializeTupleStruct for Items {
    type Ok = Value;
    type Error = ConvertError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), ConvertError> {
        self.push(v)
    }
    fn end(self) -> Result<Value, ConvertError> {
        Ok(self.finish())
    }
}

/// A dict being built (from a map or a struct).
#[derive(Debug)]
struct Entries {
    dict: Dict,
    key: Option<Value>,
}

impl Entries {
    fn new(len: usize) -> Entries {
        Entries {
            dict: Dict::with_capacity(len.min(MAX_PREALLOC)),
            key: None,
        }
    }
}

impl ser::SerializeMap for Entries {
    type Ok = Value;
    type Error = ConvertError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), ConvertError> {
        self.key = Some(to_value(k)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), ConvertError> {
        let key = self.key.take().ok_or_else(|| {
            <ConvertError as ser::Error>::custom("serialize_value called before serialize_key")
        })?;
        self.dict.insert(key, to_value(v)?);
        Ok(())
    }
    fn end(self) -> Result<Value, ConvertError> {
        Ok(Value::Dict(self.dict))
    }
}

impl ser::SerializeStruct for Entries {
    type Ok = Value;
    type Error = ConvertError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        name: &'static str,
        v: &T,
    ) -> Result<(), ConvertError> {
        self.dict.insert(Value::from(name), to_value(v)?);
        Ok(())
    }
    fn end(self) -> Result<Value, ConvertError> {
        Ok(Value::Dict(self.dict))
    }
}

/// A tuple or struct variant being built: `{name: content}`.
#[derive(Debug)]
struct Variant<I> {
    name: &'static str,
    inner: I,
}

impl<I> Variant<I> {
    fn wrap(name: &'static str, content: Value) -> Value {
        let mut d = Dict::with_capacity(1);
        d.insert(Value::from(name), content);
        Value::Dict(d)
    }
}

impl ser::SerializeTupleVariant for Variant<Items> {
    type Ok = Value;
    type Error = ConvertError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), ConvertError> {
        self.inner.push(v)
    }
    fn end(self) -> Result<Value, ConvertError> {
        Ok(Self::wrap(self.name, self.inner.finish()))
    }
}

impl ser::SerializeStructVariant for Variant<Entries> {
    type Ok = Value;
    type Error = ConvertError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        name: &'static str,
        v: &T,
    ) -> Result<(), ConvertError> {
        ser::SerializeStruct::serialize_field(&mut self.inner, name, v)
    }
    fn end(self) -> Result<Value, ConvertError> {
        Ok(Self::wrap(self.name, Value::Dict(self.inner.dict)))
    }
}
