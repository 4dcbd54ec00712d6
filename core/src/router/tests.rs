use super::*;
use crate::topic::matches;
use proptest::prelude::*;

type Small = TopicRouter<u16, 64, 128, 1024, 64>;

fn routed<const N: usize, const E: usize, const W: usize, const B: usize>(
    r: &mut TopicRouter<u16, N, E, W, B>,
    key: &str,
) -> Vec<u16> {
    let mut out = [0u16; 512];
    let n = r.route(key, &mut out).unwrap();
    let mut v = out[..n].to_vec();
    v.sort_unstable();
    v
}

#[test]
fn talk_example_and_dedup() {
    let mut r = Small::new();
    r.bind("mailer.ad.expired", 1).unwrap();
    r.bind("mailer.ad.*", 2).unwrap();
    r.bind("mailer.user.*", 3).unwrap();
    r.bind("mailer.#", 4).unwrap();
    r.bind("mailer.ad.*", 4).unwrap();
    r.bind("#", 5).unwrap();
    r.bind("", 6).unwrap();
    assert_eq!(routed(&mut r, "mailer.ad.expired"), [1, 2, 4, 5]);
    assert_eq!(routed(&mut r, "mailer.user.created"), [3, 4, 5]);
    assert_eq!(routed(&mut r, "mailer"), [4, 5]);
    assert_eq!(routed(&mut r, ""), [5, 6]);
    assert_eq!(routed(&mut r, "other"), [5]);
}

#[test]
fn bind_is_idempotent_and_unbind_frees_everything() {
    let mut r = Small::new();
    r.bind("a.b.c", 1).unwrap();
    r.bind("a.b.c", 1).unwrap();
    assert_eq!(r.len(), 1);
    r.bind("a.*.#", 1).unwrap();
    assert_eq!(r.len(), 2);
    assert!(r.contains("a.b.c", 1));
    assert!(!r.contains("a.b.c", 2));
    assert!(!r.contains("a.b", 1));
    assert_eq!(r.nodes_used(), 1 + 3 + 2);
    assert!(r.unbind("a.b.c", 1));
    assert!(!r.unbind("a.b.c", 1));
    assert!(!r.unbind("a.*.#", 2));
    assert_eq!(r.nodes_used(), 1 + 3); // a, *, # (a kept: shared)
    assert!(r.unbind("a.*.#", 1));
    assert!(r.is_empty());
    assert_eq!(r.nodes_used(), 1);
    assert_eq!(r.edges_used(), 0);
    assert_eq!(r.word_bytes_used(), 0);
    assert_eq!(routed(&mut r, "a.b.c"), Vec::<u16>::new());
}

#[test]
fn capacity_errors_name_what_is_full_and_change_nothing() {
    let mut r: TopicRouter<u16, 4, 8, 64, 2> = TopicRouter::new();
    assert_eq!(r.bind("a.b.c.d", 1), Err(BindError::NodesFull));
    assert_eq!(r.nodes_used(), 1);
    r.bind("a.b.c", 1).unwrap();
    r.bind("a.b", 2).unwrap();
    assert_eq!(r.bind("a", 3), Err(BindError::BindingsFull));
    assert_eq!(r.len(), 2);

    let mut r: TopicRouter<u16, 16, 4, 64, 8> = TopicRouter::new();
    r.bind("a.b.c", 1).unwrap(); // 3 edges = 3/4 of 4
    assert_eq!(r.bind("a.b.d", 1), Err(BindError::EdgesFull));
    r.bind("a.b.*.#", 1).unwrap(); // wildcards take no edge
    assert_eq!(r.edges_used(), 3);

    let mut r: TopicRouter<u16, 16, 16, 12, 8> = TopicRouter::new();
    r.bind("abcdefg", 1).unwrap(); // 12 bytes
    assert_eq!(r.bind("x", 1), Err(BindError::WordBytesFull));
    assert_eq!(routed(&mut r, "abcdefg"), [1]);
    // Freed words are reclaimed by compaction, which moves live words down.
    assert!(r.unbind("abcdefg", 1));
    r.bind("x", 2).unwrap();
    r.bind("y", 3).unwrap();
    assert_eq!(r.bind("z", 3), Err(BindError::WordBytesFull));
    assert!(r.unbind("x", 2));
    r.bind("z", 4).unwrap();
    assert_eq!(routed(&mut r, "y"), [3]);
    assert_eq!(routed(&mut r, "z"), [4]);
    assert_eq!(routed(&mut r, "x"), Vec::<u16>::new());

    let mut r = Small::new();
    assert_eq!(r.bind(&"a".repeat(256), 1), Err(BindError::PatternTooLong));
    assert_eq!(
        r.route(&"a".repeat(256), &mut [0; 4]),
        Err(RouteError::RoutingKeyTooLong)
    );
    r.bind("#", 1).unwrap();
    r.bind("a", 2).unwrap();
    let mut out = [0u16; 1];
    assert_eq!(r.route("a", &mut out), Err(RouteError::OutputFull));
    assert!(BindError::WordBytesFull.to_string().contains("word arena"));
    assert!(RouteError::OutputFull.to_string().contains("output full"));

    let mut zero: TopicRouter<u16, 0, 0, 0, 0> = TopicRouter::new();
    assert_eq!(zero.bind("a", 1), Err(BindError::NodesFull));
    assert_eq!(zero.route("a", &mut out), Ok(0));
    let mut no_edges: TopicRouter<u16, 4, 0, 0, 2> = TopicRouter::new();
    assert_eq!(no_edges.bind("a", 1), Err(BindError::EdgesFull));
    no_edges.bind("*.#", 1).unwrap();
    assert_eq!(no_edges.route("a", &mut out), Ok(1));
}

