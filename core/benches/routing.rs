//! Topic matching and routing benchmarks.
//!
//! `cargo bench -p lepus-core --bench routing -- --warm-up-time 1 --measurement-time 2`
//!
//! - `matches/*`: [`lepus_core::topic::matches`] on the talk's typical keys, and the
//!   `#.#.#.#.#.#.b` pattern against a 30-word key (RabbitMQ 3.10 takes seconds on it).
//! - `route/{router,scan}/N`: routing one key against N bindings with the trie
//!   [`TopicRouter`], and with the baseline that calls `matches` on every binding.
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use lepus_core::router::TopicRouter;
use lepus_core::topic::matches;
use std::hint::black_box;

type Router = TopicRouter<u16, 32768, 65536, 262144, 16384>;

fn bench_matches(c: &mut Criterion) {
    let mut g = c.benchmark_group("matches");
    let typical = [
        ("exact", "mailer.ad.expired", "mailer.ad.expired"),
        ("star", "mailer.ad.*", "mailer.ad.expired"),
        ("hash", "mailer.#", "mailer.ad.expired"),
        ("miss", "mailer.user.*", "mailer.ad.expired"),
    ];
    for (name, pattern, key) in typical {
        g.bench_function(name, |b| {
            b.iter(|| matches(black_box(pattern), black_box(key)))
        });
    }
    let worst_key = ["a"; 30].join(".");
    g.bench_function("worst_hash6_vs_30_words", |b| {
        b.iter(|| matches(black_box("#.#.#.#.#.#.b"), black_box(&worst_key)))
    });
    g.finish();
}

/// Four bindings per service: exact, `*`, `#` and a leading `*`.
fn pattern(i: usize) -> String {
    let s = i / 4;
    match i % 4 {
        0 => format!("svc{s}.ad.expired"),
        1 => format!("svc{s}.ad.*"),
        2 => format!("svc{s}.#"),
        _ => format!("*.user{s}.#"),
    }
}

fn bench_route(c: &mut Criterion) {
    let mut g = c.benchmark_group("route");
    for n in [10usize, 1_000, 10_000] {
        let patterns: Vec<(String, u16)> = (0..n).map(|i| (pattern(i), i as u16)).collect();
        let mut router: Box<Router> = Box::new(Router::new());
        for (p, d) in &patterns {
            router.bind(p, *d).expect("fits");
        }
        let key = format!("svc{}.ad.expired", n / 8);
        let mut out = [0u16; 64];
        assert_eq!(router.route(&key, &mut out), Ok(3));
        g.bench_with_input(BenchmarkId::new("router", n), &key, |b, key| {
            b.iter(|| router.route(black_box(key), &mut out))
        });
        g.bench_with_input(BenchmarkId::new("scan", n), &key, |b, key| {
            b.iter(|| {
                let mut count = 0;
                for (p, d) in &patterns {
                    if matches(p, black_box(key)) && !out[..count].contains(d) {
                        out[count] = *d;
                        count += 1;
                    }
                }
                count
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_matches, bench_route);
criterion_main!(benches);
