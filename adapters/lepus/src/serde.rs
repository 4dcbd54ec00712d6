//! Serde helpers for payloads written by PHP: numbers that arrive as numeric strings.
//!
//! PHP code builds payloads from database rows and request parameters, whose values are often
//! strings, so `json_encode` writes `{"userId":"7"}` where a typed payload expects a number.
//! The envelope's own numbers (`retryLimit`, `retryCount`, ...) are read leniently by core;
//! a payload's fields are the type's business, and a plain `u64` field refuses `"7"`
//! (`invalid type: string "7", expected u64`). Opt a field in with `deserialize_with`:
//!
//! ```
//! use serde::Deserialize;
//!
//! #[derive(Debug, PartialEq, Deserialize)]
//! #[serde(rename_all = "camelCase")]
//! struct SendAdExpiredMail {
//!     #[serde(deserialize_with = "lepus::serde::number_from_str")]
//!     user_id: u64,
//!     #[serde(deserialize_with = "lepus::serde::number_from_str")]
//!     score: f64,
//!     // `default`: a missing field is `None` too, not an error.
//!     #[serde(default, deserialize_with = "lepus::serde::option_number_from_str")]
//!     price_cents: Option<u32>,
//! }
//!
//! let php = r#"{"userId":"7","score":"0.5","priceCents":null}"#;
//! let rust = r#"{"userId":7,"score":0.5,"priceCents":1999}"#;
//! let a: SendAdExpiredMail = serde_json::from_str(php).unwrap();
//! let b: SendAdExpiredMail = serde_json::from_str(rust).unwrap();
//! assert_eq!((a.user_id, a.score, a.price_cents), (7, 0.5, None));
//! assert_eq!((b.user_id, b.score, b.price_cents), (7, 0.5, Some(1999)));
//!
//! let err = serde_json::from_str::<SendAdExpiredMail>(r#"{"userId":"7x","score":1}"#)
//!     .unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "invalid value: string \"7x\", expected a u64 as a JSON number or a numeric string \
//!      at line 1 column 14"
//! );
//! ```
//!
//! What is accepted, per target type ([`Numeric`]):
//! - integers (`u8` to `u128`, `i8` to `i128`, `usize`, `isize`): a JSON integer in range, a
//!   JSON number with a zero fraction (`7.0`, as PHP writes a float that holds a whole
//!   number), or a decimal integer string (`"7"`, `"-7"`, `"+7"`, `"007"`; no spaces, no
//!   fraction, no exponent);
//! - floats (`f32`, `f64`): any JSON number, or a string that [`str::parse`] reads as a finite
//!   number (`"19.99"`, `"1e3"`; not `"NaN"` or `"inf"`, which PHP's `json_encode` cannot
//!   write either).
//!
//! Anything else is a serde error naming the value and the type: `""`, `"7x"`, `" 7"`, a
//! value out of the type's range (`"300"` or `300` for a `u8`, `-1` for a `u64`, `"1e39"` for
//! an `f32`), `true`, `null` (use [`option_number_from_str`]). Never panics.
//!
//! The helpers read through `deserialize_any`, so they work with self-describing formats
//! (JSON, which is what PHP sends), not with postcard.
//!
//! The module shares its name with the `serde` crate: after `use lepus::*;` a path starting
//! with `serde::` is ambiguous (E0659); write `::serde::` there, or import what you use.

use core::fmt;
use core::marker::PhantomData;

use ::serde::de::{self, Deserializer, Unexpected, Visitor};

mod sealed {
    pub trait Sealed {}
}

/// A number type that [`number_from_str`] and [`option_number_from_str`] read from a JSON
/// number or a numeric string: the primitive integers and floats. Sealed.
pub trait Numeric: Sized + sealed::Sealed {
    /// The type's name, for error messages (`"u64"`).
    const NAME: &'static str;

    /// The value of an unsigned JSON integer; `None` when out of range.
    fn from_u128(v: u128) -> Option<Self>;

    /// The value of a signed JSON integer; `None` when out of range.
    fn from_i128(v: i128) -> Option<Self>;

    /// The value of a JSON float; `None` when out of range or, for an integer type, when it
    /// has a fraction.
    fn from_f64(v: f64) -> Option<Self>;

    /// The value of a numeric string.
    ///
    /// # Errors
    /// [`NumberProblem`] saying whether the string is no number or out of range.
    fn from_numeric_str(s: &str) -> Result<Self, NumberProblem>;
}

/// Why a string did not read as a [`Numeric`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NumberProblem {
    /// Not a number of this kind (empty, stray characters, a fraction for an integer type).
    NotANumber,
    /// A number, but outside the type's range.
    OutOfRange,
}

impl fmt::Display for NumberProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NumberProblem::NotANumber => "not a number",
            NumberProblem::OutOfRange => "out of range",
        })
    }
}

impl std::error::Error for NumberProblem {}

/// `2^127` as an `f64`: whole floats in `[-2^127, 2^127)` convert to `i128` exactly.
const TWO_POW_127: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;

