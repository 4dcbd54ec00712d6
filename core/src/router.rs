//! A fixed-capacity topic router: bindings `pattern -> destination`, and routing a key to
//! every matching destination once, in time independent of the number of bindings.
//!
//! Patterns are stored in a trie of words, as RabbitMQ's topic exchange does
//! ([`rabbit_db_topic_exchange`](https://github.com/rabbitmq/rabbitmq-server/blob/main/deps/rabbit/src/rabbit_db_topic_exchange.erl)):
//!
//! - a node is a pattern prefix; the root is the empty pattern (zero words);
//! - literal children are found through one open-addressing hash table keyed by
//!   `(parent node, word)`, the words themselves living in a fixed byte arena;
//! - the `*` and `#` children of a node are direct fields.
//!
//! [`TopicRouter::route`] walks the key word by word, carrying the set of trie nodes whose
//! pattern prefix matches the key prefix (deduplicated with generation-stamped marks),
//! following for each node its literal child for the word, its `*` child, and itself if it is
//! a `#` node; `#` nodes also match zero words (their `#` children are added with them). The
//! cost is O(key words x matching prefixes), not O(bindings). No recursion, no allocation,
//! never panics. Matching semantics are exactly those of [`crate::topic::matches`].
//!
//! Capacities are const parameters; a full table is an error naming what is full, and a
//! failed [`TopicRouter::bind`] leaves the router unchanged.
//!
//! | parameter    | what it bounds                                                          |
//! |--------------|-------------------------------------------------------------------------|
//! | `NODES`      | distinct pattern prefixes, plus one for the root                        |
//! | `EDGES`      | hash table slots for literal words; at most 3/4 of them are used        |
//! | `WORD_BYTES` | arena bytes: each distinct literal edge takes its length + 5 bytes      |
//! | `BINDINGS`   | `(pattern, destination)` bindings (and distinct destinations)           |
//!
//! The router is a plain struct: put it in a `static` (its `new` is `const`) or a `Box`; large
//! instances (10,000 bindings need a few megabytes) do not fit a thread's stack.

#[cfg(test)]
mod tests;

use crate::topic::{validate_pattern, validate_routing_key, word_at, words_end, TopicError};

const NONE: u32 = u32::MAX;
/// Bytes of arena header before each word: owner node (u32 LE) and length (u8).
const WORD_HEADER: usize = 5;

/// Why [`TopicRouter::bind`] failed. The router is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum BindError {
    /// The pattern is longer than 255 bytes (AMQP short string).
    PatternTooLong,
    /// No free trie node (`NODES`) for a new pattern prefix.
    NodesFull,
    /// The literal edge table (`EDGES`) would be more than 3/4 full.
    EdgesFull,
    /// The word arena (`WORD_BYTES`) has no room for the pattern's new words.
    WordBytesFull,
    /// No free binding slot (`BINDINGS`).
    BindingsFull,
}

impl core::fmt::Display for BindError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            BindError::PatternTooLong => "binding pattern longer than 255 bytes",
            BindError::NodesFull => "topic router full: no free trie node",
            BindError::EdgesFull => "topic router full: literal edge table at 3/4 load",
            BindError::WordBytesFull => "topic router full: word arena has no room",
            BindError::BindingsFull => "topic router full: no free binding slot",
        })
    }
}

impl core::error::Error for BindError {}

impl From<TopicError> for BindError {
    fn from(_: TopicError) -> Self {
        BindError::PatternTooLong
    }
}

/// Why [`TopicRouter::route`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum RouteError {
    /// The routing key is longer than 255 bytes (AMQP short string).
    RoutingKeyTooLong,
    /// More distinct destinations match than the output slice holds; the slice holds the
    /// first ones found.
    OutputFull,
}

impl core::fmt::Display for RouteError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            RouteError::RoutingKeyTooLong => "routing key longer than 255 bytes",
            RouteError::OutputFull => "output full: more matching destinations than slots",
        })
    }
}

