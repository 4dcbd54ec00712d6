use super::*;
use proptest::prelude::*;

/// Words as RabbitMQ splits them: the empty string has none.
fn words(s: &str) -> Vec<&str> {
    if s.is_empty() {
        Vec::new()
    } else {
        s.split('.').collect()
    }
}

/// Slow reference: dynamic programming over (pattern words, key words).
fn reference(pattern: &str, key: &str) -> bool {
    let p = words(pattern);
    let k = words(key);
    // m[i][j]: first i pattern words match first j key words.
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

#[test]
fn table() {
    let cases: &[(&str, &str, bool)] = &[
        // the talk's patterns
        ("mailer.ad.expired", "mailer.ad.expired", true),
        ("mailer.ad.*", "mailer.ad.expired", true),
        ("mailer.ad.*", "mailer.ad.moderated", true),
        ("mailer.user.*", "mailer.ad.expired", false),
        ("mailer.#", "mailer.ad.expired", true),
        ("mailer.#", "mailer", true),
        ("mailer.#", "mailerx", false),
        ("mailer.ad.*", "mailer.ad", false),
        ("mailer.ad.*", "mailer.ad.expired.now", false),
        // empty key and empty pattern have zero words
        ("", "", true),
        ("#", "", true),
        ("#.#", "", true),
        ("*", "", false),
        ("", "a", false),
        ("", ".", false),
        ("#", "a", true),
        ("#", "a.b.c", true),
        // empty words
        ("*", ".", false),
        ("*.*", ".", true),
        ("a.*.b", "a..b", true),
        ("a..b", "a..b", true),
        ("a.b", "a..b", false),
        ("a.#.b", "a..b", true),
        ("a.*", "a.", true),
        ("a", "a.", false),
        ("*.a", ".a", true),
        ("a.#", "a.", true),
        (".", ".", true),
        ("", ".", false),
        // `#` at start, middle, end, several
        ("#.b", "b", true),
        ("#.b", "a.b", true),
        ("#.b", "a.b.c", false),
        ("a.#.c", "a.c", true),
        ("a.#.c", "a.b.b.c", true),
        ("a.#.c", "a.b.b.d", false),
        (
            "#.#.#.#.#.#.b",
            "a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a",
            false,
        ),
        (
            "#.#.#.#.#.#.b",
            "a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.b",
            true,
        ),
        ("#.*", "", false),
        ("#.*", "a", true),
        ("*.#", "a", true),
        ("*.#.*", "a", false),
        ("*.#.*", "a.b", true),
        ("#.a.#", "b.a.c", true),
        ("#.a.#.a.#", "a.b.a", true),
        ("#.a.#.a.#", "a.b.b", false),
        // wildcards only as whole words
        ("a*b", "axb", false),
        ("a*b", "a*b", true),
        ("#a", "a", false),
        ("#a", "#a", true),
        ("a.b#", "a.bc", false),
        ("**", "a", false),
        ("##", "", false),
        // wildcards in the key are literal
        ("a", "*", false),
        ("*", "*", true),
        ("#", "#", true),
        // case-sensitive bytes, unicode
        ("Mailer.*", "mailer.x", false),
        ("é.*", "é.ü", true),
        ("e.*", "é.ü", false),
    ];
    for &(pattern, key, expected) in cases {
        assert_eq!(
            matches(pattern, key),
            expected,
            "pattern {pattern:?} key {key:?}"
        );
        assert_eq!(
            reference(pattern, key),
            expected,
            "reference {pattern:?} key {key:?}"
        );
    }
}

#[test]
fn validation_names_the_limit() {
    let long = "a".repeat(256);
    let max = "a".repeat(255);
    assert_eq!(validate_routing_key(&max), Ok(()));
    assert_eq!(validate_pattern(&max), Ok(()));
    assert_eq!(
        validate_routing_key(&long),
        Err(TopicError::RoutingKeyTooLong)
    );
    assert_eq!(validate_pattern(&long), Err(TopicError::PatternTooLong));
    assert_eq!(try_matches(&long, "a"), Err(TopicError::PatternTooLong));
    assert_eq!(try_matches("#", &long), Err(TopicError::RoutingKeyTooLong));
    assert_eq!(try_matches("#", &max), Ok(true));
    assert!(TopicError::PatternTooLong.to_string().contains("255"));
    assert!(TopicError::RoutingKeyTooLong
        .to_string()
        .contains("routing key"));
    // over-long input is still matched with the same rules
    assert!(matches("#", &long));
    assert!(!matches("*", &format!("{long}.b")));
}

#[test]
fn worst_case_is_fast() {
    // 128 `#` against a 255-byte key of 128 words ending in a mismatch: quadratic at most.
    let pattern = ["#"; 127].join(".") + ".b";
    let key = ["a"; 128].join(".");
    let start = std::time::Instant::now();
    for _ in 0..100 {
        assert!(!matches(&pattern, &key));
    }
    assert!(start.elapsed() < std::time::Duration::from_secs(2));
}

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("a".to_string()),
        Just("b".to_string()),
        Just("*".to_string()),
        Just("#".to_string()),
        Just("a*".to_string()),
        "[ab#*]{0,3}",
    ]
}

