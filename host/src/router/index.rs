//! Which routes' patterns match a topic, without testing every route.
//!
//! Patterns are stored in a trie over their words, and a topic is matched by walking the trie
//! with the *set* of nodes its words so far could have reached (an NFA simulation). Following
//! one path at a time would be exponential in the number of `#`s (`a.#.#.#.b`), and would find
//! the same route along several paths; keeping a deduplicated set bounds the work by
//! words × reachable nodes and reaches each route's final node at most once.

use std::collections::HashMap;

use super::pattern::{Pattern, Segment};

type NodeId = u32;

const ROOT: NodeId = 0;

#[derive(Debug, Clone, Default)]
struct Node {
    literal: HashMap<Box<str>, NodeId>,
    star: Option<NodeId>,
    hash: Option<NodeId>,
    /// Reached through a `#` edge, so it may consume any further word and stay here.
    loops: bool,
    /// Routes (indices into `RouteIndex::routes`) whose pattern ends at this node, ascending.
    routes: Vec<u32>,
}

/// Many patterns, each with a value (such as a route id), looked up by topic.
#[derive(Debug, Clone)]
pub struct RouteIndex<T> {
    nodes: Vec<Node>,
    routes: Vec<(Pattern, T)>,
}

impl<T> Default for RouteIndex<T> {
    fn default() -> Self {
        RouteIndex {
            nodes: vec![Node::default()],
            routes: Vec::new(),
        }
    }
}

impl<T> FromIterator<(Pattern, T)> for RouteIndex<T> {
    fn from_iter<I: IntoIterator<Item = (Pattern, T)>>(routes: I) -> Self {
        let mut index = RouteIndex::default();
        for (pattern, value) in routes {
            index.insert(pattern, value);
        }
        index
    }
}

impl<T> RouteIndex<T> {
    pub fn new(routes: impl IntoIterator<Item = (Pattern, T)>) -> Self {
        routes.into_iter().collect()
    }

    /// Adds a route. Removing one means building a new index from the remaining routes, which
    /// is cheap enough (a few milliseconds for 10,000 routes) to do on every route change.
    pub fn insert(&mut self, pattern: Pattern, value: T) {
        let route = u32::try_from(self.routes.len()).expect("fewer than 2^32 routes");
        let mut node = ROOT;
        for segment in pattern.segments() {
            node = self.child(node, segment);
        }
        self.nodes[node as usize].routes.push(route);
        self.routes.push((pattern, value));
    }

    fn child(&mut self, parent: NodeId, segment: Segment<'_>) -> NodeId {
        let existing = {
            let p = &self.nodes[parent as usize];
            match segment {
                Segment::Literal(w) => p.literal.get(w).copied(),
                Segment::Star => p.star,
                Segment::Hash => p.hash,
            }
        };
        if let Some(id) = existing {
            return id;
        }
        let id = NodeId::try_from(self.nodes.len()).expect("fewer than 2^32 trie nodes");
        self.nodes.push(Node {
            loops: segment == Segment::Hash,
            ..Node::default()
        });
        let p = &mut self.nodes[parent as usize];
        match segment {
            Segment::Literal(w) => {
                p.literal.insert(w.into(), id);
            }
            Segment::Star => p.star = Some(id),
            Segment::Hash => p.hash = Some(id),
        }
        id
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The routes in the order they were added.
    pub fn routes(&self) -> impl ExactSizeIterator<Item = &(Pattern, T)> {
        self.routes.iter()
    }

    /// The values of all routes whose pattern matches `topic`, each once, in the order the
    /// routes were added.
    ///
    /// `topic` is taken to be valid ([`validate_topic`](super::pattern::validate_topic)); for
    /// an invalid one the answer is unspecified (but there is one, and no panic).
    pub fn matches(&self, topic: &str) -> Vec<&T> {
        let mut out = Vec::new();
        self.matches_into(topic, &mut out);
        out
    }

    /// [`matches`](Self::matches) appending to `out`, so a caller routing many messages can
    /// reuse one buffer.
    pub fn matches_into<'a>(&'a self, topic: &str, out: &mut Vec<&'a T>) {
        let mut current = Vec::with_capacity(8);
        let mut next = Vec::with_capacity(8);
        self.enter(ROOT, &mut current);
        for word in topic.split('.') {
            next.clear();
            for &id in &current {
                let node = &self.nodes[id as usize];
                if let Some(&child) = node.literal.get(word) {
                    self.enter(child, &mut next);
                }
                if let Some(child) = node.star {
                    self.enter(child, &mut next);
                }
                if node.loops {
                    self.enter(id, &mut next);
                }
            }
            if next.is_empty() {
                return;
            }
            next.sort_unstable();
            next.dedup();
            std::mem::swap(&mut current, &mut next);
        }
        // Each route ends at one node and `current` holds each node once, so no route repeats;
        // sorting only restores insertion order across nodes.
        let mut found: Vec<u32> = current
            .iter()
            .flat_map(|&id| self.nodes[id as usize].routes.iter().copied())
            .collect();
        found.sort_unstable();
        out.extend(found.into_iter().map(|r| &self.routes[r as usize].1));
    }

