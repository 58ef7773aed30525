//! The private protocol between [`Value`](crate::Value) and miniray's own
//! formats, for the Python types serde's data model has no word for.
//!
//! serde knows unit, bool, integers up to 128 bits, floats, str, bytes,
//! sequences, tuples and maps. Python also has set, frozenset, complex,
//! ints of any size and strings holding lone surrogates. `Value` carries
//! them through serde under reserved names, as `serde_json` carries its
//! arbitrary-precision numbers; a format that does not know the names sees
//! ordinary serde data (a sequence, a pair of floats, bytes).
//!
//! **Serializing** (`Value` → format): `Value::Tuple` is `serialize_tuple`;
//! the others are `serialize_newtype_struct(TOKEN, payload)`:
//!
//! | token             | payload as serialized                                   |
//! |-------------------|---------------------------------------------------------|
//! | [`SET_TOKEN`]       | `serialize_seq` of the items                            |
//! | [`FROZENSET_TOKEN`] | `serialize_seq` of the items                            |
//! | [`COMPLEX_TOKEN`]   | `serialize_tuple` of two `f64`: real, imaginary         |
//! | [`BIGINT_TOKEN`]    | `serialize_bytes`: [`encode_bigint`] (sign, magnitude)  |
//! | [`SURROGATES_TOKEN`]| `serialize_bytes`: the code points as generalized UTF-8 |
//!
//! An int that fits `i64`, `u64`, `i128` or `u128` is serialized as that
//! (the first that fits), never with [`BIGINT_TOKEN`].
//!
//! **Deserializing** (format → `Value`): `Value::deserialize` calls
//! `deserialize_newtype_struct(VALUE_TOKEN, visitor)`. A format that knows
//! the token answers that one call in *exact mode*: it calls
//! `visitor.visit_newtype_struct(d)`, where `d` is itself in exact mode, and
//! the visitor calls `d.deserialize_any`. In exact mode only, `deserialize_any`
//! reports a tuple, set, frozenset, complex, an int past 128 bits or a
//! string with lone surrogates through [`visit_magic`] (an enum whose
//! variant is the [`Magic`] kind) instead of its plain serde form. Every
//! other kind is reported as usual (`visit_seq` for a list, `visit_map` for
//! a dict, ...). Exact mode ends with that one `deserialize_any`: nested
//! values ask for it again (they are `Value`s too), and a user's own type
//! nested inside never sees a magic enum. Outside exact mode the formats
//! report a tuple, set or frozenset as a sequence, a complex as a sequence
//! of two floats, and refuse an int past 128 bits or a lone surrogate with
//! an error naming it (no Rust type but `Value` holds them).
//!
//! A foreign format (`serde_json`, ...) knows no token: it treats
//! `VALUE_TOKEN` as a transparent newtype, so `Value` deserializes from it
//! through plain `deserialize_any`.
//!
//! Payloads a format hands to [`visit_magic`]: a tuple, set or frozenset, a
//! deserializer whose `deserialize_any`/`deserialize_seq` visit a sequence of
//! the items (`serde::de::value::SeqAccessDeserializer` over the format's
//! own `SeqAccess`); a complex, a sequence of two `f64`
//! (`serde::de::value::SeqDeserializer`); a big int, bytes in the
//! [`encode_bigint`] layout; lone surrogates, bytes of generalized UTF-8
//! (`serde::de::value::BytesDeserializer`).

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, VariantAccess, Visitor};

use super::Value;

/// The name under which `Value::deserialize` asks a format for exact mode.
pub(crate) const VALUE_TOKEN: &str = "$miniray::Value";
/// Newtype name of a Python `set` (payload: a sequence).
pub(crate) const SET_TOKEN: &str = "$miniray::set";
/// Newtype name of a Python `frozenset` (payload: a sequence).
pub(crate) const FROZENSET_TOKEN: &str = "$miniray::frozenset";
/// Newtype name of a Python `complex` (payload: a tuple of two `f64`).
pub(crate) const COMPLEX_TOKEN: &str = "$miniray::complex";
/// Newtype name of an int past 128 bits (payload: bytes, [`encode_bigint`]).
pub(crate) const BIGINT_TOKEN: &str = "$miniray::bigint";
/// Newtype name of a str with lone surrogates (payload: generalized UTF-8).
pub(crate) const SURROGATES_TOKEN: &str = "$miniray::surrogates";

