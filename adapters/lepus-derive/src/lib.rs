//! `#[derive(Message)]` and `#[derive(Request)]` for [lepus](https://docs.rs/lepus): the
//! message type's wire name, routing key, retry policy and reply, as attributes.
//!
//! ```ignore
//! use lepus::{Message, RetryPolicy};
//! use lepus::rpc::Request;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Message)]
//! #[lepus(routing_key = "mailer.ad.expired", retry = mail_policy)]
//! struct SendAdExpiredMail { ad_id: u64 }
//!
//! fn mail_policy() -> RetryPolicy { RetryPolicy::repeat(5, [15_000, 30_000]) }
//!
//! #[derive(Serialize, Deserialize, Message, Request)]
//! #[lepus(type = "GetActiveAds", routing_key = "ads.active.get", reply = ActiveAds)]
//! struct GetActiveAds { user_id: u64 }
//!
//! #[derive(Serialize, Deserialize)]
//! struct ActiveAds { ids: Vec<u64> }
//! ```
//!
//! Keys of `#[lepus(...)]`:
//! - `routing_key = "..."` (required by `Message`): the default routing key.
//! - `type = "..."`: the wire type name (`className`, AMQP `type`); default: the type's name,
//!   as the talk's PHP producer names its messages by class.
//! - `retry = path`: a `fn() -> RetryPolicy`; default: `RetryPolicy::default()`.
//! - `reply = Type` (required by `Request`): the reply's type.
//! - `reply_type = "..."`: the reply's wire type name; default: the last segment of `reply`.
//! - `rate = "10/s"` (Celery's notation: `/s`, `/m`, `/h`, a bare count is per second),
//!   `burst = 1`, `concurrency = 2`: the type's worker limits (`lepus::Limits`); a count,
//!   burst or concurrency of 0 is a compile error.
//!
//! Names that AMQP cannot carry (empty, or over 255 bytes) are compile errors. Everything
//! else about them is checked where they are used, by lepus's name validation.
#![forbid(unsafe_code)]

use proc_macro::TokenStream;
use quote::quote;
use syn::{parse_macro_input, DeriveInput, LitInt, LitStr, Path, Type};