#[test]
fn generation_wrap_resets_marks() {
    let mut r = Small::new();
    r.bind("a.#", 1).unwrap();
    r.generation = u32::MAX - 3;
    for _ in 0..10 {
        assert_eq!(routed(&mut r, "a.b.c"), [1]);
    }
}

#[test]
fn ten_thousand_bindings() {
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(|| {
            type Big = TopicRouter<u16, 32768, 65536, 262144, 16384>;
            let mut r: Box<Big> = Box::new(Big::new());
            let mut patterns = Vec::new();
            for i in 0..10_000u16 {
                let p = match i % 4 {
                    0 => format!("svc{}.ad.expired", i),
                    1 => format!("svc{}.ad.*", i),
                    2 => format!("svc{}.#", i),
                    _ => format!("*.user{}.#", i),
                };
                r.bind(&p, i).unwrap();
                patterns.push(p);
            }
            assert_eq!(r.len(), 10_000);
            for key in ["svc8.ad.expired", "svc9.ad.x", "x.user11.y.z", "svc10", "a"] {
                let want: Vec<u16> = (0..10_000u16)
                    .filter(|&i| matches(&patterns[i as usize], key))
                    .collect();
                assert_eq!(routed(&mut *r, key), want, "{key}");
            }
        })
        .unwrap()
        .join()
        .unwrap();
}

#[derive(Debug, Clone)]
enum Op {
    Bind(String, u16),
    Unbind(String, u16),
    Route(String),
}

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("a".to_string()),
        Just("b".to_string()),
        Just("*".to_string()),
        Just("#".to_string()),
        Just("a*".to_string()),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        proptest::collection::vec(word(), 1..6).prop_map(|w| w.join(".")),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (text(), 0u16..6).prop_map(|(p, d)| Op::Bind(p, d)),
        (text(), 0u16..6).prop_map(|(p, d)| Op::Unbind(p, d)),
        text().prop_map(Op::Route),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]
    #[test]
    fn agrees_with_scanning_every_binding(ops in proptest::collection::vec(op(), 1..80)) {
        let mut r: TopicRouter<u16, 48, 64, 192, 24> = TopicRouter::new();
        let mut model: Vec<(String, u16)> = Vec::new();
        for op in ops {
            match op {
                Op::Bind(p, d) => match r.bind(&p, d) {
                    Ok(()) => {
                        if !model.contains(&(p.clone(), d)) {
                            model.push((p, d));
                        }
                    }
                    Err(_) => prop_assert!(!model.contains(&(p, d))),
                },
                Op::Unbind(p, d) => {
                    let had = model.iter().position(|b| *b == (p.clone(), d));
                    prop_assert_eq!(r.unbind(&p, d), had.is_some());
                    if let Some(i) = had {
                        model.remove(i);
                    }
                }
                Op::Route(k) => {
                    let mut want: Vec<u16> =
                        model.iter().filter(|(p, _)| matches(p, &k)).map(|b| b.1).collect();
                    want.sort_unstable();
                    want.dedup();
                    prop_assert_eq!(routed(&mut r, &k), want);
                }
            }
            prop_assert_eq!(r.len(), model.len());
        }
        for (p, d) in model {
            prop_assert!(r.unbind(&p, d));
        }
        prop_assert_eq!(r.nodes_used(), 1);
        prop_assert_eq!(r.edges_used(), 0);
        prop_assert_eq!(r.word_bytes_used(), 0);
    }
}
