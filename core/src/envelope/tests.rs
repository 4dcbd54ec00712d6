//! Envelope tests: golden bytes, PHP-style input, malformed input, rewriting, properties.

mod bom;
mod depth;
mod golden;
mod malformed;
mod php;
mod props;
mod reference;
mod rewrite;
mod text;

use serde::{Deserialize, Serialize};

use super::*;
use crate::retry::{Backoff, Intervals, RetryMetadata, Strategy};

/// The talk's payload (`{"adId": 1}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Ad {
    #[serde(rename = "adId")]
    pub(super) ad_id: u32,
}

pub(super) fn intervals(secs: &[u32]) -> Intervals {
    let mut v = Intervals::new();
    for s in secs {
        assert!(v.push(s * 1000).is_ok());
    }
    v
}

/// The talk's slide-40 message: repeat, limit 5, count 0, intervals 15..86400 s.
pub(super) fn talk_message() -> Envelope<'static, Ad> {
    Envelope {
        payload: Ad { ad_id: 1 },
        metadata: Metadata {
            class_name: Text::plain("SendAdExpiredMail"),
            retry: RetryMetadata {
                strategy: Strategy::Repeat,
                limit: Some(5),
                count: 0,
                intervals: Some(intervals(&[15, 30, 60, 300, 86400])),
                backoff: None,
            },
            response_queue: None,
            correlation_id: None,
        },
    }
}

/// Every field set, including backoff and RPC routing.
pub(super) fn full_message() -> Envelope<'static, Ad> {
    let mut env = talk_message();
    env.metadata.retry.strategy = Strategy::Backoff;
    env.metadata.retry.count = 2;
    env.metadata.retry.backoff = Some(Backoff {
        base_ms: 50,
        factor: 2,
        max_ms: 300_000,
        jitter: true,
    });
    env.metadata.response_queue = Some(Text::plain("user-friends-7_65f1"));
    env.metadata.correlation_id = Some(Text::plain("c-42"));
    env
}

pub(super) fn json(env: &Envelope<'_, Ad>) -> ([u8; 512], usize) {
    let mut buf = [0u8; 512];
    let n = encode_json(env, &mut buf).unwrap();
    (buf, n)
}
