//! Conversions between [`Value`] and [`serde_json::Value`], and
//! [`ToJsonError`]. What converts and what is refused is in the `value`
//! module docs, section "`serde_json::Value`".

use std::fmt;

use num_bigint::BigInt;
use serde_json::{Map, Number};

use super::{Dict, Value};

/// Why a [`Value`] has no exact [`serde_json::Value`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ToJsonError {
    /// A `bytes`, `set`, `frozenset` or `complex`: JSON has no such type.
    NoJsonType {
        /// Python's name of the type (`"bytes"`, `"set"`, ...).
        python_type: &'static str,
    },
    /// A NaN or infinite `float`, which `serde_json::Value` cannot hold.
    NonFiniteFloat {
        /// Python's repr of it: `nan`, `inf` or `-inf`.
        repr: String,
    },
    /// An `int` outside both `i64` and `u64`.
    IntOutOfRange {
        /// The int in decimal.
        decimal: String,
    },
    /// A dict key that is not a `str` (JSON object keys are strings).
    KeyNotStr {
        /// Python's name of the key's type.
        key_type: &'static str,
    },
    /// A `str` holding a lone surrogate, which a JSON string in Rust cannot.
    LoneSurrogate,
}

impl ToJsonError {
    /// Python's name of the type of the value that could not convert (for
    /// [`ToJsonError::KeyNotStr`], the key's).
    pub fn python_type(&self) -> &'static str {
        match self {
            ToJsonError::NoJsonType { python_type } => python_type,
            ToJsonError::NonFiniteFloat { .. } => "float",
            ToJsonError::IntOutOfRange { .. } => "int",
            ToJsonError::KeyNotStr { key_type } => key_type,
            ToJsonError::LoneSurrogate => "str",
        }
    }
}

impl fmt::Display for ToJsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ToJsonError::NoJsonType { python_type } => {
                write!(f, "a Python {python_type} has no JSON form")
            }
            ToJsonError::NonFiniteFloat { repr } => {
                write!(f, "the Python float {repr} has no serde_json form")
            }
            ToJsonError::IntOutOfRange { decimal } => {
                let shown: String = decimal.chars().take(40).collect();
                let more = if decimal.len() > shown.len() {
                    "..."
                } else {
                    ""
                };
                write!(f, "the Python int {shown}{more} fits neither i64 nor u64")
            }
            ToJsonError::KeyNotStr { key_type } => {
                write!(
                    f,
                    "a dict key of Python type {key_type} is not a JSON object key (str)"
                )
            }
            ToJsonError::LoneSurrogate => {
                f.write_str("a Python str holding a lone surrogate has no serde_json form")
            }
        }
    }
}

impl std::error::Error for ToJsonError {}

/// Lossless: see the [module docs](crate::value#serde_jsonvalue).
impl From<serde_json::Value> for Value {
    fn from(v: serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::None,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => number(&n),
            serde_json::Value::String(s) => Value::Str(s),
            serde_json::Value::Array(items) => {
                Value::List(items.into_iter().map(Value::from).collect())
            }
            serde_json::Value::Object(map) => Value::Dict(
                map.into_iter()
                    .map(|(k, v)| (Value::Str(k), Value::from(v)))
                    .collect::<Dict>(),
            ),
        }
    }
}

/// A JSON number as Python's `json` reads it: an integer (of any size,
/// should serde_json carry one past 64 bits) as `int`, else `float`.
fn number(n: &Number) -> Value {
    if let Some(i) = n.as_i64() {
        return Value::Int(i);
    }
    if let Some(u) = n.as_u64() {
        return Value::from(u);
    }
    // Only with serde_json's arbitrary_precision can an integer be wider.
    let text = n.to_string();
    let digits = text.strip_prefix('-').unwrap_or(&text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(big) = text.parse::<BigInt>() {
            return Value::from_bigint(big);
        }
    }
    Value::Float(n.as_f64().unwrap_or(f64::NAN))
}