    /// Adds `id` and every node reachable from it by `#` edges: a `#` may match zero words, so
    /// reaching a node also reaches the `#` after it without consuming anything.
    fn enter(&self, mut id: NodeId, set: &mut Vec<NodeId>) {
        set.push(id);
        while let Some(hash) = self.nodes[id as usize].hash {
            set.push(hash);
            id = hash;
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn pattern(text: &str) -> Pattern {
        Pattern::parse(text).unwrap()
    }

    /// Asserts both the reference matcher and a one-route index agree with `expected`.
    fn check(p: &str, topic: &str, expected: bool) {
        assert_eq!(pattern(p).matches(topic), expected, "{p} vs {topic}");
        let index = RouteIndex::new([(pattern(p), ())]);
        assert_eq!(
            index.matches(topic).len(),
            usize::from(expected),
            "{p} vs {topic} (index)"
        );
    }

    #[test]
    fn amqp_examples() {
        for topic in ["orders", "orders.eu", "orders.eu.paid"] {
            check("orders.#", topic, true);
        }
        check("orders.#", "order", false);
        check("orders.#", "refunds.orders", false);
        for topic in ["a", "a.b", "x.y.z.w"] {
            check("#", topic, true);
        }
        check("#.paid", "paid", true);
        check("#.paid", "a.b.paid", true);
        check("#.paid", "paid.a", false);
        for topic in ["a.b", "a.x.b", "a.x.y.b"] {
            check("a.#.b", topic, true);
        }
        check("a.#.b", "a", false);
        check("a.#.b", "a.b.c", false);
        check("a.*.b", "a.x.b", true);
        check("a.*.b", "a.b", false);
        check("a.*.b", "a.x.y.b", false);
    }

    #[test]
    fn edge_cases() {
        check("#.#", "a", true);
        check("#.#", "a.b.c", true);
        check("*.#", "a", true);
        check("*.#", "a.b", true);
        check("#.*", "a", true);
        check("*.*", "a", false);
        for topic in ["a.b", "a.b.b", "a.x.b", "a.x.y.b.b"] {
            check("a.#.#.b", topic, true);
        }
        check("a.#.#.b", "a", false);
        check("a", "a", true);
        check("a", "b", false);
        check("*", "a", true);
        check("*", "a.b", false);
        check("a.b", "a", false);
        check("a", "a.b", false);
        let many = vec!["w"; 32].join(".");
        check("#", &many, true);
        check("w.#.w", &many, true);
        check("#.w.#.w.#.w.#", &many, true);
        check(&vec!["*"; 32].join("."), &many, true);
        check(&vec!["*"; 31].join("."), &many, false);
        check(&vec!["#"; 32].join("."), &many, true);
        check(&format!("{}.x", vec!["#"; 31].join(".")), &many, false);
    }

    #[test]
    fn returns_each_matching_route_once_in_insertion_order() {
        let index = RouteIndex::new(
            [
                "orders.#",
                "#",
                "orders.eu",
                "*.eu",
                "refunds.#",
                "orders.eu",
                "#.#",
                "#.eu.#",
            ]
            .into_iter()
            .enumerate()
            .map(|(i, p)| (pattern(p), i)),
        );
        assert_eq!(index.matches("orders.eu"), [&0, &1, &2, &3, &5, &6, &7]);
        assert_eq!(index.matches("refunds"), [&1, &4, &6]);
        assert!(RouteIndex::<()>::default().matches("a").is_empty());
    }

    #[test]
    fn matches_into_appends() {
        let index = RouteIndex::new([(pattern("a"), 1), (pattern("b"), 2)]);
        let mut out = vec![&0];
        index.matches_into("b", &mut out);
        assert_eq!(out, [&0, &2]);
    }

    fn word() -> impl Strategy<Value = &'static str> {
        prop::sample::select(&["a", "b", "c"][..])
    }

    fn segment() -> impl Strategy<Value = &'static str> {
        prop_oneof![3 => word(), 1 => Just("*"), 1 => Just("#")]
    }

    fn topic() -> impl Strategy<Value = String> {
        prop::collection::vec(word(), 1..=6).prop_map(|w| w.join("."))
    }

    fn pattern_text() -> impl Strategy<Value = String> {
        prop::collection::vec(segment(), 1..=6).prop_map(|s| s.join("."))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn index_agrees_with_the_reference(
            patterns in prop::collection::vec(pattern_text(), 0..12),
            topics in prop::collection::vec(topic(), 1..8),
        ) {
            let patterns: Vec<Pattern> = patterns.iter().map(|p| pattern(p)).collect();
            let index = RouteIndex::new(patterns.iter().cloned().enumerate().map(|(i, p)| (p, i)));
            for topic in &topics {
                let expected: Vec<usize> = (0..patterns.len())
                    .filter(|&i| patterns[i].matches(topic))
                    .collect();
                let got: Vec<usize> = index.matches(topic).into_iter().copied().collect();
                prop_assert_eq!(got, expected, "topic {}", topic);
            }
        }
    }
}
