//! `topic::matches` against a slow reference: dynamic programming over the word lists.
//!
//! Input: `pattern 0xFF key`. If the first byte is even, every other byte is mapped onto the
//! alphabet `a b . * #` (dense in edge cases); otherwise the bytes are used as UTF-8.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lepus_core::topic::{matches, try_matches, TopicError};

fn words(s: &str) -> Vec<&str> {
    if s.is_empty() {
        Vec::new()
    } else {
        s.split('.').collect()
    }
}

fn reference(pattern: &str, key: &str) -> bool {
    let (p, k) = (words(pattern), words(key));
    let mut m = vec![vec![false; k.len() + 1]; p.len() + 1];
    m[0][0] = true;
    for i in 1..=p.len() {
        for j in 0..=k.len() {
            m[i][j] = match p[i - 1] {
                "#" => m[i - 1][j] || (j > 0 && m[i][j - 1]),
                "*" => j > 0 && m[i - 1][j - 1],
                w => j > 0 && m[i - 1][j - 1] && k[j - 1] == w,
            };
        }
    }
    m[p.len()][k.len()]
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let split = rest.iter().position(|&b| b == 0xff).unwrap_or(rest.len());
    let (p, k) = (&rest[..split], rest.get(split + 1..).unwrap_or(&[]));
    let (pattern, key): (String, String) = if mode % 2 == 0 {
        let map = |s: &[u8]| s.iter().map(|b| ['a', 'b', '.', '*', '#'][*b as usize % 5]).collect();
        (map(p), map(k))
    } else {
        match (std::str::from_utf8(p), std::str::from_utf8(k)) {
            (Ok(p), Ok(k)) => (p.to_string(), k.to_string()),
            _ => return,
        }
    };
    let got = matches(&pattern, &key);
    assert_eq!(got, reference(&pattern, &key), "{pattern:?} vs {key:?}");
    let checked = try_matches(&pattern, &key);
    if pattern.len() > 255 {
        assert_eq!(checked, Err(TopicError::PatternTooLong));
    } else if key.len() > 255 {
        assert_eq!(checked, Err(TopicError::RoutingKeyTooLong));
    } else {
        assert_eq!(checked, Ok(got));
    }
});