impl core::error::Error for RouteError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Free,
    Root,
    Literal,
    Star,
    Hash,
}

#[derive(Debug, Clone, Copy)]
struct Node {
    kind: Kind,
    word_len: u8,
    parent: u32,
    /// Arena offset of the word bytes (literal nodes).
    word_off: u32,
    /// Hash of `(parent, word)` (literal nodes).
    code: u32,
    star: u32,
    hash: u32,
    /// Number of children (literal, `*` and `#`).
    children: u32,
    /// Head of this node's binding list; for a free node, the next free node.
    bindings: u32,
    /// Generation stamp: in the active set being built.
    mark: u32,
}

impl Node {
    const FREE: Node = Node {
        kind: Kind::Free,
        word_len: 0,
        parent: NONE,
        word_off: 0,
        code: 0,
        star: NONE,
        hash: NONE,
        children: 0,
        bindings: NONE,
        mark: 0,
    };
}

#[derive(Debug, Clone, Copy)]
struct Binding {
    /// Destination slot; `NONE` for a free binding.
    dest: u32,
    /// Next binding of the same node, or next free binding.
    next: u32,
}

impl Binding {
    const FREE: Binding = Binding {
        dest: NONE,
        next: NONE,
    };
}

#[derive(Debug, Clone, Copy)]
struct DestSlot<D> {
    dest: Option<D>,
    refs: u32,
    mark: u32,
}

/// Fixed-capacity topic router from patterns to destinations `D` (see the
/// [module documentation](self) for the capacities).
///
/// ```
/// use lepus_core::router::TopicRouter;
/// let mut router: TopicRouter<u8, 16, 32, 256, 8> = TopicRouter::new();
/// router.bind("mailer.ad.expired", 1).unwrap();
/// router.bind("mailer.ad.*", 2).unwrap();
/// router.bind("mailer.#", 2).unwrap();
/// let mut out = [0u8; 4];
/// let n = router.route("mailer.ad.expired", &mut out).unwrap();
/// let mut got = out[..n].to_vec();
/// got.sort();
/// assert_eq!(got, [1, 2]); // 2 is bound twice but delivered once
/// ```
#[derive(Debug, Clone)]
pub struct TopicRouter<
    D,
    const NODES: usize,
    const EDGES: usize,
    const WORD_BYTES: usize,
    const BINDINGS: usize,
> {
    nodes: [Node; NODES],
    node_high: u32,
    free_node: u32,
    nodes_used: u32,
    slots: [u32; EDGES],
    edges_used: u32,
    arena: [u8; WORD_BYTES],
    arena_len: usize,
    arena_dead: usize,
    bindings: [Binding; BINDINGS],
    binding_high: u32,
    free_binding: u32,
    bindings_used: u32,
    dests: [DestSlot<D>; BINDINGS],
    dest_high: u32,
    sets: [[u32; NODES]; 2],
    generation: u32,
}

impl<D, const NODES: usize, const EDGES: usize, const WORD_BYTES: usize, const BINDINGS: usize>
    Default for TopicRouter<D, NODES, EDGES, WORD_BYTES, BINDINGS>
where
    D: Copy + Eq,
{
    fn default() -> Self {
        Self::new()
    }
}