/// Exact, or a [`ToJsonError`]: see the [module docs](crate::value#serde_jsonvalue).
impl TryFrom<&Value> for serde_json::Value {
    type Error = ToJsonError;
    fn try_from(v: &Value) -> Result<serde_json::Value, ToJsonError> {
        Ok(match v {
            Value::None => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::BigInt(b) => match u64::try_from(&**b) {
                Ok(u) => serde_json::Value::from(u),
                Err(_) => {
                    return Err(ToJsonError::IntOutOfRange {
                        decimal: b.to_string(),
                    })
                }
            },
            Value::Float(f) => match Number::from_f64(*f) {
                Some(n) => serde_json::Value::Number(n),
                None => {
                    return Err(ToJsonError::NonFiniteFloat {
                        repr: v.to_string(),
                    })
                }
            },
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::SurrogateStr(_) => return Err(ToJsonError::LoneSurrogate),
            Value::Tuple(items) | Value::List(items) => serde_json::Value::Array(
                items
                    .iter()
                    .map(serde_json::Value::try_from)
                    .collect::<Result<_, _>>()?,
            ),
            Value::Dict(d) => {
                let mut map = Map::new();
                for (k, v) in d.iter() {
                    let Value::Str(key) = k else {
                        return Err(match k {
                            Value::SurrogateStr(_) => ToJsonError::LoneSurrogate,
                            _ => ToJsonError::KeyNotStr {
                                key_type: k.type_name(),
                            },
                        });
                    };
                    map.insert(key.clone(), serde_json::Value::try_from(v)?);
                }
                serde_json::Value::Object(map)
            }
            Value::Bytes(_) | Value::Set(_) | Value::FrozenSet(_) | Value::Complex { .. } => {
                return Err(ToJsonError::NoJsonType {
                    python_type: v.type_name(),
                })
            }
        })
    }
}

/// As the conversion from `&Value`.
impl TryFrom<Value> for serde_json::Value {
    type Error = ToJsonError;
    fn try_from(v: Value) -> Result<serde_json::Value, ToJsonError> {
        serde_json::Value::try_from(&v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::py;
    use serde_json::json;

    #[test]
    fn json_values_convert_losslessly_both_ways() {
        let j = json!({"a": [1, -2, 2.5, null, true, "s"], "b": {"c": u64::MAX}, "d": i64::MIN});
        let v = Value::from(j.clone());
        assert_eq!(v["a"], py!([1, -2, 2.5, None, true, "s"]));
        assert_eq!(v["b"]["c"], Value::from(u64::MAX));
        assert_eq!(v["d"], i64::MIN);
        assert_eq!(serde_json::Value::try_from(&v), Ok(j));
        assert_eq!(
            serde_json::Value::try_from(py!((1, [2.0]))),
            Ok(json!([1, [2.0]]))
        );
    }

    #[test]
    fn what_json_cannot_hold_is_refused_by_name() {
        let err = |v: Value| serde_json::Value::try_from(v).expect_err("refused");
        let cases = [
            (py!(b"x"), "bytes", "a Python bytes has no JSON form"),
            (py!(set[1]), "set", "a Python set has no JSON form"),
            (
                py!(frozenset[1]),
                "frozenset",
                "a Python frozenset has no JSON form",
            ),
            (
                Value::complex(1.0, 2.0),
                "complex",
                "a Python complex has no JSON form",
            ),
            (
                py!(f64::NAN),
                "float",
                "the Python float nan has no serde_json form",
            ),
            (
                py!(f64::NEG_INFINITY),
                "float",
                "the Python float -inf has no serde_json form",
            ),
            (
                Value::from(i128::MIN),
                "int",
                "the Python int -170141183460469231731687303715884105728 fits neither i64 nor u64",
            ),
            (
                py!({1: 2}),
                "int",
                "a dict key of Python type int is not a JSON object key (str)",
            ),
            (
                py!({(): 2}),
                "tuple",
                "a dict key of Python type tuple is not a JSON object key (str)",
            ),
        ];
        for (v, ty, msg) in cases {
            let e = err(py!([{"k": [v]}]));
            assert_eq!(e.python_type(), ty);
            assert_eq!(e.to_string(), msg);
        }
        let lone = Value::from_code_points([0xDC80]).expect("valid");
        assert_eq!(err(py!([lone.clone()])), ToJsonError::LoneSurrogate);
        let mut d = Dict::new();
        d.insert(lone, Value::None);
        assert_eq!(err(Value::Dict(d)), ToJsonError::LoneSurrogate);
    }
}
