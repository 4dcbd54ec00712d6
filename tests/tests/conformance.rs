//! Conformance of `lepus-core` routing with a live RabbitMQ broker.
//!
//! The vectors in `tests/conformance/*.json` were recorded from RabbitMQ 3.10 by
//! `tests/conformance/generate.py` (bind, publish, record which queue received what).
//! Core must agree with every one of them.

use lepus_core::exchange::{Exchange, ExchangeKind, Routing};
use lepus_core::headers::{self, FieldPair, FieldValue};
use lepus_core::router::TopicRouter;
use lepus_core::topic;
use serde_json::Value;

const TOPIC: &str = include_str!("../conformance/topic.json");
const HEADERS: &str = include_str!("../conformance/headers.json");

fn load(text: &str) -> Vec<Value> {
    let doc: Value = serde_json::from_str(text).expect("valid JSON");
    let vectors = doc["vectors"].as_array().expect("vectors").clone();
    assert_eq!(doc["count"].as_u64(), Some(vectors.len() as u64));
    assert!(doc["broker"].as_str().unwrap().starts_with("RabbitMQ 3.10"));
    vectors
}

#[test]
fn topic_matches_agrees_with_broker() {
    let vectors = load(TOPIC);
    let mut disagreements = Vec::new();
    for v in &vectors {
        let (pattern, key) = (v["pattern"].as_str().unwrap(), v["key"].as_str().unwrap());
        let want = v["match"].as_bool().unwrap();
        if topic::matches(pattern, key) != want || topic::try_matches(pattern, key) != Ok(want) {
            disagreements.push(format!("{pattern:?} vs {key:?}: broker says {want}"));
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    assert!(vectors.len() > 2000);
    println!(
        "topic::matches agrees with {} broker vectors",
        vectors.len()
    );
}

#[test]
fn topic_router_and_exchange_agree_with_broker() {
    std::thread::Builder::new()
        .stack_size(32 << 20)
        .spawn(|| {
            let vectors = load(TOPIC);
            let mut patterns: Vec<&str> = Vec::new();
            for v in &vectors {
                let p = v["pattern"].as_str().unwrap();
                if !patterns.contains(&p) {
                    patterns.push(p);
                }
            }
            type Router = TopicRouter<u16, 1024, 1024, 8192, 128>;
            let mut router: Box<Router> = Box::new(Router::new());
            let mut exchange: Box<Exchange<'_, u16, 128, 1024, 1024, 8192>> =
                Box::new(Exchange::new(ExchangeKind::Topic));
            for (i, p) in patterns.iter().enumerate() {
                router.bind(p, i as u16).unwrap();
                exchange.bind(p, &[], i as u16).unwrap();
            }
            let mut out = [0u16; 128];
            let mut checked = 0;
            for v in &vectors {
                let key = v["key"].as_str().unwrap();
                let dest = patterns.iter().position(|p| *p == v["pattern"]).unwrap() as u16;
                let want = v["match"].as_bool().unwrap();
                let n = router.route(key, &mut out).unwrap();
                assert_eq!(
                    out[..n].contains(&dest),
                    want,
                    "router: {:?} vs {key:?}",
                    v["pattern"]
                );
                let msg = Routing {
                    routing_key: key,
                    headers: &[],
                };
                let n = exchange.route(&msg, &mut out).unwrap();
                assert_eq!(
                    out[..n].contains(&dest),
                    want,
                    "exchange: {:?} vs {key:?}",
                    v["pattern"]
                );
                checked += 1;
            }
            println!("router and topic exchange agree with {checked} broker vectors");
        })
        .unwrap()
        .join()
        .unwrap();
}

/// Owned `[name, tag, value]` triples of a vector's table.
fn table(v: &Value) -> Vec<(String, String, Value)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let f = f.as_array().unwrap();
            (
                f[0].as_str().unwrap().to_string(),
                f[1].as_str().unwrap().to_string(),
                f[2].clone(),
            )
        })
        .collect()
}

fn fields(t: &[(String, String, Value)]) -> Vec<FieldPair<'_>> {
    t.iter()
        .map(|(name, tag, value)| {
            let hv = match tag.as_str() {
                "V" => FieldValue::Void,
                "t" => FieldValue::Bool(value.as_bool().unwrap()),
                "b" | "s" | "I" | "l" => FieldValue::Int(value.as_i64().unwrap()),
                "B" | "u" | "i" | "T" => FieldValue::UInt(value.as_u64().unwrap()),
                "f" => FieldValue::Float(f64::from(value.as_f64().unwrap() as f32)),
                "d" => FieldValue::Float(value.as_f64().unwrap()),
                "S" => FieldValue::Str(value.as_str().unwrap()),
                "x" => FieldValue::Bytes(value.as_str().unwrap().as_bytes()),
                other => panic!("unknown tag {other}"),
            };
            (name.as_str(), hv)
        })
        .collect()
}

#[test]
fn headers_match_agrees_with_broker() {
    let vectors = load(HEADERS);
    let mut disagreements = Vec::new();
    for v in &vectors {
        let (args, hdrs) = (table(&v["args"]), table(&v["headers"]));
        let (args, hdrs) = (fields(&args), fields(&hdrs));
        let want = v["match"].as_bool().unwrap();
        if headers::matches(&args, &hdrs) != want {
            disagreements.push(format!(
                "args {args:?} headers {hdrs:?}: broker says {want}"
            ));
            continue;
        }
        let mut exchange: Exchange<'_, u8, 2> = Exchange::new(ExchangeKind::Headers);
        exchange.bind("", &args, 7).unwrap();
        let mut out = [0u8; 2];
        let n = exchange
            .route(
                &Routing {
                    routing_key: "",
                    headers: &hdrs,
                },
                &mut out,
            )
            .unwrap();
        if (n == 1) != want {
            disagreements.push(format!(
                "exchange: args {args:?} headers {hdrs:?}: broker says {want}"
            ));
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    assert!(vectors.len() > 1000);
    println!(
        "headers::matches and headers exchange agree with {} broker vectors",
        vectors.len()
    );
}