/// The Python kinds that travel through [`visit_magic`] in exact mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Magic {
    /// A tuple; payload: a sequence of the items.
    Tuple = 0,
    /// A set; payload: a sequence of the items.
    Set = 1,
    /// A frozenset; payload: a sequence of the items.
    FrozenSet = 2,
    /// A complex; payload: a sequence of two `f64` (real, imaginary).
    Complex = 3,
    /// An int past 128 bits; payload: bytes in the [`encode_bigint`] layout.
    BigInt = 4,
    /// A str with lone surrogates; payload: bytes of generalized UTF-8.
    Surrogates = 5,
    /// A whole `Value` the format built itself ([`hand_over`]); payload:
    /// unit.
    Built = 6,
}

impl Magic {
    const ALL: [Magic; 7] = [
        Magic::Tuple,
        Magic::Set,
        Magic::FrozenSet,
        Magic::Complex,
        Magic::BigInt,
        Magic::Surrogates,
        Magic::Built,
    ];
}

thread_local! {
    /// The value [`hand_over`] is giving to `Value`'s visitor.
    static HANDED: Cell<Option<Value>> = const { Cell::new(None) };
}

/// Gives `value`, built by a format without serde, to the visitor of
/// `Value::deserialize` (which asked with [`VALUE_TOKEN`]): reported as
/// [`Magic::Built`], the visitor takes it with [`take_handed`]. Nothing is
/// left behind: a visitor that does not take it (no `Value`'s) drops it
/// here.
pub(crate) fn hand_over<'de, V, E>(visitor: V, value: Value) -> Result<V::Value, E>
where
    V: Visitor<'de>,
    E: de::Error,
{
    HANDED.with(|h| h.set(Some(value)));
    let r = visit_magic(
        visitor,
        Magic::Built,
        de::value::UnitDeserializer::<E>::new(),
    );
    drop(HANDED.with(Cell::take));
    r
}

/// The value [`hand_over`] is giving, once.
pub(crate) fn take_handed() -> Option<Value> {
    HANDED.with(Cell::take)
}

impl<'de> de::Deserialize<'de> for Magic {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KindVisitor;
        impl Visitor<'_> for KindVisitor {
            type Value = Magic;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a miniray value kind")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Magic, E> {
                Magic::ALL
                    .into_iter()
                    .find(|m| *m as u64 == v)
                    .ok_or_else(|| E::custom(format_args!("no miniray value kind {v}")))
            }
        }
        d.deserialize_u64(KindVisitor)
    }
}

/// Reports a magic kind to `visitor` as an enum whose variant is `kind` and
/// whose newtype content is `payload` (see the module docs for each
/// kind's payload).
#[allow(dead_code)] // called by the formats (marshal, json)
pub(crate) fn visit_magic<'de, V, P>(
    visitor: V,
    kind: Magic,
    payload: P,
) -> Result<V::Value, P::Error>
where
    V: Visitor<'de>,
    P: Deserializer<'de>,
{
    visitor.visit_enum(MagicAccess {
        kind,
        payload,
        lifetime: PhantomData,
    })
}

struct MagicAccess<'de, P> {
    kind: Magic,
    payload: P,
    lifetime: PhantomData<&'de ()>,
}

impl<'de, P: Deserializer<'de>> EnumAccess<'de> for MagicAccess<'de, P> {
    type Error = P::Error;
    type Variant = Self;
    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self), P::Error> {
        let kind = de::value::U64Deserializer::<P::Error>::new(self.kind as u64);
        Ok((seed.deserialize(kind)?, self))
    }
}

impl<'de, P: Deserializer<'de>> VariantAccess<'de> for MagicAccess<'de, P> {
    type Error = P::Error;
    fn unit_variant(self) -> Result<(), P::Error> {
        Err(de::Error::custom("a miniray value kind always has content"))
    }
    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, P::Error> {
        seed.deserialize(self.payload)
    }
    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, P::Error> {
        self.payload.deserialize_seq(visitor)
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, P::Error> {
        self.payload.deserialize_seq(visitor)
    }
}

/// The [`BIGINT_TOKEN`] payload: one sign byte (0 for a non-negative
/// number, 1 for a negative one), then the magnitude's bytes, least
/// significant first, without trailing zero bytes.
pub(crate) fn encode_bigint(negative: bool, magnitude_le: &[u8], out: &mut Vec<u8>) {
    let len = magnitude_le
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i + 1);
    out.push(u8::from(negative));
    out.extend_from_slice(&magnitude_le[..len]);
}

/// Splits a [`BIGINT_TOKEN`] payload into sign and magnitude bytes
/// (least significant first); `None` if it is empty or its sign byte is
/// neither 0 nor 1.
pub(crate) fn decode_bigint(payload: &[u8]) -> Option<(bool, &[u8])> {
    match payload.split_first()? {
        (0, magnitude) => Some((false, magnitude)),
        (1, magnitude) => Some((true, magnitude)),
        _ => None,
    }
}
