//! `TopicRouter` against scanning every binding with `matches`, under random
//! bind / unbind / route operations, with small capacities so that every "full" error is hit.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lepus_core::router::{BindError, TopicRouter};
use lepus_core::topic::matches;

const WORDS: [&str; 8] = ["a", "b", "", "*", "#", "ab", "a*", "#b"];

/// A pattern or key of up to 5 words from one byte of length and bytes of words.
fn text(bytes: &mut impl Iterator<Item = u8>) -> String {
    let n = bytes.next().unwrap_or(0) % 6;
    if n == 0 {
        return String::new();
    }
    (0..n)
        .map(|_| WORDS[bytes.next().unwrap_or(0) as usize % WORDS.len()])
        .collect::<Vec<_>>()
        .join(".")
}

fuzz_target!(|data: &[u8]| {
    let mut router: Box<TopicRouter<u8, 24, 32, 96, 12>> = Box::new(TopicRouter::new());
    let mut model: Vec<(String, u8)> = Vec::new();
    let mut bytes = data.iter().copied();
    while let Some(op) = bytes.next() {
        let dest = op / 4 % 8;
        match op % 4 {
            0 | 1 => {
                let p = text(&mut bytes);
                let before = (router.len(), router.nodes_used(), router.edges_used());
                match router.bind(&p, dest) {
                    Ok(()) => {
                        if !model.contains(&(p.clone(), dest)) {
                            model.push((p, dest));
                        }
                    }
                    Err(e) => {
                        assert!(!model.contains(&(p.clone(), dest)), "{e}");
                        assert_ne!(e, BindError::PatternTooLong);
                        // A failed bind changes nothing.
                        assert_eq!(before, (router.len(), router.nodes_used(), router.edges_used()));
                    }
                }
            }
            2 => {
                let p = text(&mut bytes);
                let had = model.iter().position(|b| b.0 == p && b.1 == dest);
                assert_eq!(router.unbind(&p, dest), had.is_some());
                if let Some(i) = had {
                    model.remove(i);
                }
            }
            _ => {
                let k = text(&mut bytes);
                let mut want: Vec<u8> =
                    model.iter().filter(|(p, _)| matches(p, &k)).map(|b| b.1).collect();
                want.sort_unstable();
                want.dedup();
                let mut out = [0u8; 16];
                let n = router.route(&k, &mut out).expect("16 slots hold 8 destinations");
                let mut got = out[..n].to_vec();
                got.sort_unstable();
                assert_eq!(got, want, "key {k:?}, bindings {model:?}");
            }
        }
        assert_eq!(router.len(), model.len());
    }
    for (p, d) in &model {
        assert!(router.unbind(p, *d));
    }
    assert_eq!((router.nodes_used(), router.edges_used(), router.word_bytes_used()), (1, 0, 0));
});