fn key_or_pattern() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        proptest::collection::vec(word(), 1..8).prop_map(|w| w.join(".")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]
    #[test]
    fn agrees_with_reference(pattern in key_or_pattern(), key in key_or_pattern()) {
        prop_assert_eq!(matches(&pattern, &key), reference(&pattern, &key));
    }

    #[test]
    fn arbitrary_strings_never_panic(pattern in ".{0,40}", key in ".{0,40}") {
        prop_assert_eq!(matches(&pattern, &key), reference(&pattern, &key));
    }
}

/// `explain` as (pattern word, matched key text, word count) triples.
fn explained(pattern: &str, key: &str) -> Option<Vec<(String, String, usize)>> {
    let mut out = [WordMatch::default(); MAX_WORDS];
    let n = explain(pattern, key, &mut out).ok()??;
    Some(
        out[..n]
            .iter()
            .map(|m| {
                (
                    m.pattern_word(pattern).to_string(),
                    m.matched(key).to_string(),
                    m.key_words,
                )
            })
            .collect(),
    )
}

#[test]
fn explain_table() {
    let t = |p: &str, w: &str, n: usize| (p.to_string(), w.to_string(), n);
    assert_eq!(
        explained("mailer.ad.*", "mailer.ad.expired"),
        Some(vec![
            t("mailer", "mailer", 1),
            t("ad", "ad", 1),
            t("*", "expired", 1)
        ])
    );
    assert_eq!(
        explained("mailer.#", "mailer"),
        Some(vec![t("mailer", "mailer", 1), t("#", "", 0)])
    );
    assert_eq!(
        explained("#.b", "a.a.b"),
        Some(vec![t("#", "a.a", 2), t("b", "b", 1)])
    );
    assert_eq!(
        explained("a.#.c.#", "a.b.c.c.d"),
        Some(vec![
            t("a", "a", 1),
            t("#", "b", 1),
            t("c", "c", 1),
            t("#", "c.d", 2)
        ])
    );
    assert_eq!(
        explained("a.*", "a."),
        Some(vec![t("a", "a", 1), t("*", "", 1)])
    );
    assert_eq!(explained("#", ""), Some(vec![t("#", "", 0)]));
    assert_eq!(explained("", ""), Some(vec![]));
    assert_eq!(explained("*", ""), None);
    assert_eq!(explained("mailer.*", "mailer.ad.expired"), None);
    // A full table is an error that names the need, never a panic.
    let mut small = [WordMatch::default(); 2];
    assert_eq!(
        explain("a.b.c", "a.b.c", &mut small),
        Err(ExplainError::MatchesFull { needed: 3 })
    );
    let m = WordMatch {
        pattern_start: 0,
        pattern_end: 1,
        ..WordMatch::default()
    };
    assert_eq!(m.kind("#"), WordKind::Hash);
    assert_eq!(m.kind("*"), WordKind::Star);
    assert_eq!(m.kind("x"), WordKind::Literal);
}

/// Checks that an explanation is a valid cover of the key by the pattern's words.
fn check_explanation(pattern: &str, key: &str) -> Result<(), TestCaseError> {
    let mut out = [WordMatch::default(); MAX_WORDS];
    let explained = explain(pattern, key, &mut out);
    prop_assert!(explained.is_ok());
    let Ok(explained) = explained else {
        return Ok(());
    };
    prop_assert_eq!(explained.is_some(), matches(pattern, key));
    let Some(n) = explained else { return Ok(()) };
    prop_assert_eq!(n, words(pattern).len());
    let mut covered: Vec<&str> = Vec::new();
    for (m, p) in out[..n].iter().zip(words(pattern)) {
        prop_assert_eq!(m.pattern_word(pattern), p);
        let text = m.matched(key);
        let ws: Vec<&str> = if m.key_words == 0 {
            Vec::new()
        } else {
            text.split('.').collect()
        };
        prop_assert_eq!(ws.len(), m.key_words);
        match p {
            "#" => {}
            "*" => prop_assert_eq!(m.key_words, 1),
            lit => prop_assert_eq!((m.key_words, text), (1, lit)),
        }
        covered.extend(ws);
    }
    prop_assert_eq!(covered, words(key));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]
    #[test]
    fn explain_covers_the_key(pattern in key_or_pattern(), key in key_or_pattern()) {
        check_explanation(&pattern, &key)?;
    }

    #[test]
    fn explain_arbitrary_strings(pattern in ".{0,40}", key in ".{0,40}") {
        check_explanation(&pattern, &key)?;
    }
}
