//! Which key words each word of a binding pattern matched: [`explain`].

use super::{word_at, words_end};

/// Most words a pattern of [`MAX_LEN`](super::MAX_LEN) (255) bytes can have: 128
/// (`a.a.a...`, or 127 dots around empty words).
pub const MAX_WORDS: usize = 128;

/// What a pattern word is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum WordKind {
    /// A literal word: matched one key word equal to it, byte for byte.
    Literal,
    /// `*`: matched exactly one key word (which may be empty).
    Star,
    /// `#`: matched zero or more key words.
    Hash,
}

/// How one word of a pattern matched: the pattern word's byte range in the pattern, and the
/// byte range of the key words it matched in the key (dots between them included; empty,
/// at the position where it would start, when a `#` matched zero words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct WordMatch {
    /// Start of the pattern word in the pattern (bytes).
    pub pattern_start: usize,
    /// End of the pattern word in the pattern (bytes, exclusive).
    pub pattern_end: usize,
    /// Start of the matched key words in the key (bytes).
    pub key_start: usize,
    /// End of the matched key words in the key (bytes, exclusive).
    pub key_end: usize,
    /// How many key words were matched (1 for a literal or `*`, 0 or more for `#`).
    pub key_words: usize,
}

impl WordMatch {
    /// The pattern word, sliced from `pattern` (the one given to [`explain`]).
    pub fn pattern_word<'p>(&self, pattern: &'p str) -> &'p str {
        pattern
            .get(self.pattern_start..self.pattern_end)
            .unwrap_or("")
    }

    /// The matched key words, sliced from `key` (the one given to [`explain`]).
    pub fn matched<'k>(&self, key: &'k str) -> &'k str {
        key.get(self.key_start..self.key_end).unwrap_or("")
    }

    /// Whether the pattern word is a literal, `*` or `#`.
    pub fn kind(&self, pattern: &str) -> WordKind {
        match self.pattern_word(pattern) {
            "*" => WordKind::Star,
            "#" => WordKind::Hash,
            _ => WordKind::Literal,
        }
    }
}

/// Why [`explain`] could not explain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ExplainError {
    /// The output slice has fewer entries than the pattern has words.
    MatchesFull {
        /// Number of words in the pattern (entries needed).
        needed: usize,
    },
}

impl core::fmt::Display for ExplainError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ExplainError::MatchesFull { needed } => {
                write!(f, "word match table full: the pattern has {needed} words")
            }
        }
    }
}

impl core::error::Error for ExplainError {}

/// Stores `entry` at `i` (always in bounds: `out` was checked against the word count).
fn set(out: &mut [WordMatch], i: usize, entry: WordMatch) {
    if let Some(slot) = out.get_mut(i) {
        *slot = entry;
    }
}

/// Number of words of `s` (the empty string has none).
fn word_count(s: &[u8]) -> usize {
    if s.is_empty() {
        0
    } else {
        s.iter().filter(|&&b| b == b'.').count().saturating_add(1)
    }
}

/// Explains how `routing_key` matches the binding `pattern`: fills `out[i]` with what the
/// i-th pattern word matched and returns `Some(number of pattern words)`, or `None` when the
/// key does not match (then `out` holds unspecified entries). Same semantics and the same
/// algorithm as [`matches`](super::matches) (a `#` takes as few words as it can, earlier ones
/// first), so `explain(..).is_some() == matches(..)` for every input.
///
/// ```
/// use lepus_core::topic::{explain, WordMatch};
/// let mut out = [WordMatch::default(); 8];
/// let (pattern, key) = ("mailer.#.expired", "mailer.ad.user.expired");
/// let n = explain(pattern, key, &mut out).unwrap().unwrap();
/// assert_eq!(n, 3);
/// assert_eq!(out[1].pattern_word(pattern), "#");
/// assert_eq!(out[1].matched(key), "ad.user");
/// assert_eq!(out[1].key_words, 2);
/// assert_eq!(explain("mailer.*", "mailer", &mut out), Ok(None));
/// ```
///
/// Never panics, never allocates, never recurses.
///
/// # Errors
/// [`ExplainError::MatchesFull`] when `out` has fewer entries than the pattern has words
/// ([`MAX_WORDS`] entries always suffice for a pattern of at most 255 bytes).
pub fn explain(
    pattern: &str,
    routing_key: &str,
    out: &mut [WordMatch],
) -> Result<Option<usize>, ExplainError> {
    let pattern = pattern.as_bytes();
    let key = routing_key.as_bytes();
    let n = word_count(pattern);
    if out.len() < n {
        return Err(ExplainError::MatchesFull { needed: n });
    }
    let p_end = words_end(pattern);
    let k_end = words_end(key);
    let key_len = key.len();
    // (pattern position, pattern word index, key position), as in `matches`, plus the index.
    let (mut p, mut pi, mut k) = (0usize, 0usize, 0usize);
    // After the last `#`: (pattern position past it, its index, key position it resumes at).
    let mut star: Option<(usize, usize, usize)> = None;
    while k < k_end {
        if p < p_end {
            let (pw, p_next) = word_at(pattern, p);
            let pw_end = p.saturating_add(pw.len());
            if pw == b"#" {
                let at = k.min(key_len);
                set(
                    out,
                    pi,
                    WordMatch {
                        pattern_start: p,
                        pattern_end: pw_end,
                        key_start: at,
                        key_end: at,
                        key_words: 0,
                    },
                );
                star = Some((p_next, pi, k));
                p = p_next;
                pi = pi.saturating_add(1);
                continue;
            }
            let (kw, k_next) = word_at(key, k);
            if pw == b"*" || pw == kw {
                set(
                    out,
                    pi,
                    WordMatch {
                        pattern_start: p,
                        pattern_end: pw_end,
                        key_start: k,
                        key_end: k.saturating_add(kw.len()),
                        key_words: 1,
                    },
                );
                p = p_next;
                pi = pi.saturating_add(1);
                k = k_next;
                continue;
            }
        }
        match star {
            Some((sp, spi, sk)) => {
                let (kw, sk_next) = word_at(key, sk);
                if let Some(entry) = out.get_mut(spi) {
                    if entry.key_words == 0 {
                        entry.key_start = sk;
                    }
                    entry.key_end = sk.saturating_add(kw.len());
                    entry.key_words = entry.key_words.saturating_add(1);
                }
                star = Some((sp, spi, sk_next));
                p = sp;
                pi = spi.saturating_add(1);
                k = sk_next;
            }
            None => return Ok(None),
        }
    }
    while p < p_end {
        let (pw, p_next) = word_at(pattern, p);
        if pw != b"#" {
            return Ok(None);
        }
        set(
            out,
            pi,
            WordMatch {
                pattern_start: p,
                pattern_end: p.saturating_add(pw.len()),
                key_start: key_len,
                key_end: key_len,
                key_words: 0,
            },
        );
        p = p_next;
        pi = pi.saturating_add(1);
    }
    Ok(Some(n))
}
