//! [`py!`](crate::py): Python literals in Rust, as `serde_json::json!`
//! writes JSON.

/// Builds a [`Value`](crate::Value) from Python-looking syntax, as
/// `serde_json::json!` builds JSON.
///
/// | you write                         | you get                                  |
/// |-----------------------------------|------------------------------------------|
/// | `None` or `null`                  | `None`                                   |
/// | `[a, b]`                          | a `list`                                 |
/// | `(a, b)`, `(a,)`, `()`            | a `tuple` (`(a)` alone is just `a`, as in Python) |
/// | `{k: v, ...}`                     | a `dict`; keys are any of these forms or any expression |
/// | `set[a, b]`, `frozenset[a, b]`    | a `set`, a `frozenset` (`set[]` is `set()`) |
/// | any other Rust expression `e`     | `Value::from(e)`: `1`, `2.5`, `true`, `"s"`, `b"bytes"`, a variable, a call |
///
/// The forms nest, and an interpolated expression may be anything with
/// `Into<Value>` (see the [`From` impls](crate::Value#trait-implementations)):
/// `b"..."` is `bytes` (a `Vec<u8>` is a list; use
/// [`Value::bytes`](crate::Value::bytes)), `true`/`false` are `bool`s.
///
/// ```
/// use miniray::{py, Value};
///
/// let n = 3;
/// let xs = vec![1.5, 2.5];
/// let v = py!({
///     "n": n,
///     "xs": xs,
///     "raw": b"\x00\xff",
///     2: [3, None, "x"],
///     (1, 2): (),
///     "one": (1,),
///     "tags": set["a", "b"],
///     "frozen": frozenset[],
///     None: null,
/// });
/// assert_eq!(v["n"], 3);
/// assert_eq!(v["xs"][1], 2.5);
/// assert_eq!(v["raw"].as_bytes(), Some(&b"\x00\xff"[..]));
/// assert_eq!(v[2][2], "x");
/// assert_eq!(v[&py!((1, 2))], Value::Tuple(vec![]));
/// assert_eq!(v["one"].to_string(), "(1,)");
/// assert_eq!(v["tags"].to_string(), "{'a', 'b'}");
/// assert_eq!(v["frozen"].to_string(), "frozenset()");
/// assert_eq!(py!((1)), py!(1)); // parentheses alone make no tuple
/// assert_eq!(py!((n + 1) * 2), 8); // nor around part of an expression
/// ```
///
/// A form is recognized only when it is a whole item: `[1, 2].len()` and
/// `(a + b) * 2` are expressions. To interpolate a block `{ ... }` or a
/// variable named `set` or `frozenset` followed by `[`, bind it to a name
/// first. Like `json!`, the macro recurses once per item, so a literal of
/// more than about a hundred items at one level needs
/// `#![recursion_limit = "256"]` (or build it with `Value::from(vec)`).
#[macro_export]
macro_rules! py {
    // ---- Items of a list, tuple, set or frozenset: @seq KIND [DONE,] (REST)
    (@seq $k:ident [$($d:expr,)*] ()) => {
        $crate::py!(@end $k [$($d,)*] comma)
    };
    (@seq $k:ident [$($d:expr,)*] (None , $($rest:tt)*)) => {
        $crate::py!(@seq $k [$($d,)* $crate::Value::None,] ($($rest)*))
    };
    (@seq $k:ident [$($d:expr,)*] (None)) => {
        $crate::py!(@end $k [$($d,)* $crate::Value::None,] last)
    };
    (@seq $k:ident [$($d:expr,)*] (null , $($rest:tt)*)) => {
        $crate::py!(@seq $k [$($d,)* $crate::Value::None,] ($($rest)*))
    };
    (@seq $k:ident [$($d:expr,)*] (null)) => {
        $crate::py!(@end $k [$($d,)* $crate::Value::None,] last)
    };
    (@seq $k:ident [$($d:expr,)*] (set [$($t:tt)*] , $($rest:tt)*)) => {
        $crate::py!(@seq $k [$($d,)* $crate::py!(set [$($t)*]),] ($($rest)*))
    };
    (@seq $k:ident [$($d:expr,)*] (set [$($t:tt)*])) => {
        $crate::py!(@end $k [$($d,)* $crate::py!(set [$($t)*]),] last)
    };
    (@seq $k:ident [$($d:expr,)*] (frozenset [$($t:tt)*] , $($rest:tt)*)) => {
        $crate::py!(@seq $k [$($d,)* $crate::py!(frozenset [$($t)*]),] ($($rest)*))
    };
    (@seq $k:ident [$($d:expr,)*] (frozenset [$($t:tt)*])) => {
        $crate::py!(@end $k [$($d,)* $crate::py!(frozenset [$($t)*]),] last)
    };
    (@seq $k:ident [$($d:expr,)*] ([$($t:tt)*] , $($rest:tt)*)) => {
        $crate::py!(@seq $k [$($d,)* $crate::py!([$($t)*]),] ($($rest)*))
    };
    (@seq $k:ident [$($d:expr,)*] ([$($t:tt)*])) => {
        $crate::py!(@end $k [$($d,)* $crate::py!([$($t)*]),] last)
    };
    (@seq $k:ident [$($d:expr,)*] (($($t:tt)*) , $($rest:tt)*)) => {
        $crate::py!(@seq $k [$($d,)* $crate::py!(($($t)*)),] ($($rest)*))
    };
    (@seq $k:ident [$($d:expr,)*] (($($t:tt)*))) => {
        $crate::py!(@end $k [$($d,)* $crate::py!(($($t)*)),] last)
    };
    (@seq $k:ident [$($d:expr,)*] ({$($t:tt)*} , $($rest:tt)*)) => {
        $crate::py!(@seq $k [$($d,)* $crate::py!({$($t)*}),] ($($rest)*))
    };
    (@seq $k:ident [$($d:expr,)*] ({$($t:tt)*})) => {
        $crate::py!(@end $k [$($d,)* $crate::py!({$($t)*}),] last)
    };
    (@seq $k:ident [$($d:expr,)*] ($e:expr , $($rest:tt)*)) => {
        $crate::py!(@seq $k [$($d,)* $crate::Value::from($e),] ($($rest)*))
    };
    (@seq $k:ident [$($d:expr,)*] ($e:expr)) => {
        $crate::py!(@end $k [$($d,)* $crate::Value::from($e),] last)
    };

    // ---- The finished sequence; `last` = no comma after the last item.
    (@end tuple [$only:expr,] last) => {
        $only
    };
    (@end tuple [$($d:expr,)*] $_c:ident) => {
        $crate::Value::Tuple(::std::vec![$($d),*])
    };
    (@end list [$($d:expr,)*] $_c:ident) => {
        $crate::Value::List(::std::vec![$($d),*])
    };
    (@end set [$($d:expr,)*] $_c:ident) => {{
        let items: ::std::vec::Vec<$crate::Value> = ::std::vec![$($d),*];
        $crate::Value::Set(items.into_iter().collect())
    }};
    (@end frozenset [$($d:expr,)*] $_c:ident) => {{
        let items: ::std::vec::Vec<$crate::Value> = ::std::vec![$($d),*];
        $crate::Value::FrozenSet(items.into_iter().collect())
    }};

    // ---- Dict entries: @dict [(K, V)...] (KEY TOKENS) (REST)
    (@dict [$($e:tt)*] () ()) => {{
        #[allow(unused_mut)]
        let mut dict = $crate::Dict::new();
        $(
            let (k, v): ($crate::Value, $crate::Value) = $e;
            dict.insert(k, v);
        )*
        $crate::Value::Dict(dict)
    }};
    // A one-token key (the common case) and its value in one step, so a
    // dict costs one recursion level per entry.
    (@dict [$($e:tt)*] () ($key:tt : None $(, $($rest:tt)*)?)) => {
        $crate::py!(@dict [$($e)* ($crate::py!($key), $crate::Value::None)] () ($($($rest)*)?))
    };
    (@dict [$($e:tt)*] () ($key:tt : null $(, $($rest:tt)*)?)) => {
        $crate::py!(@dict [$($e)* ($crate::py!($key), $crate::Value::None)] () ($($($rest)*)?))
    };
    (@dict [$($e:tt)*] () ($key:tt : set [$($t:tt)*] $(, $($rest:tt)*)?)) => {
        $crate::py!(@dict [$($e)* ($crate::py!($key), $crate::py!(set [$($t)*]))] () ($($($rest)*)?))
    };
    (@dict [$($e:tt)*] () ($key:tt : frozenset [$($t:tt)*] $(, $($rest:tt)*)?)) => {
        $crate::py!(@dict [$($e)* ($crate::py!($key), $crate::py!(frozenset [$($t)*]))] () ($($($rest)*)?))
    };
    (@dict [$($e:tt)*] () ($key:tt : [$($t:tt)*] $(, $($rest:tt)*)?)) => {
        $crate::py!(@dict [$($e)* ($crate::py!($key), $crate::py!([$($t)*]))] () ($($($rest)*)?))
    };
    (@dict [$($e:tt)*] () ($key:tt : ($($t:tt)*) $(, $($rest:tt)*)?)) => {
        $crate::py!(@dict [$($e)* ($crate::py!($key), $crate::py!(($($t)*)))] () ($($($rest)*)?))
    };
    (@dict [$($e:tt)*] () ($key:tt : {$($t:tt)*} $(, $($rest:tt)*)?)) => {
        $crate::py!(@dict [$($e)* ($crate::py!($key), $crate::py!({$($t)*}))] () ($($($rest)*)?))
    };
    (@dict [$($e:tt)*] () ($key:tt : $v:expr $(, $($rest:tt)*)?)) => {
        $crate::py!(@dict [$($e)* ($crate::py!($key), $crate::Value::from($v))] () ($($($rest)*)?))
    };
    (@dict [$($e:tt)*] ($($key:tt)+) (: $($rest:tt)*)) => {
        $crate::py!(@value [$($e)*] ($($key)+) ($($rest)*))
    };
    (@dict [$($e:tt)*] ($($key:tt)*) ($next:tt $($rest:tt)*)) => {
        $crate::py!(@dict [$($e)*] ($($key)* $next) ($($rest)*))
    };

    // ---- A dict value after `KEY:`, then back to @dict.
    (@value [$($e:tt)*] ($($key:tt)+) (None $(, $($rest:tt)*)?)) => {
        $crate::py!(@dict [$($e)* ($crate::py!($($key)+), $crate::Value::None)] () ($($($rest)*)?))
    };
    (@value [$($e:tt)*] ($($key:tt)+) (null $(, $($rest:tt)*)?)) => {
        $crate::py!(@dict [$($e)* ($crate::py!($($key)+), $crate::Value::None)] () ($($($rest)*)?))
    };
    (@value [$($e:tt)*] ($($key:tt)+) (set [$($t:tt)*] $(, $($rest:tt)*)?)) => {
        $crate::py!(@dict [$($e)* ($crate::py!($($key)+), $crate::py!(set [$($t)*]))] () ($($($rest)*)?))
    };
    (@value [$($e:tt)*] ($($key:tt)+) (frozenset [$($t:tt)*] $(, $($rest:tt)*)?)) => {
        $crate::py!(@dict [$($e)* ($crate::py!($($key)+), $crate::py!(frozenset [$($t)*]))] () ($($($rest)*)?))
    };
    (@value [$($e:tt)*] ($($key:tt)+) ([$($t:tt)*] $(, $($rest:tt)*)?)) => {
        $crate::py!(@dict [$($e)* ($crate::py!($($key)+), $crate::py!([$($t)*]))] () ($($($rest)*)?))
    };
    (@value [$($e:tt)*] ($($key:tt)+) (($($t:tt)*) $(, $($rest:tt)*)?)) => {
        $crate::py!(@dict [$($e)* ($crate::py!($($key)+), $crate::py!(($($t)*)))] () ($($($rest)*)?))
    };
    (@value [$($e:tt)*] ($($key:tt)+) ({$($t:tt)*} $(, $($rest:tt)*)?)) => {
        $crate::py!(@dict [$($e)* ($crate::py!($($key)+), $crate::py!({$($t)*}))] () ($($($rest)*)?))
    };
    (@value [$($e:tt)*] ($($key:tt)+) ($v:expr $(, $($rest:tt)*)?)) => {
        $crate::py!(@dict [$($e)* ($crate::py!($($key)+), $crate::Value::from($v))] () ($($($rest)*)?))
    };

    // ---- Entry points.
    (None) => {
        $crate::Value::None
    };
    (null) => {
        $crate::Value::None
    };
    (set [$($t:tt)*]) => {
        $crate::py!(@seq set [] ($($t)*))
    };
    (frozenset [$($t:tt)*]) => {
        $crate::py!(@seq frozenset [] ($($t)*))
    };
    ([$($t:tt)*]) => {
        $crate::py!(@seq list [] ($($t)*))
    };
    (($($t:tt)*)) => {
        $crate::py!(@seq tuple [] ($($t)*))
    };
    ({$($t:tt)*}) => {
        $crate::py!(@dict [] () ($($t)*))
    };
    ($e:expr) => {
        $crate::Value::from($e)
    };
}

