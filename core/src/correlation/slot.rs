//! Table slots and the storage that holds them.

/// One slot of a [`PendingRequests`](super::PendingRequests) table: empty, or a pending
/// request. Create storage from empty slots ([`Slot::new`] / `Default`).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Slot<T>(pub(crate) Option<Entry<T>>);

/// A pending request.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub(crate) struct Entry<T> {
    pub(crate) id: u128,
    pub(crate) deadline_ms: u64,
    pub(crate) group: Option<u32>,
    pub(crate) value: T,
}

impl<T> Slot<T> {
    /// An empty slot.
    pub const fn new() -> Self {
        Slot(None)
    }

    /// Whether the slot holds a pending request.
    pub fn is_occupied(&self) -> bool {
        self.0.is_some()
    }
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot::new()
    }
}

/// Where a table keeps its slots: anything that lends a mutable slice of them.
///
/// Implemented for every `AsRef<[Slot<T>]> + AsMut<[Slot<T>]>`: `[Slot<T>; N]` (no allocation),
/// `&mut [Slot<T>]` (a caller's buffer), and on std `Vec<Slot<T>>` and `Box<[Slot<T>]>`.
pub trait Storage<T>: AsRef<[Slot<T>]> + AsMut<[Slot<T>]> {}

impl<T, S: AsRef<[Slot<T>]> + AsMut<[Slot<T>]> + ?Sized> Storage<T> for S {}
