//! A tour of `lepus-core`, the allocation-free part of Lepus that firmware links: it builds the
//! talk's `SendAdExpiredMail` message, routes it like RabbitMQ's topic exchange would, follows
//! a failing handler through the retry state machine, and gathers four RPC replies.
//!
//! Run: `cargo run -p lepus-examples --bin core_tour`

use lepus_core::correlation::PendingArray;
use lepus_core::envelope::{self, Envelope, Metadata};
use lepus_core::retry::{self, Decision, Outcome, Strategy};
use lepus_core::router::TopicRouter;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct SendAdExpiredMail {
    #[serde(rename = "adId")]
    ad_id: u32,
}

fn main() {
    // 1. The envelope, as on slide 40 of the talk.
    let mut metadata = Metadata::new("SendAdExpiredMail");
    metadata.retry.strategy = Strategy::Repeat;
    metadata.retry.limit = Some(5);
    metadata.retry.intervals = Some(
        [15u32, 30, 60, 300, 86_400]
            .iter()
            .map(|s| s * 1000)
            .collect(),
    );
    let message = Envelope {
        payload: SendAdExpiredMail { ad_id: 1 },
        metadata,
    };
    let mut json = [0u8; 256];
    let mut postcard = [0u8; 64];
    let json_len =
        envelope::encode_json(&message, &mut json).expect("256 bytes hold the talk's message");
    let postcard_len = envelope::encode_postcard(&message, &mut postcard)
        .expect("64 bytes hold the talk's message");
    println!("== envelope");
    println!(
        "JSON ({json_len} bytes): {}",
        String::from_utf8_lossy(&json[..json_len])
    );
    println!(
        "postcard ({postcard_len} bytes): {:02x?}",
        &postcard[..postcard_len]
    );

    // 2. Topic routing, slides 33-34: the mailer queue and the stats queue.
    println!("\n== topic routing");
    let queues = ["mailer", "stats"];
    let mut router: Box<TopicRouter<usize, 32, 64, 256, 16>> = Box::new(TopicRouter::new());
    for (pattern, queue) in [
        ("mailer.ad.expired", 0),
        ("mailer.ad.*", 1),
        ("mailer.#", 1),
    ] {
        router
            .bind(pattern, queue)
            .expect("capacity for three bindings");
        println!("bind {pattern:<18} -> {}", queues[queue]);
    }
    for key in ["mailer.ad.expired", "mailer.user.registered", "stats.daily"] {
        let mut out = [0usize; 2];
        let n = router.route(key, &mut out).expect("a short key");
        let names: Vec<_> = out[..n].iter().map(|&q| queues[q]).collect();
        println!("publish {key:<24} -> {names:?}");
    }

    // 3. The handler keeps failing: the retry state machine picks each delay, then gives up.
    println!("\n== retries of a failing handler");
    let mut state = message.metadata.retry.clone();
    loop {
        match retry::decide(&state, Outcome::Transient, 0) {
            Decision::Retry { delay_ms, next } => {
                println!(
                    "attempt {} failed: retry in {} s",
                    state.count + 1,
                    delay_ms / 1000
                );
                state = next;
            }
            Decision::DeadLetter { reason } => {
                println!("attempt {} failed: dead-letter ({reason})", state.count + 1);
                break;
            }
            Decision::Ack => unreachable!("a failure is never acked"),
        }
    }

    // 4. Scatter-gather, slide 43: four requests under one deadline; one reply never comes.
    println!("\n== scatter-gather");
    let names = [
        "GetActiveAds",
        "GetObservedAds",
        "GetRecommendations",
        "GetMessages",
    ];
    let ids = [
        0x0a_u128 << 64 | 1,
        0x0b << 64 | 2,
        0x0c << 64 | 3,
        0x0d << 64 | 4,
    ];
    let mut pending: Box<PendingArray<&str, 16>> = Box::new(PendingArray::new());
    let group = pending.open_group(100, &ids, |id| {
        names[ids.iter().position(|&i| i == id).unwrap_or(0)]
    });
    let group = group.expect("room for four requests");
    for (at, id) in [(20, ids[2]), (35, ids[0]), (60, ids[1]), (70, ids[2])] {
        match pending.complete(id, at) {
            Ok(done) => println!("t={at:>3} ms reply to {}", done.value),
            Err(e) => println!("t={at:>3} ms reply dropped: {e}"),
        }
    }
    pending.expire(100, |timed_out| {
        println!("t=100 ms {} timed out", timed_out.value);
        if let Some(p) = timed_out.group.filter(|p| p.group == group && p.done) {
            println!(
                "group done: {} replied, {} timed out",
                p.replied, p.timed_out
            );
        }
    });
}