#[cfg(test)]
mod tests {
    use crate::{Dict, Value};

    #[test]
    fn scalars() {
        assert_eq!(py!(None), Value::None);
        assert_eq!(py!(null), Value::None);
        assert_eq!(py!(true), Value::Bool(true));
        assert_eq!(py!(-1), Value::Int(-1));
        assert_eq!(py!(2.5), Value::Float(2.5));
        assert_eq!(py!("s"), Value::Str("s".into()));
        assert_eq!(py!(b"by"), Value::Bytes(b"by".to_vec()));
        assert_eq!(py!(u128::MAX), Value::from(u128::MAX));
    }

    #[test]
    fn tuples_follow_python_comma_rules() {
        assert_eq!(py!(()), Value::Tuple(vec![]));
        assert_eq!(py!((1,)), Value::Tuple(vec![Value::Int(1)]));
        assert_eq!(py!((1)), Value::Int(1));
        assert_eq!(py!(([1])), py!([1]));
        assert_eq!(py!((None,)), Value::Tuple(vec![Value::None]));
        assert_eq!(py!(((),)), Value::Tuple(vec![Value::Tuple(vec![])]));
        assert_eq!(
            py!((1, "a", [2],)),
            Value::Tuple(vec![1.into(), "a".into(), Value::List(vec![2.into()])])
        );
    }

