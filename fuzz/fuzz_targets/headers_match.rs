//! `headers::matches` against a transcription of RabbitMQ's algorithm
//! (`rabbit_exchange_type_headers:headers_match/5`): sort both tables by name (stable), then
//! merge, with Erlang `==` on values modelled independently.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lepus_core::headers::{matches, FieldPair, FieldValue as V, XMatch};

const NAMES: [&str; 6] = ["a", "b", "x-a", "x-match", "A", ""];
const STRS: [&str; 4] = ["all", "any", "all-with-x", "any-with-x"];

fn value(b: u8, c: u8) -> V<'static> {
    match b % 9 {
        0 => V::Void,
        1 => V::Bool(c % 2 == 0),
        2 => V::Int(i64::from(c as i8 % 4)),
        3 => V::UInt(u64::from(c % 4)),
        4 => V::Float([0.0, -0.0, 1.0, 1.5, 3.0, f64::NAN][c as usize % 6]),
        5 | 6 => V::Str(STRS[c as usize % 4]),
        7 => V::Str(["1", "a", ""][c as usize % 3]),
        _ => V::Bytes([b"1".as_slice(), b"any", b"a"][c as usize % 3]),
    }
}

fn table(bytes: &mut impl Iterator<Item = u8>, n: u8) -> Vec<FieldPair<'static>> {
    (0..n % 6)
        .map(|_| {
            let (a, b, c) = (bytes.next().unwrap_or(0), bytes.next().unwrap_or(0), bytes.next().unwrap_or(0));
            (NAMES[a as usize % NAMES.len()], value(b, c))
        })
        .collect()
}

/// Erlang `==` on the decoded values, written differently from the crate's.
fn erlang_eq(a: &V, b: &V) -> bool {
    fn num(v: &V) -> Option<f64> {
        match *v {
            V::Int(i) => Some(i as f64),
            V::UInt(u) => Some(u as f64),
            V::Float(f) => Some(f),
            _ => None,
        }
    }
    fn bin<'a>(v: &V<'a>) -> Option<&'a [u8]> {
        match *v {
            V::Str(s) => Some(s.as_bytes()),
            V::Bytes(b) => Some(b),
            _ => None,
        }
    }
    match (num(a), num(b)) {
        // values here are small, so f64 is exact
        (Some(x), Some(y)) => return x == y,
        (None, None) => {}
        _ => return false,
    }
    match (bin(a), bin(b)) {
        (Some(x), Some(y)) => x == y,
        (None, None) => match (a, b) {
            (V::Bool(x), V::Bool(y)) => x == y,
            (V::Void, V::Void) => true,
            _ => false,
        },
        _ => false,
    }
}

fn reference(args: &[FieldPair], headers: &[FieldPair]) -> bool {
    let kind = match args.iter().find(|f| f.0 == "x-match").map(|f| f.1) {
        Some(V::Str("any")) => "any",
        Some(V::Str("all-with-x")) => "all_with_x",
        Some(V::Str("any-with-x")) => "any_with_x",
        _ => "all",
    };
    let with_x = kind.ends_with("with_x");
    let mut p: Vec<FieldPair> = args.to_vec();
    let mut d: Vec<FieldPair> = headers.to_vec();
    p.sort_by(|x, y| x.0.as_bytes().cmp(y.0.as_bytes()));
    d.sort_by(|x, y| x.0.as_bytes().cmp(y.0.as_bytes()));
    let (mut all, mut any) = (true, false);
    let (mut i, mut j) = (0, 0);
    while i < p.len() {
        let (pk, pv) = p[i];
        if pk == "x-match" || (pk.starts_with("x-") && !with_x) {
            i += 1;
            continue;
        }
        if j >= d.len() {
            all = false;
            break;
        }
        let (dk, dv) = d[j];
        if pk.as_bytes() > dk.as_bytes() {
            j += 1;
        } else if pk.as_bytes() < dk.as_bytes() {
            all = false;
            i += 1;
        } else {
            if matches!(pv, V::Void) || erlang_eq(&pv, &dv) {
                any = true;
            } else {
                all = false;
            }
            i += 1;
            j += 1;
        }
    }
    if kind.starts_with("all") { all } else { any }
}

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.iter().copied();
    let (na, nh) = (bytes.next().unwrap_or(0), bytes.next().unwrap_or(0));
    let args = table(&mut bytes, na);
    let headers = table(&mut bytes, nh);
    let got = matches(&args, &headers);
    assert_eq!(got, reference(&args, &headers), "args {args:?} headers {headers:?}");
    // Invariants: header order never matters; a valid mode parses to what matching used.
    let mut reversed = headers.clone();
    reversed.reverse();
    let names_unique = headers.iter().enumerate().all(|(i, h)| !headers[..i].iter().any(|g| g.0 == h.0));
    if names_unique {
        assert_eq!(matches(&args, &reversed), got);
    }
    if let Ok(mode) = XMatch::from_args(&args) {
        assert_eq!(lepus_core::headers::matches_mode(mode, &args, &headers), got);
    }
});
