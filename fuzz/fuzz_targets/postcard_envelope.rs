//! Decodes arbitrary bytes as a postcard envelope. Invariants checked when it decodes:
//! - re-encoding gives bytes that decode to the same envelope, and re-encoding those gives
//!   the same bytes (fixpoint; the input itself may use non-canonical varints);
//! - the raw and typed decoders agree on the metadata;
//! - the COBS-framed form round-trips;
//! - the JSON encoding of the same envelope decodes to the same envelope (cross-check of the
//!   two codecs on arbitrary metadata strings and numbers).
#![no_main]

use lepus_core::envelope::{
    decode_json, decode_postcard, decode_postcard_cobs, decode_postcard_raw, encode_json,
    encode_postcard, encode_postcard_cobs, Envelope,
};
use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Ad {
    #[serde(rename = "adId")]
    ad_id: u32,
}

fuzz_target!(|data: &[u8]| {
    let raw = decode_postcard_raw(data);
    let Ok(env) = decode_postcard::<Ad>(data) else { return };
    assert_eq!(raw.expect("raw decodes when typed does").metadata, env.metadata);

    let mut out = [0u8; 4096];
    let Ok(n) = encode_postcard(&env, &mut out) else { return };
    let again: Envelope<'_, Ad> = decode_postcard(&out[..n]).expect("re-encoded envelope decodes");
    assert_eq!(again, env);
    let mut out2 = [0u8; 4096];
    let n2 = encode_postcard(&again, &mut out2).expect("same size fits");
    assert_eq!(&out[..n], &out2[..n2]);

    let n = encode_postcard_cobs(&env, &mut out2).expect("cobs fits");
    assert_eq!(out2[n - 1], 0);
    assert!(!out2[..n - 1].contains(&0));
    let framed: Envelope<'_, Ad> = decode_postcard_cobs(&mut out2[..n]).expect("cobs decodes");
    assert_eq!(framed, env);

    let mut json = [0u8; 8192];
    let n = encode_json(&env, &mut json).expect("json fits");
    let from_json: Envelope<'_, Ad> = decode_json(&json[..n]).expect("json decodes");
    assert_eq!(from_json, env);
});
