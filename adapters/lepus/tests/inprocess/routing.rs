//! In-process broker: topic, direct, fanout and headers routing (all through lepus-core),
//! redeclaration rules and capacity errors.

use lepus::inprocess::{ExchangeKind, MAX_TABLE_BINDINGS, TOPIC_BINDINGS};
use lepus::{
    ErrorKind, HeaderValue, Headers, InProcessBroker, Properties, Publication, QueueSpec, Transport,
};

async fn queue(b: &InProcessBroker, name: &str) {
    b.declare_queue(&QueueSpec::new(name, "unused"))
        .await
        .unwrap();
}

async fn publish(
    b: &InProcessBroker,
    exchange: &str,
    key: &str,
    props: &Properties,
) -> lepus::Result<()> {
    b.publish(Publication::new(exchange, key, b"x", props))
        .await
}

fn counts(b: &InProcessBroker, queues: &[&str]) -> Vec<usize> {
    queues.iter().map(|q| b.message_count(q).unwrap()).collect()
}

#[tokio::test(start_paused = true)]
async fn topic_patterns_of_the_talk() {
    let b = InProcessBroker::new();
    b.declare_exchange("shop").await.unwrap();
    b.declare_queue(&QueueSpec::new("ad-mailer", "shop").bind("mailer.ad.*"))
        .await
        .unwrap();
    b.declare_queue(
        &QueueSpec::new("all-mail", "shop")
            .bind("mailer.#")
            .bind("mailer.ad.*"),
    )
    .await
    .unwrap();
    let props = Properties::new();
    let qs = ["ad-mailer", "all-mail"];
    publish(&b, "shop", "mailer.ad.expired", &props)
        .await
        .unwrap();
    assert_eq!(
        counts(&b, &qs),
        [1, 1],
        "two bindings of one queue deliver once"
    );
    publish(&b, "shop", "mailer.invoice", &props).await.unwrap();
    assert_eq!(counts(&b, &qs), [1, 2]);
    publish(&b, "shop", "mailer", &props).await.unwrap();
    assert_eq!(counts(&b, &qs), [1, 3], "# matches zero words");
    publish(&b, "shop", "mailer.ad.expired.eu", &props)
        .await
        .unwrap();
    assert_eq!(counts(&b, &qs), [1, 4], "* is exactly one word");
    assert!(publish(&b, "shop", "billing.ad", &props)
        .await
        .unwrap_err()
        .is_unroutable());
    // Unbinding removes one route.
    assert!(b.unbind_queue("all-mail", "shop", "mailer.#", &Headers::new()));
    assert!(publish(&b, "shop", "mailer.invoice", &props)
        .await
        .unwrap_err()
        .is_unroutable());
    assert!(
        !b.unbind_queue("all-mail", "shop", "mailer.#", &Headers::new()),
        "already gone"
    );
}

#[tokio::test(start_paused = true)]
async fn direct_and_fanout() {
    let b = InProcessBroker::new();
    for q in ["a", "b", "c"] {
        queue(&b, q).await;
    }
    b.declare_exchange_kind("direct", ExchangeKind::Direct)
        .unwrap();
    b.declare_exchange_kind("fan", ExchangeKind::Fanout)
        .unwrap();
    let none = Headers::new();
    b.bind_queue("a", "direct", "invoice", &none).unwrap();
    b.bind_queue("b", "direct", "invoice", &none).unwrap();
    b.bind_queue("c", "direct", "wallet", &none).unwrap();
    for q in ["a", "b", "c"] {
        b.bind_queue(q, "fan", "ignored", &none).unwrap();
    }
    let props = Properties::new();
    publish(&b, "direct", "invoice", &props).await.unwrap();
    assert_eq!(counts(&b, &["a", "b", "c"]), [1, 1, 0]);
    assert!(publish(&b, "direct", "invoice.x", &props)
        .await
        .unwrap_err()
        .is_unroutable());
    publish(&b, "fan", "whatever", &props).await.unwrap();
    assert_eq!(counts(&b, &["a", "b", "c"]), [2, 2, 1]);
    // The predeclared amq.* exchanges exist.
    b.bind_queue("c", "amq.direct", "c", &none).unwrap();
    publish(&b, "amq.direct", "c", &props).await.unwrap();
    assert_eq!(counts(&b, &["c"]), [2]);
}

