//! A fixed ring of recently finished correlation ids, to classify duplicate and late replies.

use super::group::Finish;

/// The last `R` finished ids and how each finished; the oldest is overwritten.
#[derive(Debug, Clone)]
pub(crate) struct Recent<const R: usize> {
    entries: [Option<(u128, Finish)>; R],
    next: usize,
}

impl<const R: usize> Recent<R> {
    pub(crate) const fn new() -> Self {
        Recent {
            entries: [None; R],
            next: 0,
        }
    }

    pub(crate) fn push(&mut self, id: u128, how: Finish) {
        if let Some(e) = self.entries.get_mut(self.next) {
            *e = Some((id, how));
        }
        self.next = if self.next + 1 >= R { 0 } else { self.next + 1 };
    }

    /// How `id` finished most recently, if it is still remembered. O(R).
    pub(crate) fn find(&self, id: u128) -> Option<Finish> {
        let mut i = self.next;
        for _ in 0..R {
            i = if i == 0 { R - 1 } else { i - 1 };
            if let Some(Some((seen, how))) = self.entries.get(i) {
                if *seen == id {
                    return Some(*how);
                }
            }
        }
        None
    }
}
