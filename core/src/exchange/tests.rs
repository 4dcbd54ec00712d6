use super::*;
use crate::headers::FieldValue as V;

fn route<const B: usize, const N: usize, const E: usize, const W: usize>(
    ex: &mut Exchange<'_, u8, B, N, E, W>,
    key: &str,
    headers: &[FieldPair<'_>],
) -> Vec<u8> {
    let mut out = [0u8; 16];
    let n = ex
        .route(
            &Routing {
                routing_key: key,
                headers,
            },
            &mut out,
        )
        .unwrap();
    let mut v = out[..n].to_vec();
    v.sort_unstable();
    v
}

#[test]
fn direct() {
    let long = "k".repeat(256);
    let mut ex: Exchange<'_, u8, 4> = Exchange::new(ExchangeKind::Direct);
    assert_eq!(ex.kind(), ExchangeKind::Direct);
    ex.bind("mailer.ad.expired", &[], 1).unwrap();
    ex.bind("mailer.ad.expired", &[], 1).unwrap();
    ex.bind("mailer.ad.expired", &[], 2).unwrap();
    ex.bind("mailer.ad.*", &[], 3).unwrap();
    assert_eq!(ex.len(), 3);
    assert_eq!(route(&mut ex, "mailer.ad.expired", &[]), [1, 2]);
    assert_eq!(route(&mut ex, "mailer.ad.moderated", &[]), Vec::<u8>::new());
    assert_eq!(route(&mut ex, "mailer.ad.*", &[]), [3]);
    assert!(ex.unbind("mailer.ad.expired", &[], 2));
    assert!(!ex.unbind("mailer.ad.expired", &[], 2));
    assert_eq!(route(&mut ex, "mailer.ad.expired", &[]), [1]);
    ex.bind("a", &[], 4).unwrap();
    ex.bind("b", &[], 4).unwrap();
    assert_eq!(ex.bind("c", &[], 4), Err(ExchangeError::BindingsFull));
    assert_eq!(ex.bind(&long, &[], 4), Err(ExchangeError::KeyTooLong));
}

#[test]
fn fanout_delivers_each_destination_once() {
    let mut ex: Exchange<'_, u8, 4> = Exchange::new(ExchangeKind::Fanout);
    ex.bind("", &[], 1).unwrap();
    ex.bind("x", &[], 1).unwrap();
    ex.bind("", &[], 2).unwrap();
    assert_eq!(ex.len(), 3);
    assert_eq!(route(&mut ex, "anything", &[]), [1, 2]);
    let mut out = [0u8; 1];
    let msg = Routing {
        routing_key: "k",
        headers: &[],
    };
    assert_eq!(ex.route(&msg, &mut out), Err(RouteError::OutputFull));
    let long = "k".repeat(256);
    let msg = Routing {
        routing_key: &long,
        headers: &[],
    };
    assert_eq!(
        ex.route(&msg, &mut [0; 4]),
        Err(RouteError::RoutingKeyTooLong)
    );
}

#[test]
fn topic() {
    let mut ex: Exchange<'_, u8, 8, 32, 32, 256> = Exchange::new(ExchangeKind::Topic);
    ex.bind("mailer.ad.expired", &[], 1).unwrap();
    ex.bind("mailer.ad.*", &[], 2).unwrap();
    ex.bind("mailer.#", &[], 3).unwrap();
    ex.bind("mailer.#", &[], 3).unwrap();
    assert_eq!(ex.len(), 3);
    assert_eq!(route(&mut ex, "mailer.ad.expired", &[]), [1, 2, 3]);
    assert_eq!(route(&mut ex, "mailer.user.created", &[]), [3]);
    assert!(ex.unbind("mailer.#", &[], 3));
    assert_eq!(route(&mut ex, "mailer.user.created", &[]), Vec::<u8>::new());
    let mut small: Exchange<'_, u8, 8, 2, 4, 64> = Exchange::new(ExchangeKind::Topic);
    assert_eq!(
        small.bind("a.b", &[], 1),
        Err(ExchangeError::Topic(BindError::NodesFull))
    );
    assert!(ExchangeError::Topic(BindError::NodesFull)
        .to_string()
        .contains("trie node"));
}

#[test]
fn headers() {
    let any = [
        ("x-match", V::Str("any")),
        ("format", V::Str("pdf")),
        ("type", V::Str("report")),
    ];
    let all = [("format", V::Str("pdf")), ("type", V::Str("report"))];
    let bad = [("x-match", V::Str("some"))];
    let mut ex: Exchange<'_, u8, 4> = Exchange::new(ExchangeKind::Headers);
    ex.bind("", &any, 1).unwrap();
    ex.bind("", &all, 2).unwrap();
    ex.bind("", &[], 3).unwrap();
    assert_eq!(
        ex.bind("", &bad, 4),
        Err(ExchangeError::Headers(HeadersError::XMatchUnknown))
    );
    assert_eq!(ex.len(), 3);
    let pdf = [("format", V::Str("pdf"))];
    let both = [("type", V::Str("report")), ("format", V::Str("pdf"))];
    assert_eq!(route(&mut ex, "", &pdf), [1, 3]);
    assert_eq!(route(&mut ex, "ignored", &both), [1, 2, 3]);
    assert_eq!(route(&mut ex, "", &[]), [3]);
    assert!(ex.unbind("", &all, 2));
    assert!(!ex.unbind("", &all, 2));
    assert_eq!(route(&mut ex, "", &both), [1, 3]);
}
