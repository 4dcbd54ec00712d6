//! Headers exchange matching: binding arguments against message headers, with the semantics
//! of RabbitMQ 3.10
//! ([`rabbit_exchange_type_headers`](https://github.com/rabbitmq/rabbitmq-server/blob/v3.10.x/deps/rabbit/src/rabbit_exchange_type_headers.erl),
//! [docs](https://www.rabbitmq.com/docs/exchanges#headers)):
//!
//! - the binding argument `x-match` selects the mode: `all` (the default), `any`,
//!   `all-with-x` or `any-with-x`; it is a long string (a [`FieldValue::Str`]); any other
//!   value is refused by [`XMatch::from_args`] (RabbitMQ refuses the binding) and read as
//!   `all` by [`matches()`] (RabbitMQ's legacy reading);
//! - binding arguments whose name starts with `x-` are ignored, except in the `-with-x`
//!   modes (`x-match` itself is always ignored);
//! - an argument with a [`FieldValue::Void`] value only asks for a header of that name;
//!   any other argument asks for a header of that name with an equal value;
//! - `all` matches when every remaining argument is satisfied (so with none it matches
//!   every message), `any` when at least one is (so with none it matches nothing).
//!
//! Values compare as Erlang's `==` compares the decoded AMQP values, which is what the broker
//! does (checked against a live 3.10 broker, see `tests/conformance/`): all integer widths,
//! signed or unsigned, timestamps and floats compare by numeric value (`5 == 5.0`); a long
//! string equals a byte array with the same bytes; booleans equal only booleans.
//!
//! A name appearing twice is paired occurrence by occurrence (the k-th argument named `n`
//! with the k-th header named `n`), as RabbitMQ's merge of the sorted tables does.

#[cfg(test)]
mod tests;

/// A value of an AMQP field table (AMQP's `field-value`; the subset that headers bindings
/// use).
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FieldValue<'a> {
    /// No value (`V`): as a binding argument, a presence check.
    Void,
    /// A boolean (`t`).
    Bool(bool),
    /// A signed integer of any width (`b`, `s`, `I`, `l`).
    Int(i64),
    /// An unsigned integer of any width, or a timestamp (`B`, `u`, `i`, `T`).
    UInt(u64),
    /// A float or a double (`f`, `d`).
    Float(f64),
    /// A long string (`S`).
    Str(&'a str),
    /// A byte array (`x`).
    Bytes(&'a [u8]),
}

/// A named field (AMQP's `field-value-pair`): a binding argument or a message header.
pub type FieldPair<'a> = (&'a str, FieldValue<'a>);

enum Num {
    Int(i128),
    Float(f64),
}

impl FieldValue<'_> {
    fn num(&self) -> Option<Num> {
        match *self {
            FieldValue::Int(i) => Some(Num::Int(i128::from(i))),
            FieldValue::UInt(u) => Some(Num::Int(i128::from(u))),
            FieldValue::Float(f) => Some(Num::Float(f)),
            _ => None,
        }
    }

    fn bytes(&self) -> Option<&[u8]> {
        match *self {
            FieldValue::Str(s) => Some(s.as_bytes()),
            FieldValue::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// Equality as the broker compares a binding value with a header value (Erlang `==` on
    /// the decoded values): numbers by value across widths, signedness and floats; strings
    /// and byte arrays by bytes; booleans with booleans; void with void.
    pub fn broker_eq(&self, other: &FieldValue<'_>) -> bool {
        if let (Some(a), Some(b)) = (self.num(), other.num()) {
            return match (a, b) {
                (Num::Int(x), Num::Int(y)) => x == y,
                (Num::Float(x), Num::Float(y)) => x == y,
                (Num::Int(i), Num::Float(f)) | (Num::Float(f), Num::Int(i)) => {
                    // Exact: `f` is integral and equal to `i` (saturating casts make
                    // out-of-range floats differ).
                    let t = f as i128;
                    t as f64 == f && t == i
                }
            };
        }
        if let (Some(a), Some(b)) = (self.bytes(), other.bytes()) {
            return a == b;
        }
        match (self, other) {
            (FieldValue::Bool(a), FieldValue::Bool(b)) => a == b,
            (FieldValue::Void, FieldValue::Void) => true,
            _ => false,
        }
    }
}

/// The `x-match` mode of a headers binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum XMatch {
    /// `all`: every argument not starting with `x-` must match.
    #[default]
    All,
    /// `any`: at least one argument not starting with `x-` must match.
    Any,
    /// `all-with-x`: every argument (but `x-match`) must match.
    AllWithX,
    /// `any-with-x`: at least one argument (but `x-match`) must match.
    AnyWithX,
}

/// Why a headers binding's arguments are refused (as RabbitMQ refuses the binding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum HeadersError {
    /// `x-match` is a string other than `all`, `any`, `all-with-x`, `any-with-x`.
    XMatchUnknown,
    /// `x-match` is not a long string.
    XMatchNotString,
}