/// Implements `lepus::Message` from `#[lepus(routing_key = "...", type = "...", retry = f)]`.
#[proc_macro_derive(Message, attributes(lepus))]
pub fn derive_message(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand_message(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Implements `lepus::rpc::Request` from `#[lepus(reply = Type, reply_type = "...")]`.
#[proc_macro_derive(Request, attributes(lepus))]
pub fn derive_request(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand_request(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// What `#[lepus(...)]` attributes say; both derives read all keys, so a typo is an error
/// whichever derive meets it.
#[derive(Default)]
struct Attrs {
    type_name: Option<LitStr>,
    routing_key: Option<LitStr>,
    retry: Option<Path>,
    reply: Option<Type>,
    reply_type: Option<LitStr>,
    /// `rate = "10/s"`: (count, period in microseconds).
    rate: Option<(u32, u64)>,
    burst: Option<u32>,
    concurrency: Option<usize>,
}

fn attrs(input: &DeriveInput) -> syn::Result<Attrs> {
    let mut out = Attrs::default();
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("lepus")) {
        attr.parse_nested_meta(|meta| {
            let key = meta
                .path
                .get_ident()
                .map(ToString::to_string)
                .unwrap_or_default();
            let duplicate = || meta.error(format!("`{key}` is given twice"));
            match key.as_str() {
                "type" => set(&mut out.type_name, short_string(meta.value()?.parse()?)?)
                    .ok_or_else(duplicate)?,
                "routing_key" => set(&mut out.routing_key, short_string(meta.value()?.parse()?)?)
                    .ok_or_else(duplicate)?,
                "retry" => set(&mut out.retry, meta.value()?.parse()?).ok_or_else(duplicate)?,
                "reply" => set(&mut out.reply, meta.value()?.parse()?).ok_or_else(duplicate)?,
                "reply_type" => set(&mut out.reply_type, short_string(meta.value()?.parse()?)?)
                    .ok_or_else(duplicate)?,
                "rate" => {
                    set(&mut out.rate, rate(meta.value()?.parse()?)?).ok_or_else(duplicate)?
                }
                "burst" => {
                    set(&mut out.burst, positive(meta.value()?.parse()?)?).ok_or_else(duplicate)?
                }
                "concurrency" => set(&mut out.concurrency, positive(meta.value()?.parse()?)?)
                    .ok_or_else(duplicate)?,
                _ => {
                    return Err(meta.error(
                        "unknown key: expected `type`, `routing_key`, `retry`, `reply`, \
                         `reply_type`, `rate`, `burst` or `concurrency`",
                    ))
                }
            }
            Ok(())
        })?;
    }
    Ok(out)
}

/// Puts `value` in `slot`; `None` if it was already set.
fn set<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    match slot {
        Some(_) => None,
        None => {
            *slot = Some(value);
            Some(())
        }
    }
}

/// `"10/s"`, read by core's parser: (count, period in microseconds).
fn rate(lit: LitStr) -> syn::Result<(u32, u64)> {
    match lepus_core::rate::Rate::parse(&lit.value()) {
        Ok(rate) => Ok((rate.count(), rate.period_us())),
        Err(e) => Err(syn::Error::new(
            lit.span(),
            format!("{e} (write e.g. \"10/s\", \"100/m\", \"5/h\")"),
        )),
    }
}

/// An integer of at least 1.
fn positive<N>(lit: LitInt) -> syn::Result<N>
where
    N: std::str::FromStr + PartialEq + From<u8>,
    N::Err: std::fmt::Display,
{
    let n: N = lit.base10_parse()?;
    if n == N::from(0) {
        return Err(syn::Error::new(lit.span(), "must be at least 1"));
    }
    Ok(n)
}

/// A name that travels as an AMQP short string: 1 to 255 bytes.
fn short_string(lit: LitStr) -> syn::Result<LitStr> {
    let len = lit.value().len();
    if len == 0 {
        return Err(syn::Error::new(lit.span(), "must not be empty"));
    }
    if len > 255 {
        return Err(syn::Error::new(
            lit.span(),
            format!("is {len} bytes; AMQP short strings hold at most 255"),
        ));
    }
    Ok(lit)
}

fn expand_message(input: &DeriveInput) -> syn::Result<proc_macro2::TokenStream> {
    let attrs = attrs(input)?;
    let name = &input.ident;
    let routing_key = required(attrs.routing_key, input, "Message", "routing_key = \"...\"")?;
    let type_name = match attrs.type_name {
        Some(lit) => lit,
        None => short_string(LitStr::new(&name.to_string(), name.span()))?,
    };
    let retry = attrs.retry.map(|f| {
        quote! {
            fn retry_policy() -> ::lepus::RetryPolicy {
                #f()
            }
        }
    });
    let limits = (attrs.rate.is_some() || attrs.concurrency.is_some() || attrs.burst.is_some())
        .then(|| {
            let rate = attrs.rate.map(|(count, period_us)| {
                quote! { .rate(::lepus::core::rate::Rate::new(#count, #period_us)) }
            });
            let burst = attrs.burst.map(|b| quote! { .burst(#b) });
            let concurrency = attrs.concurrency.map(|c| quote! { .concurrency(#c) });
            quote! {
                fn limits() -> ::lepus::Limits {
                    ::lepus::Limits::new() #rate #burst #concurrency
                }
            }
        });
    Ok(implement(
        input,
        quote! { ::lepus::Message },
        quote! {
            ::lepus::__derive::Serialize + ::lepus::__derive::DeserializeOwned
                + ::core::marker::Send + ::core::marker::Sync + 'static
        },
        quote! {
            const TYPE: &'static str = #type_name;
            const ROUTING_KEY: &'static str = #routing_key;
            #retry
            #limits
        },
    ))
}

fn expand_request(input: &DeriveInput) -> syn::Result<proc_macro2::TokenStream> {
    let attrs = attrs(input)?;
    let reply = required(attrs.reply, input, "Request", "reply = ReplyType")?;
    let reply_type = match attrs.reply_type {
        Some(lit) => lit,
        None => {
            let Type::Path(path) = &reply else {
                return Err(syn::Error::new_spanned(
                    &reply,
                    "name the reply's wire type with #[lepus(reply_type = \"...\")]",
                ));
            };
            let Some(last) = path.path.segments.last() else {
                return Err(syn::Error::new_spanned(&reply, "empty reply type"));
            };
            short_string(LitStr::new(&last.ident.to_string(), last.ident.span()))?
        }
    };
    Ok(implement(
        input,
        quote! { ::lepus::rpc::Request },
        quote! { ::lepus::Message },
        quote! {
            type Reply = #reply;
            const REPLY_TYPE: &'static str = #reply_type;
        },
    ))
}

/// A key the derive cannot do without, or an error saying what to write.
fn required<T>(value: Option<T>, input: &DeriveInput, derive: &str, key: &str) -> syn::Result<T> {
    value.ok_or_else(|| {
        syn::Error::new(
            input.ident.span(),
            format!("#[derive({derive})] needs #[lepus({key})]"),
        )
    })
}

/// `impl trait_path for` the item, with `body`. A generic item implements it for the
/// parameters that make it `bounds` (as serde's derives bound their parameters).
fn implement(
    input: &DeriveInput,
    trait_path: proc_macro2::TokenStream,
    bounds: proc_macro2::TokenStream,
    body: proc_macro2::TokenStream,
) -> proc_macro2::TokenStream {
    let name = &input.ident;
    let (impl_generics, ty_generics, _) = input.generics.split_for_impl();
    let predicates = input
        .generics
        .where_clause
        .as_ref()
        .map(|w| &w.predicates)
        .into_iter()
        .flatten();
    let bound = (!input.generics.params.is_empty()).then(|| quote! { Self: #bounds });
    quote! {
        impl #impl_generics #trait_path for #name #ty_generics where #(#predicates,)* #bound {
            #body
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(src: &str) -> Result<String, String> {
        let input: DeriveInput = syn::parse_str(src).map_err(|e| e.to_string())?;
        expand_message(&input)
            .map(|t| t.to_string())
            .map_err(|e| e.to_string())
    }

    fn request(src: &str) -> Result<String, String> {
        let input: DeriveInput = syn::parse_str(src).map_err(|e| e.to_string())?;
        expand_request(&input)
            .map(|t| t.to_string())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn type_defaults_to_the_name_and_retry_to_the_trait_default() {
        let out = message(r#"#[lepus(routing_key = "a.b")] struct Job { n: u64 }"#).unwrap();
        assert!(
            out.contains(r#"const TYPE : & 'static str = "Job""#),
            "{out}"
        );
        assert!(
            out.contains(r#"const ROUTING_KEY : & 'static str = "a.b""#),
            "{out}"
        );
        assert!(!out.contains("retry_policy"), "{out}");
    }

    #[test]
    fn keys_override_and_may_be_split_over_attributes() {
        let out = message(
            r#"#[lepus(routing_key = "a.b")] #[lepus(type = "SendMail", retry = policies::mail)]
               struct Job<T> { t: T }"#,
        )
        .unwrap();
        assert!(out.contains(r#""SendMail""#), "{out}");
        assert!(out.contains("policies :: mail ()"), "{out}");
        assert!(out.contains("for Job < T >"), "{out}");
    }

    #[test]
    fn limits_are_read_at_compile_time() {
        let out = message(
            r#"#[lepus(routing_key = "a.b", rate = "10/s", burst = 3, concurrency = 2)]
               struct Job;"#,
        )
        .unwrap();
        assert!(out.contains("Rate :: new (10u32 , 1000000u64)"), "{out}");
        assert!(out.contains(". burst (3u32)"), "{out}");
        assert!(out.contains(". concurrency (2usize)"), "{out}");
        let minute = message(r#"#[lepus(routing_key = "a", rate = "6/m")] struct Job;"#).unwrap();
        assert!(
            minute.contains("Rate :: new (6u32 , 60000000u64)"),
            "{minute}"
        );
        let plain = message(r#"#[lepus(routing_key = "a")] struct Job;"#).unwrap();
        assert!(!plain.contains("limits"), "{plain}");
        for (bad, says) in [
            (r#"rate = "0/s""#, "rate count is 0"),
            (r#"rate = "10/d""#, "10/s"),
            ("concurrency = 0", "at least 1"),
            ("burst = 0", "at least 1"),
            (r#"rate = "1/s", rate = "2/s""#, "given twice"),
        ] {
            let err = message(&format!(
                r#"#[lepus(routing_key = "a", {bad})] struct Job;"#
            ))
            .unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn mistakes_are_compile_errors_that_say_what_to_write() {
        let missing = message("struct Job;").unwrap_err();
        assert!(missing.contains("routing_key"), "{missing}");
        let typo = message(r#"#[lepus(routing_kye = "a")] struct Job;"#).unwrap_err();
        assert!(typo.contains("unknown key"), "{typo}");
        let twice =
            message(r#"#[lepus(routing_key = "a", routing_key = "b")] struct Job;"#).unwrap_err();
        assert!(twice.contains("given twice"), "{twice}");
        let empty = message(r#"#[lepus(routing_key = "")] struct Job;"#).unwrap_err();
        assert!(empty.contains("must not be empty"), "{empty}");
        let long = format!(
            r#"#[lepus(routing_key = "{}")] struct Job;"#,
            "k".repeat(256)
        );
        assert!(message(&long).unwrap_err().contains("255"));
        let not_a_string = message("#[lepus(routing_key = 5)] struct Job;").unwrap_err();
        assert!(
            not_a_string.contains("expected string literal"),
            "{not_a_string}"
        );
        let no_reply = request(r#"#[lepus(routing_key = "a")] struct Ask;"#).unwrap_err();
        assert!(no_reply.contains("reply = ReplyType"), "{no_reply}");
        let tuple = request("#[lepus(reply = (u8, u8))] struct Ask;").unwrap_err();
        assert!(tuple.contains("reply_type"), "{tuple}");
    }

    #[test]
    fn reply_type_defaults_to_the_reply_name() {
        let out = request("#[lepus(reply = replies::ActiveAds)] struct GetActiveAds;").unwrap();
        assert!(out.contains("type Reply = replies :: ActiveAds"), "{out}");
        assert!(
            out.contains(r#"const REPLY_TYPE : & 'static str = "ActiveAds""#),
            "{out}"
        );
        let named =
            request(r#"#[lepus(reply = Vec<u64>, reply_type = "Ids")] struct Ask;"#).unwrap();
        assert!(named.contains(r#""Ids""#), "{named}");
    }
}