    #[test]
    fn lists_sets_and_nesting() {
        assert_eq!(py!([]), Value::List(vec![]));
        assert_eq!(
            py!([1, "a", [2], None, {}, set[], (3,)]),
            Value::List(vec![
                1.into(),
                "a".into(),
                Value::List(vec![2.into()]),
                Value::None,
                Value::Dict(Dict::new()),
                Value::set(Vec::<Value>::new()),
                Value::Tuple(vec![3.into()]),
            ])
        );
        assert_eq!(py!(set[1, 2, 1]), Value::set([1, 2]));
        assert_eq!(
            py!(frozenset[1, (2, 3)]),
            Value::frozenset([py!(1), py!((2, 3))])
        );
        assert_eq!(
            py!([set[1], frozenset[2]]).to_string(),
            "[{1}, frozenset({2})]"
        );
    }

    #[test]
    fn dicts_take_any_key() {
        let n = 5;
        let key = String::from("dyn");
        let xs = vec![1, 2];
        let v = py!({
            "k": 1,
            2: [3],
            (1, 2): None,
            None: null,
            key: n,
            "xs": xs,
            "expr": n * 2 + 1,
            "nested": {"a": set["x"], "b": frozenset[1]},
            "t": (n,),
        });
        assert_eq!(v.as_dict().map(|d| d.len()), Some(9));
        assert_eq!(v["k"], 1);
        assert_eq!(v[2], py!([3]));
        assert!(v.get(py!((1, 2))).is_some_and(Value::is_none));
        assert!(v.get(&Value::None).is_some());
        assert_eq!(v["dyn"], 5);
        assert_eq!(v["expr"], 11);
        assert_eq!(v["xs"], py!([1, 2]));
        assert_eq!(v["nested"]["a"], Value::set(["x"]));
        assert_eq!(v["t"], Value::Tuple(vec![5.into()]));
        assert_eq!(py!({}), Value::Dict(Dict::new()));
        assert_eq!(py!({"a": 1, "a": 2}).to_string(), "{'a': 2}");
        assert_eq!(py!({"last": [1]}), py!({"last": [1],}));
        assert_eq!(py!({-1: 2, n + 1: 3})[6], 3);
        assert_eq!(py!({-1: 2})[&py!(-1)], 2);
    }