macro_rules! integer {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl Numeric for $t {
            const NAME: &'static str = stringify!($t);

            fn from_u128(v: u128) -> Option<Self> {
                <$t>::try_from(v).ok()
            }

            fn from_i128(v: i128) -> Option<Self> {
                <$t>::try_from(v).ok()
            }

            fn from_f64(v: f64) -> Option<Self> {
                // NaN and the infinities have a NaN fraction, so they fail the first test.
                if v.fract() != 0.0 || !(-TWO_POW_127..TWO_POW_127).contains(&v) {
                    return None;
                }
                // Whole and within i128's range: the cast is exact.
                #[allow(clippy::cast_possible_truncation)]
                let whole = v as i128;
                <$t>::try_from(whole).ok()
            }

            fn from_numeric_str(s: &str) -> Result<Self, NumberProblem> {
                use core::num::IntErrorKind;
                let overflow = |kind: &IntErrorKind| {
                    matches!(kind, IntErrorKind::PosOverflow | IntErrorKind::NegOverflow)
                };
                match s.parse::<$t>() {
                    Ok(v) => Ok(v),
                    Err(e) if overflow(e.kind()) => Err(NumberProblem::OutOfRange),
                    // An unsigned type reads no sign: "-1" is out of its range, "-0" is 0.
                    Err(_) => match s.parse::<i128>() {
                        Ok(v) => <$t>::try_from(v).map_err(|_| NumberProblem::OutOfRange),
                        Err(e) if overflow(e.kind()) => Err(NumberProblem::OutOfRange),
                        Err(_) => Err(NumberProblem::NotANumber),
                    },
                }
            }
        }
    )*};
}

integer!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize);

macro_rules! float {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl Numeric for $t {
            const NAME: &'static str = stringify!($t);

            #[allow(clippy::cast_precision_loss)]
            fn from_u128(v: u128) -> Option<Self> {
                Some(v as $t)
            }

            #[allow(clippy::cast_precision_loss)]
            fn from_i128(v: i128) -> Option<Self> {
                Some(v as $t)
            }

            #[allow(clippy::cast_possible_truncation)]
            fn from_f64(v: f64) -> Option<Self> {
                let f = v as $t;
                f.is_finite().then_some(f)
            }

            fn from_numeric_str(s: &str) -> Result<Self, NumberProblem> {
                match s.parse::<$t>() {
                    Ok(f) if f.is_finite() => Ok(f),
                    // A finite literal (no "inf", no "NaN") that still overflowed.
                    Ok(_) if s.bytes().any(|b| b.is_ascii_digit()) => {
                        Err(NumberProblem::OutOfRange)
                    }
                    _ => Err(NumberProblem::NotANumber),
                }
            }
        }
    )*};
}

float!(f32, f64);

/// Reads a [`Numeric`] from a JSON number or a numeric string (`7` or `"7"`): for
/// `#[serde(deserialize_with = "lepus::serde::number_from_str")]`. See the
/// [module](self) for what is accepted.
///
/// # Errors
/// The deserializer's error when the value is neither, is not a number of `T`'s kind, or is
/// out of `T`'s range.
pub fn number_from_str<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Numeric,
{
    deserializer.deserialize_any(NumberVisitor(PhantomData))
}

/// As [`number_from_str`] for an `Option`: `null` is `None`. Pair it with `default` so that a
/// missing field is `None` as well:
/// `#[serde(default, deserialize_with = "lepus::serde::option_number_from_str")]`.
///
/// # Errors
/// As [`number_from_str`]; `""` is an error, not `None`.
pub fn option_number_from_str<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Numeric,
{
    deserializer.deserialize_option(OptionVisitor(PhantomData))
}

struct NumberVisitor<T>(PhantomData<T>);

impl<T: Numeric> NumberVisitor<T> {
    fn out_of_range<E: de::Error>(unexpected: Unexpected<'_>) -> E {
        E::invalid_value(unexpected, &InRange(T::NAME))
    }
}

/// "a u8 in its range", for values out of range.
struct InRange(&'static str);

impl de::Expected for InRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a number within the range of {}", self.0)
    }
}

impl<'de, T: Numeric> Visitor<'de> for NumberVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a {} as a JSON number or a numeric string", T::NAME)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        T::from_u128(v.into()).ok_or_else(|| Self::out_of_range(Unexpected::Unsigned(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        T::from_i128(v.into()).ok_or_else(|| Self::out_of_range(Unexpected::Signed(v)))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<T, E> {
        T::from_u128(v)
            .ok_or_else(|| E::invalid_value(Unexpected::Other("u128"), &InRange(T::NAME)))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<T, E> {
        T::from_i128(v)
            .ok_or_else(|| E::invalid_value(Unexpected::Other("i128"), &InRange(T::NAME)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        T::from_f64(v).ok_or_else(|| {
            if v.is_finite() && v.fract() != 0.0 {
                E::invalid_value(Unexpected::Float(v), &self)
            } else {
                Self::out_of_range(Unexpected::Float(v))
            }
        })
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
        T::from_numeric_str(s).map_err(|problem| match problem {
            NumberProblem::OutOfRange => Self::out_of_range(Unexpected::Str(s)),
            NumberProblem::NotANumber => E::invalid_value(Unexpected::Str(s), &self),
        })
    }
}

struct OptionVisitor<T>(PhantomData<T>);

impl<'de, T: Numeric> Visitor<'de> for OptionVisitor<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "null or a {} as a JSON number or a numeric string",
            T::NAME
        )
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<T>, D::Error> {
        number_from_str(deserializer).map(Some)
    }
}

#[cfg(test)]
mod tests;