/// FNV-1a over a word.
#[inline]
fn word_hash(word: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in word {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Hash of `(parent, word)` from the word's hash.
#[inline]
fn edge_code(word_hash: u32, parent: u32) -> u32 {
    let mut h = word_hash ^ parent.wrapping_mul(0x9e37_79b9);
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h
}

#[inline]
fn idx(i: u32) -> usize {
    i as usize
}

impl<D, const NODES: usize, const EDGES: usize, const WORD_BYTES: usize, const BINDINGS: usize>
    TopicRouter<D, NODES, EDGES, WORD_BYTES, BINDINGS>
where
    D: Copy + Eq,
{
    /// An empty router. Never panics, never allocates.
    pub const fn new() -> Self {
        let mut nodes = [Node::FREE; NODES];
        if NODES > 0 {
            nodes[0].kind = Kind::Root;
        }
        TopicRouter {
            nodes,
            node_high: if NODES > 0 { 1 } else { 0 },
            free_node: NONE,
            nodes_used: if NODES > 0 { 1 } else { 0 },
            slots: [NONE; EDGES],
            edges_used: 0,
            arena: [0; WORD_BYTES],
            arena_len: 0,
            arena_dead: 0,
            bindings: [Binding::FREE; BINDINGS],
            binding_high: 0,
            free_binding: NONE,
            bindings_used: 0,
            dests: [DestSlot {
                dest: None,
                refs: 0,
                mark: 0,
            }; BINDINGS],
            dest_high: 0,
            sets: [[NONE; NODES]; 2],
            generation: 0,
        }
    }

    /// Number of bindings.
    pub fn len(&self) -> usize {
        idx(self.bindings_used)
    }

    /// Whether there are no bindings.
    pub fn is_empty(&self) -> bool {
        self.bindings_used == 0
    }

    /// Trie nodes in use, the root included.
    pub fn nodes_used(&self) -> usize {
        idx(self.nodes_used)
    }

    /// Literal edges in use (entries of the edge table).
    pub fn edges_used(&self) -> usize {
        idx(self.edges_used)
    }

    /// Arena bytes holding live words (headers included).
    pub fn word_bytes_used(&self) -> usize {
        self.arena_len.saturating_sub(self.arena_dead)
    }

    /// Removes every binding.
    pub fn clear(&mut self) {
        *self = Self::new();
    }

    fn max_edges() -> usize {
        EDGES.saturating_sub(EDGES / 4)
    }

    fn node(&self, n: u32) -> Option<&Node> {
        self.nodes.get(idx(n))
    }

    fn word(&self, n: &Node) -> &[u8] {
        let off = idx(n.word_off);
        self.arena
            .get(off..off.saturating_add(usize::from(n.word_len)))
            .unwrap_or(&[])
    }

    /// The literal child of `parent` for `word` (whose [`word_hash`] is `wh`).
    fn literal_child(&self, parent: u32, word: &[u8], wh: u32) -> u32 {
        if EDGES == 0 || self.edges_used == 0 {
            return NONE;
        }
        let code = edge_code(wh, parent);
        let mut i = idx(code) % EDGES;
        for _ in 0..EDGES {
            let n = match self.slots.get(i) {
                Some(&n) if n != NONE => n,
                _ => return NONE,
            };
            if let Some(node) = self.node(n) {
                if node.code == code && node.parent == parent && self.word(node) == word {
                    return n;
                }
            }
            i = (i + 1) % EDGES;
        }
        NONE
    }

    /// The child of `parent` for pattern word `word`.
    fn child(&self, parent: u32, word: &[u8]) -> u32 {
        match (word, self.node(parent)) {
            (b"*", Some(p)) => p.star,
            (b"#", Some(p)) => p.hash,
            (_, Some(_)) => self.literal_child(parent, word, word_hash(word)),
            (_, None) => NONE,
        }
    }

    /// The node of `pattern` if it exists.
    fn find(&self, pattern: &[u8]) -> u32 {
        let end = words_end(pattern);
        let mut cur = 0u32;
        let mut pos = 0;
        if NODES == 0 {
            return NONE;
        }
        while pos < end {
            let (w, next) = word_at(pattern, pos);
            cur = self.child(cur, w);
            if cur == NONE {
                return NONE;
            }
            pos = next;
        }
        cur
    }

    fn dest_slot(&self, dest: D) -> u32 {
        let high = idx(self.dest_high).min(BINDINGS);
        self.dests
            .get(..high)
            .unwrap_or(&[])
            .iter()
            .position(|s| s.dest == Some(dest))
            .map_or(NONE, |p| p as u32)
    }

    fn node_has_dest(&self, node: u32, dest_slot: u32) -> bool {
        let mut b = self.node(node).map_or(NONE, |n| n.bindings);
        // Bounded by BINDINGS in case of a corrupt list.
        for _ in 0..BINDINGS {
            match self.bindings.get(idx(b)) {
                Some(binding) if binding.dest == dest_slot => return true,
                Some(binding) => b = binding.next,
                None => return false,
            }
        }
        false
    }

    /// Whether `(pattern, dest)` is bound.
    pub fn contains(&self, pattern: &str, dest: D) -> bool {
        let node = self.find(pattern.as_bytes());
        let slot = self.dest_slot(dest);
        node != NONE && slot != NONE && self.node_has_dest(node, slot)
    }

    /// Binds `pattern` to `dest`. Binding the same pair twice is one binding (as AMQP
    /// bindings are), and succeeds.
    ///
    /// On error the router is unchanged and the error names what is full. Never panics, never
    /// allocates.
    pub fn bind(&mut self, pattern: &str, dest: D) -> Result<(), BindError> {
        validate_pattern(pattern)?;
        let pattern = pattern.as_bytes();
        if NODES == 0 {
            return Err(BindError::NodesFull);
        }
        // Walk the existing prefix.
        let end = words_end(pattern);
        let mut cur = 0u32;
        let mut pos = 0;
        while pos < end {
            let (w, next) = word_at(pattern, pos);
            let c = self.child(cur, w);
            if c == NONE {
                break;
            }
            cur = c;
            pos = next;
        }
        let slot = self.dest_slot(dest);
        if pos >= end && slot != NONE && self.node_has_dest(cur, slot) {
            return Ok(());
        }
        // Count what the rest needs, and check every capacity before changing anything.
        let (mut new_nodes, mut new_edges, mut new_bytes) = (0usize, 0usize, 0usize);
        let mut p = pos;
        while p < end {
            let (w, next) = word_at(pattern, p);
            new_nodes += 1;
            if w != b"*" && w != b"#" {
                new_edges += 1;
                new_bytes += w.len() + WORD_HEADER;
            }
            p = next;
        }
        let free_nodes = NODES.saturating_sub(idx(self.nodes_used));
        if new_nodes > free_nodes {
            return Err(BindError::NodesFull);
        }
        if idx(self.edges_used).saturating_add(new_edges) > Self::max_edges() {
            return Err(BindError::EdgesFull);
        }
        if self.word_bytes_used().saturating_add(new_bytes) > WORD_BYTES {
            return Err(BindError::WordBytesFull);
        }
        if idx(self.bindings_used) >= BINDINGS {
            return Err(BindError::BindingsFull);
        }
        if self.arena_len.saturating_add(new_bytes) > WORD_BYTES {
            self.compact_arena();
        }
        // Create the missing nodes.
        while pos < end {
            let (w, next) = word_at(pattern, pos);
            cur = match self.add_child(cur, w) {
                Some(c) => c,
                None => return Err(BindError::NodesFull), // unreachable: checked above
            };
            pos = next;
        }
        let slot = if slot == NONE {
            self.add_dest(dest)
        } else {
            slot
        };
        self.add_binding(cur, slot)
    }

    fn alloc_node(&mut self) -> Option<u32> {
        let n = if self.free_node != NONE {
            let n = self.free_node;
            self.free_node = self.node(n)?.bindings;
            n
        } else if idx(self.node_high) < NODES {
            let n = self.node_high;
            self.node_high += 1;
            n
        } else {
            return None;
        };
        self.nodes_used += 1;
        Some(n)
    }

    fn add_child(&mut self, parent: u32, word: &[u8]) -> Option<u32> {
        let n = self.alloc_node()?;
        let mut node = Node {
            parent,
            ..Node::FREE
        };
        match word {
            b"*" => {
                node.kind = Kind::Star;
                self.nodes.get_mut(idx(parent))?.star = n;
            }
            b"#" => {
                node.kind = Kind::Hash;
                self.nodes.get_mut(idx(parent))?.hash = n;
            }
            _ => {
                node.kind = Kind::Literal;
                node.word_len = u8::try_from(word.len()).ok()?;
                node.code = edge_code(word_hash(word), parent);
                // Arena entry: owner, length, bytes.
                let off = self.arena_len;
                let entry = self.arena.get_mut(off..off + WORD_HEADER + word.len())?;
                let (head, bytes) = entry.split_at_mut(WORD_HEADER);
                head.get_mut(..4)?.copy_from_slice(&n.to_le_bytes());
                *head.get_mut(4)? = node.word_len;
                bytes.copy_from_slice(word);
                node.word_off = u32::try_from(off + WORD_HEADER).ok()?;
                self.arena_len = off + WORD_HEADER + word.len();
                // Edge table: first empty slot from the home slot.
                let mut i = idx(node.code) % EDGES;
                while self.slots.get(i).is_some_and(|&s| s != NONE) {
                    i = (i + 1) % EDGES;
                }
                *self.slots.get_mut(i)? = n;
                self.edges_used += 1;
            }
        }
        *self.nodes.get_mut(idx(n))? = node;
        self.nodes.get_mut(idx(parent))?.children += 1;
        Some(n)
    }

    fn add_dest(&mut self, dest: D) -> u32 {
        let high = idx(self.dest_high).min(BINDINGS);
        let free = self
            .dests
            .get(..high)
            .unwrap_or(&[])
            .iter()
            .position(|s| s.dest.is_none());
        let slot = match free {
            Some(p) => p as u32,
            None => {
                self.dest_high += 1;
                high as u32
            }
        };
        if let Some(s) = self.dests.get_mut(idx(slot)) {
            *s = DestSlot {
                dest: Some(dest),
                refs: 0,
                mark: 0,
            };
        }
        slot
    }

    fn add_binding(&mut self, node: u32, dest_slot: u32) -> Result<(), BindError> {
        let b = if self.free_binding != NONE {
            let b = self.free_binding;
            self.free_binding = self.bindings.get(idx(b)).map_or(NONE, |x| x.next);
            b
        } else if idx(self.binding_high) < BINDINGS {
            self.binding_high += 1;
            self.binding_high - 1
        } else {
            return Err(BindError::BindingsFull);
        };
        let head = self.node(node).map_or(NONE, |n| n.bindings);
        if let Some(binding) = self.bindings.get_mut(idx(b)) {
            *binding = Binding {
                dest: dest_slot,
                next: head,
            };
        }
        if let Some(n) = self.nodes.get_mut(idx(node)) {
            n.bindings = b;
        }
        if let Some(d) = self.dests.get_mut(idx(dest_slot)) {
            d.refs += 1;
        }
        self.bindings_used += 1;
        Ok(())
    }

    fn compact_arena(&mut self) {
        let (mut read, mut write) = (0usize, 0usize);
        while read + WORD_HEADER <= self.arena_len {
            let mut owner = [0u8; 4];
            owner.copy_from_slice(self.arena.get(read..read + 4).unwrap_or(&[0xff; 4]));
            let owner = u32::from_le_bytes(owner);
            let len = usize::from(self.arena.get(read + 4).copied().unwrap_or(0));
            let total = WORD_HEADER + len;
            if owner != NONE {
                self.arena.copy_within(read..read + total, write);
                if let Some(n) = self.nodes.get_mut(idx(owner)) {
                    n.word_off = (write + WORD_HEADER) as u32;
                }
                write += total;
            }
            read += total;
        }
        self.arena_len = write;
        self.arena_dead = 0;
    }

    /// Removes the binding `(pattern, dest)`; returns whether it existed. Trie nodes, edges
    /// and arena bytes no longer used are freed. Never panics, never allocates.
    pub fn unbind(&mut self, pattern: &str, dest: D) -> bool {
        let node = self.find(pattern.as_bytes());
        let slot = self.dest_slot(dest);
        if node == NONE || slot == NONE {
            return false;
        }
        // Unlink the binding from the node's list.
        let mut prev = NONE;
        let mut b = self.node(node).map_or(NONE, |n| n.bindings);
        let mut found = false;
        for _ in 0..BINDINGS {
            let Some(&binding) = self.bindings.get(idx(b)) else {
                break;
            };
            if binding.dest == slot {
                if prev == NONE {
                    if let Some(n) = self.nodes.get_mut(idx(node)) {
                        n.bindings = binding.next;
                    }
                } else if let Some(p) = self.bindings.get_mut(idx(prev)) {
                    p.next = binding.next;
                }
                if let Some(x) = self.bindings.get_mut(idx(b)) {
                    *x = Binding {
                        dest: NONE,
                        next: self.free_binding,
                    };
                }
                self.free_binding = b;
                self.bindings_used -= 1;
                found = true;
                break;
            }
            prev = b;
            b = binding.next;
        }
        if !found {
            return false;
        }
        if let Some(d) = self.dests.get_mut(idx(slot)) {
            d.refs = d.refs.saturating_sub(1);
            if d.refs == 0 {
                d.dest = None;
            }
        }
        self.prune(node);
        true
    }

    /// Frees `node` and its ancestors while they hold no binding and no child.
    fn prune(&mut self, mut n: u32) {
        while n != 0 {
            let Some(&node) = self.node(n) else { return };
            if node.bindings != NONE || node.children != 0 {
                return;
            }
            let parent = node.parent;
            match node.kind {
                Kind::Star => {
                    if let Some(p) = self.nodes.get_mut(idx(parent)) {
                        p.star = NONE;
                    }
                }
                Kind::Hash => {
                    if let Some(p) = self.nodes.get_mut(idx(parent)) {
                        p.hash = NONE;
                    }
                }
                Kind::Literal => {
                    self.remove_edge(n, node.code);
                    let head = idx(node.word_off).saturating_sub(WORD_HEADER);
                    if let Some(owner) = self.arena.get_mut(head..head + 4) {
                        owner.copy_from_slice(&NONE.to_le_bytes());
                    }
                    self.arena_dead += WORD_HEADER + usize::from(node.word_len);
                }
                Kind::Root | Kind::Free => return,
            }
            if let Some(p) = self.nodes.get_mut(idx(parent)) {
                p.children = p.children.saturating_sub(1);
            }
            if let Some(x) = self.nodes.get_mut(idx(n)) {
                *x = Node {
                    bindings: self.free_node,
                    ..Node::FREE
                };
            }
            self.free_node = n;
            self.nodes_used -= 1;
            n = parent;
        }
    }

    /// Removes node `n` from the edge table (linear probing, backward-shift deletion).
    fn remove_edge(&mut self, n: u32, code: u32) {
        if EDGES == 0 {
            return;
        }
        let mut i = idx(code) % EDGES;
        let mut steps = 0;
        while self.slots.get(i).is_some_and(|&s| s != n) {
            i = (i + 1) % EDGES;
            steps += 1;
            if steps > EDGES {
                return;
            }
        }
        if let Some(s) = self.slots.get_mut(i) {
            *s = NONE;
        }
        self.edges_used = self.edges_used.saturating_sub(1);
        let mut j = i;
        for _ in 0..EDGES {
            j = (j + 1) % EDGES;
            let m = self.slots.get(j).copied().unwrap_or(NONE);
            if m == NONE {
                return;
            }
            let home = self.node(m).map_or(j, |x| idx(x.code) % EDGES);
            // Leave `m` where it is if its home lies cyclically in (i, j].
            let stays = if i <= j {
                i < home && home <= j
            } else {
                i < home || home <= j
            };
            if !stays {
                if let Some(s) = self.slots.get_mut(i) {
                    *s = m;
                }
                if let Some(s) = self.slots.get_mut(j) {
                    *s = NONE;
                }
                i = j;
            }
        }
    }

    fn next_generation(&mut self) -> u32 {
        if self.generation == u32::MAX {
            for n in self.nodes.iter_mut() {
                n.mark = 0;
            }
            for d in self.dests.iter_mut() {
                d.mark = 0;
            }
            self.generation = 0;
        }
        self.generation += 1;
        self.generation
    }

    /// Writes every destination bound to a pattern matching `routing_key` into `out`, each
    /// destination once, and returns how many (in no particular order).
    ///
    /// Takes `&mut self` for its scratch sets and marks; the bindings are unchanged. Never
    /// panics, never allocates, no recursion; O(key words x matching pattern prefixes).
    pub fn route(&mut self, routing_key: &str, out: &mut [D]) -> Result<usize, RouteError> {
        if validate_routing_key(routing_key).is_err() {
            return Err(RouteError::RoutingKeyTooLong);
        }
        if NODES == 0 || self.bindings_used == 0 {
            return Ok(0);
        }
        let key = routing_key.as_bytes();
        let mut cur = 0usize;
        let mut gen = self.next_generation();
        let mut len = 0usize;
        {
            let [a, _] = &mut self.sets;
            add_closure(&mut self.nodes, a, &mut len, gen, 0);
        }
        let k_end = words_end(key);
        let mut k = 0;
        while k < k_end && len > 0 {
            let (word, k_next) = word_at(key, k);
            let wh = word_hash(word);
            gen = self.next_generation();
            let mut next_len = 0usize;
            for i in 0..len {
                let n = self
                    .sets
                    .get(cur)
                    .and_then(|s| s.get(i))
                    .copied()
                    .unwrap_or(NONE);
                let Some(&node) = self.node(n) else { continue };
                let lit = self.literal_child(n, word, wh);
                let [a, b] = &mut self.sets;
                let to = if cur == 0 { b } else { a };
                if node.kind == Kind::Hash {
                    add_closure(&mut self.nodes, to, &mut next_len, gen, n);
                }
                if node.star != NONE {
                    add_closure(&mut self.nodes, to, &mut next_len, gen, node.star);
                }
                if lit != NONE {
                    add_closure(&mut self.nodes, to, &mut next_len, gen, lit);
                }
            }
            cur = 1 - cur;
            len = next_len;
            k = k_next;
        }
        // Deliver each destination once.
        let gen = self.next_generation();
        let mut count = 0usize;
        for i in 0..len {
            let n = self
                .sets
                .get(cur)
                .and_then(|s| s.get(i))
                .copied()
                .unwrap_or(NONE);
            let mut b = self.node(n).map_or(NONE, |x| x.bindings);
            for _ in 0..BINDINGS {
                let Some(&binding) = self.bindings.get(idx(b)) else {
                    break;
                };
                b = binding.next;
                let Some(slot) = self.dests.get_mut(idx(binding.dest)) else {
                    continue;
                };
                if slot.mark == gen {
                    continue;
                }
                slot.mark = gen;
                let Some(d) = slot.dest else { continue };
                match out.get_mut(count) {
                    Some(o) => *o = d,
                    None => return Err(RouteError::OutputFull),
                }
                count += 1;
            }
        }
        Ok(count)
    }
}

/// Adds `start` and its chain of `#` children (which match zero words) to `set`.
fn add_closure<const N: usize>(
    nodes: &mut [Node; N],
    set: &mut [u32; N],
    len: &mut usize,
    gen: u32,
    start: u32,
) {
    let mut n = start;
    for _ in 0..N {
        let Some(node) = nodes.get_mut(idx(n)) else {
            return;
        };
        if node.mark == gen {
            return; // already in, with its `#` chain
        }
        node.mark = gen;
        match set.get_mut(*len) {
            Some(s) => *s = n,
            None => return,
        }
        *len += 1;
        n = node.hash;
    }
}