    #[test]
    fn groups_followed_by_more_are_expressions() {
        assert_eq!(py!([[1, 2].len(), (2 + 3) * 2]), py!([2, 10]));
        assert_eq!(py!({"n": [1].len(), (1): (2)}), py!({"n": 1, 1: 2}));
    }

    /// A hundred items at one level fit the default recursion limit.
    #[test]
    fn long_literals_compile() {
        let list = py!([
            0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5, 6, 7, 8,
            9, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5, 6, 7,
            8, 9, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5, 6,
            7, 8, 9, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9
        ]);
        assert_eq!(list.as_seq().map(<[_]>::len), Some(100));
        let dict = py!({
            0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 7, 8: 8, 9: 9, 10: 0, 11: 1, 12: 2,
            13: 3, 14: 4, 15: 5, 16: 6, 17: 7, 18: 8, 19: 9, 20: 0, 21: 1, 22: 2, 23: 3, 24: 4,
            25: 5, 26: 6, 27: 7, 28: 8, 29: 9, 30: 0, 31: 1, 32: 2, 33: 3, 34: 4, 35: 5, 36: 6,
            37: 7, 38: 8, 39: 9, 40: 0, 41: 1, 42: 2, 43: 3, 44: 4, 45: 5, 46: 6, 47: 7, 48: 8,
            49: 9, 50: 0, 51: 1, 52: 2, 53: 3, 54: 4, 55: 5, 56: 6, 57: 7, 58: 8, 59: 9, 60: 0,
            61: 1, 62: 2, 63: 3, 64: 4, 65: 5, 66: 6, 67: 7, 68: 8, 69: 9, 70: 0, 71: 1, 72: 2,
            73: 3, 74: 4, 75: 5, 76: 6, 77: 7, 78: 8, 79: 9, 80: 0, 81: 1, 82: 2, 83: 3, 84: 4,
            85: 5, 86: 6, 87: 7, 88: 8, 89: 9, 90: 0, 91: 1, 92: 2, 93: 3, 94: 4, 95: 5, 96: 6,
            97: 7, 98: 8, 99: 9
        });
        assert_eq!(dict.as_dict().map(|d| d.len()), Some(100));
    }
}
