//! `lepus route PATTERN KEY...`: prints core's explanation of topic matching.

use lepus::core::topic::{explain, try_matches, WordKind, WordMatch, MAX_WORDS};
use serde_json::{json, Value};

use crate::cli::{Global, Output, RouteArgs};
use crate::failure::{Code, Failure};

pub fn run(g: &Global, args: RouteArgs) -> Result<Code, Failure> {
    let pattern = args.pattern.as_str();
    let mut all_match = true;
    let mut docs = Vec::new();
    for key in &args.keys {
        try_matches(pattern, key).map_err(|e| Failure::usage(e.to_string()))?;
        let mut table = [WordMatch::default(); MAX_WORDS];
        let explained =
            explain(pattern, key, &mut table).map_err(|e| Failure::usage(e.to_string()))?;
        let words = explained.and_then(|n| table.get(..n));
        all_match &= words.is_some();
        match g.output {
            Output::Text => print_text(pattern, key, words),
            Output::Json => docs.push(to_json(pattern, key, words)),
        }
    }
    if g.output == Output::Json {
        println!("{}", Value::Array(docs));
    }
    Ok(if all_match { Code::Ok } else { Code::NoMatch })
}

fn kind_name(kind: WordKind) -> &'static str {
    match kind {
        WordKind::Literal => "literal",
        WordKind::Star => "star",
        WordKind::Hash => "hash",
    }
}

fn print_text(pattern: &str, key: &str, words: Option<&[WordMatch]>) {
    let Some(words) = words else {
        println!("{key:?} does not match {pattern:?}");
        return;
    };
    println!("{key:?} matches {pattern:?}");
    let width = words
        .iter()
        .map(|m| m.pattern_word(pattern).len())
        .max()
        .unwrap_or(0);
    for m in words {
        let what = match (m.kind(pattern), m.key_words) {
            (WordKind::Hash, 0) => "(no words)".to_owned(),
            (WordKind::Hash, 1) => format!("{:?} (1 word)", m.matched(key)),
            (WordKind::Hash, n) => format!("{:?} ({n} words)", m.matched(key)),
            (WordKind::Star, _) => format!("{:?} (any one word)", m.matched(key)),
            (WordKind::Literal, _) => format!("{:?}", m.matched(key)),
        };
        println!("  {:<width$}  ->  {what}", m.pattern_word(pattern));
    }
}

fn to_json(pattern: &str, key: &str, words: Option<&[WordMatch]>) -> Value {
    json!({
        "pattern": pattern,
        "key": key,
        "matches": words.is_some(),
        "words": words.map(|ws| ws.iter().map(|m| json!({
            "pattern_word": m.pattern_word(pattern),
            "kind": kind_name(m.kind(pattern)),
            "matched": m.matched(key),
            "key_words": m.key_words,
        })).collect::<Vec<_>>()),
    })
}