#[tokio::test(start_paused = true)]
async fn headers_exchange() {
    let b = InProcessBroker::new();
    queue(&b, "pdf-any").await;
    queue(&b, "pdf-all").await;
    b.declare_exchange_kind("docs", ExchangeKind::Headers)
        .unwrap();
    let mut any = Headers::new();
    any.insert("x-match".into(), "any".into());
    any.insert("format".into(), "pdf".into());
    any.insert("urgent".into(), HeaderValue::Void);
    b.bind_queue("pdf-any", "docs", "", &any).unwrap();
    let mut all = Headers::new();
    all.insert("format".into(), "pdf".into());
    all.insert("pages".into(), HeaderValue::Int(2));
    b.bind_queue("pdf-all", "docs", "", &all).unwrap();

    let qs = ["pdf-any", "pdf-all"];
    let p = Properties::new().with_header("format", "pdf");
    publish(&b, "docs", "", &p).await.unwrap();
    assert_eq!(counts(&b, &qs), [1, 0]);
    let p = Properties::new()
        .with_header("format", "pdf")
        .with_header("pages", HeaderValue::Timestamp(2));
    publish(&b, "docs", "", &p).await.unwrap();
    assert_eq!(
        counts(&b, &qs),
        [2, 1],
        "numbers compare by value across types"
    );
    let p = Properties::new().with_header("urgent", HeaderValue::List(vec![]));
    publish(&b, "docs", "", &p).await.unwrap();
    assert_eq!(counts(&b, &qs), [3, 1], "presence check");
    let p = Properties::new().with_header("format", "zip");
    assert!(publish(&b, "docs", "", &p)
        .await
        .unwrap_err()
        .is_unroutable());

    // RabbitMQ refuses an invalid x-match with 406.
    let mut bad = Headers::new();
    bad.insert("x-match".into(), "most".into());
    let err = b.bind_queue("pdf-all", "docs", "", &bad).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrokerRefused { reply_code: 406 });
}

#[tokio::test(start_paused = true)]
async fn redeclaring_differently_is_refused() {
    let b = InProcessBroker::new();
    b.declare_exchange("shop").await.unwrap();
    b.declare_exchange("shop").await.unwrap();
    let err = b
        .declare_exchange_kind("shop", ExchangeKind::Fanout)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrokerRefused { reply_code: 406 });
    let spec = QueueSpec::new("q", "shop").bind("a.#");
    b.declare_queue(&spec).await.unwrap();
    b.declare_queue(&spec).await.unwrap();
    let quorum = spec.clone().kind(lepus::QueueKind::Quorum);
    let err = b.declare_queue(&quorum).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrokerRefused { reply_code: 406 });
    let text = err.to_string();
    assert!(
        text.contains("queue \"q\" exists on the broker as a classic queue"),
        "{text}"
    );
    assert!(text.contains("To migrate"), "{text}");
    // Bindings need their exchange.
    let err = b
        .declare_queue(&QueueSpec::new("r", "missing").bind("#"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrokerRefused { reply_code: 404 });
}

#[tokio::test(start_paused = true)]
async fn full_topic_exchange_is_a_capacity_error() {
    let b = InProcessBroker::new();
    b.declare_exchange("shop").await.unwrap();
    queue(&b, "q").await;
    let none = Headers::new();
    for i in 0..TOPIC_BINDINGS {
        b.bind_queue("q", "shop", &format!("k{i}"), &none).unwrap();
    }
    let err = b.bind_queue("q", "shop", "one.more", &none).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::CapacityExceeded { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("topic exchange"), "{err}");
    assert_eq!(b.binding_count("shop").unwrap(), TOPIC_BINDINGS);
    // Still routes, and rebinding an existing pattern is fine.
    b.bind_queue("q", "shop", "k7", &none).unwrap();
    publish(&b, "shop", "k7", &Properties::new()).await.unwrap();
    // Freeing one binding makes room.
    assert!(b.unbind_queue("q", "shop", "k0", &none));
    b.bind_queue("q", "shop", "one.more", &none).unwrap();
}

#[tokio::test(start_paused = true)]
async fn full_fanout_exchange_is_a_capacity_error() {
    let b = InProcessBroker::new();
    b.declare_exchange_kind("fan", ExchangeKind::Fanout)
        .unwrap();
    queue(&b, "q").await;
    for i in 0..MAX_TABLE_BINDINGS {
        b.bind_queue("q", "fan", &format!("{i}"), &Headers::new())
            .unwrap();
    }
    let err = b
        .bind_queue("q", "fan", "last", &Headers::new())
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::CapacityExceeded { .. }),
        "{err}"
    );
    publish(&b, "fan", "", &Properties::new()).await.unwrap();
    assert_eq!(
        b.message_count("q").unwrap(),
        1,
        "one queue, many bindings, one copy"
    );
}
