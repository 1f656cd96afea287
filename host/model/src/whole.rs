//! Integer fields that take any JSON number without a fractional part.
//!
//! JSON has one kind of number, and JSON Schema's `integer` is "a number whose fractional part is
//! zero": `5`, `5.0` and `5e0` are the same integer to a client (JavaScript cannot even tell them
//! apart, and schema-driven generators such as schemathesis send `5.0`). serde's integer types
//! only take the first spelling, so integer fields of request bodies deserialize through here:
//!
//! ```ignore
//! #[serde(default, deserialize_with = "whole::deserialize")]
//! pub priority: Option<i32>,
//! ```
//!
//! `default` keeps an absent field `None`. A fraction (`1.5`), a value out of the type's range
//! and any non-number are refused with serde's usual message (`invalid type: floating point
//! `1.5`, expected i32`), which the API turns into its 400 naming the field.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, Unexpected, Visitor};

/// Deserializes an integer field (`T`, `Option<T>`, or `Option<Option<T>>` for a field that
/// `null` clears) from a JSON integer or a whole-number float.
pub fn deserialize<'de, F: Field, D: Deserializer<'de>>(d: D) -> Result<F, D::Error> {
    F::deserialize_whole(d)
}

/// The integer types a field can hold.
pub trait Int: Sized + TryFrom<i64> + TryFrom<u64> {
    /// The name serde's own messages use, so both spellings fail alike.
    const NAME: &'static str;
}

macro_rules! int {
    ($($t:ty),*) => { $( impl Int for $t { const NAME: &'static str = stringify!($t); } )* };
}
int!(i32, u32, i64, u64);

/// The shapes of an integer field; see [`deserialize`].
pub trait Field: Sized {
    fn deserialize_whole<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error>;
}

impl<T: Int> Field for T {
    fn deserialize_whole<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Whole::<T>::deserialize(d).map(|w| w.0)
    }
}

impl<T: Int> Field for Option<T> {
    fn deserialize_whole<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Option::<Whole<T>>::deserialize(d).map(|o| o.map(|w| w.0))
    }
}

/// Present (even as `null`) is `Some`; absent is the field's `default`, `None`.
impl<T: Int> Field for Option<Option<T>> {
    fn deserialize_whole<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Option::<Whole<T>>::deserialize(d).map(|o| Some(o.map(|w| w.0)))
    }
}

struct Whole<T>(T);

impl<'de, T: Int> Deserialize<'de> for Whole<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(WholeVisitor(PhantomData)).map(Whole)
    }
}

struct WholeVisitor<T>(PhantomData<T>);

/// 2^53: up to here every integer is an `f64` and no `f64` has a fraction too small to see, so
/// a whole float is exactly the number the client wrote. Beyond it `9007199254740993.0` would
/// quietly become `…992`.
const EXACT_UP_TO: f64 = 9_007_199_254_740_992.0;

impl<'de, T: Int> Visitor<'de> for WholeVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(T::NAME)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        if !v.is_finite() || v.fract() != 0.0 {
            return Err(E::invalid_type(Unexpected::Float(v), &self));
        }
        if v.abs() > EXACT_UP_TO {
            return Err(E::invalid_value(
                Unexpected::Float(v),
                &format!(
                    "{} written without a decimal point or exponent (beyond 2^53 such a number \
                     is not exact)",
                    T::NAME
                )
                .as_str(),
            ));
        }
        // Exact: |v| ≤ 2^53 fits both types without rounding, and `-0.0` becomes 0.
        if v < 0.0 {
            self.visit_i64(v as i64)
        } else {
            self.visit_u64(v as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        #[serde(default, deserialize_with = "super::deserialize")]
        small: Option<i32>,
        #[serde(default, deserialize_with = "super::deserialize")]
        count: Option<u32>,
        #[serde(default, deserialize_with = "super::deserialize")]
        big: Option<u64>,
        #[serde(default, deserialize_with = "super::deserialize")]
        clearable: Option<Option<u64>>,
        #[serde(default, deserialize_with = "super::deserialize")]
        plain: i64,
    }

    fn parse(json: &str) -> Result<Body, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn whole_floats_are_integers() {
        let b = parse(
            r#"{"small": -789.0, "count": 5e2, "big": 9007199254740992.0, "plain": -0.0,
                "clearable": 1.0}"#,
        )
        .unwrap();
        assert_eq!(b.small, Some(-789));
        assert_eq!(b.count, Some(500));
        assert_eq!(b.big, Some(9_007_199_254_740_992));
        assert_eq!(b.plain, 0);
        assert_eq!(b.clearable, Some(Some(1)));
        // The integer spellings keep their full range.
        let b = parse(r#"{"big": 18446744073709551615, "plain": -9223372036854775808}"#).unwrap();
        assert_eq!((b.big, b.plain), (Some(u64::MAX), i64::MIN));
    }

    #[test]
    fn absent_and_null_stay_apart() {
        let b = parse("{}").unwrap();
        assert_eq!((b.small, b.clearable, b.plain), (None, None, 0));
        let b = parse(r#"{"small": null, "clearable": null}"#).unwrap();
        assert_eq!((b.small, b.clearable), (None, Some(None)));
    }

    #[test]
    fn fractions_ranges_and_other_types_are_refused() {
        for (json, message) in [
            (
                r#"{"small": 1.5}"#,
                "invalid type: floating point `1.5`, expected i32",
            ),
            (
                r#"{"count": -0.5}"#,
                "invalid type: floating point `-0.5`, expected u32",
            ),
            (
                r#"{"count": -1}"#,
                "invalid value: integer `-1`, expected u32",
            ),
            (
                r#"{"count": -1.0}"#,
                "invalid value: integer `-1`, expected u32",
            ),
            (
                r#"{"small": 3e9}"#,
                "invalid value: integer `3000000000`, expected i32",
            ),
            (r#"{"small": 1e400}"#, "number out of range"),
            (
                r#"{"big": 1e19}"#,
                "expected u64 written without a decimal point",
            ),
            (r#"{"big": 9007199254740994.0}"#, "beyond 2^53"),
            (
                r#"{"plain": "1"}"#,
                "invalid type: string \"1\", expected i64",
            ),
            (
                r#"{"plain": true}"#,
                "invalid type: boolean `true`, expected i64",
            ),
            (r#"{"plain": null}"#, "invalid type: null, expected i64"),
            (
                r#"{"clearable": 0.25}"#,
                "floating point `0.25`, expected u64",
            ),
        ] {
            let e = parse(json).unwrap_err();
            assert!(e.contains(message), "{json}: {e}");
        }
    }
}