impl core::fmt::Display for HeadersError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            HeadersError::XMatchUnknown => "x-match is not one of all, any, all-with-x, any-with-x",
            HeadersError::XMatchNotString => "x-match is not a long string",
        })
    }
}

impl core::error::Error for HeadersError {}

impl XMatch {
    /// Parses an `x-match` value.
    pub fn parse(value: &FieldValue<'_>) -> Result<XMatch, HeadersError> {
        match value {
            FieldValue::Str("all") => Ok(XMatch::All),
            FieldValue::Str("any") => Ok(XMatch::Any),
            FieldValue::Str("all-with-x") => Ok(XMatch::AllWithX),
            FieldValue::Str("any-with-x") => Ok(XMatch::AnyWithX),
            FieldValue::Str(_) => Err(HeadersError::XMatchUnknown),
            _ => Err(HeadersError::XMatchNotString),
        }
    }

    /// The mode of binding arguments `args`: the first `x-match` argument, `all` if there is
    /// none. Errors as RabbitMQ refuses such a binding.
    pub fn from_args(args: &[FieldPair<'_>]) -> Result<XMatch, HeadersError> {
        match args.iter().find(|(name, _)| *name == "x-match") {
            Some((_, value)) => XMatch::parse(value),
            None => Ok(XMatch::All),
        }
    }

    /// The mode RabbitMQ's router reads from `args`: like [`XMatch::from_args`], but an
    /// invalid `x-match` reads as `all`.
    pub fn from_args_lenient(args: &[FieldPair<'_>]) -> XMatch {
        XMatch::from_args(args).unwrap_or(XMatch::All)
    }

    fn with_x(self) -> bool {
        matches!(self, XMatch::AllWithX | XMatch::AnyWithX)
    }

    fn is_all(self) -> bool {
        matches!(self, XMatch::All | XMatch::AllWithX)
    }
}

/// Whether a message with `headers` matches a headers binding with arguments `args` (see the
/// [module documentation](self)); the mode is read from `args` as the broker reads it.
///
/// ```
/// use lepus_core::headers::{matches, FieldValue as V};
/// let args = [("x-match", V::Str("any")), ("format", V::Str("pdf")), ("type", V::Void)];
/// assert!(matches(&args, &[("type", V::Int(1))]));
/// assert!(!matches(&args, &[("format", V::Str("zip"))]));
/// assert!(matches(&[], &[]));                      // all, with nothing to check
/// assert!(!matches(&[("x-match", V::Str("any"))], &[("a", V::Void)]));
/// ```
///
/// Never panics, never allocates; O(args x (args + headers)).
pub fn matches(args: &[FieldPair<'_>], headers: &[FieldPair<'_>]) -> bool {
    matches_mode(XMatch::from_args_lenient(args), args, headers)
}

/// [`matches()`] with the mode already parsed (e.g. by [`XMatch::from_args`] at bind time).
pub fn matches_mode(mode: XMatch, args: &[FieldPair<'_>], headers: &[FieldPair<'_>]) -> bool {
    let mut all = true;
    let mut any = false;
    for (i, (name, want)) in args.iter().enumerate() {
        if *name == "x-match" || (name.starts_with("x-") && !mode.with_x()) {
            continue;
        }
        // This is the r-th argument with this name: pair it with the r-th such header.
        let r = args
            .get(..i)
            .unwrap_or(&[])
            .iter()
            .filter(|(n, _)| n == name)
            .count();
        let found = headers.iter().filter(|(n, _)| n == name).nth(r);
        let ok = match found {
            None => false,
            Some(_) if *want == FieldValue::Void => true,
            Some((_, have)) => want.broker_eq(have),
        };
        if ok {
            any = true;
        } else {
            all = false;
        }
        // Early exits, as the broker's.
        if mode.is_all() && !all {
            return false;
        }
        if !mode.is_all() && any {
            return true;
        }
    }
    if mode.is_all() {
        all
    } else {
        any
    }
}
