//! Counting what users received against what they should have received.

use std::collections::{BTreeMap, HashMap, HashSet};

/// What arrived, compared with what was expected.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub expected: usize,
    pub received: usize,
    /// Expected replies that never arrived.
    pub lost: usize,
    /// Arrivals of a reply the user already had (same text to the same user).
    pub duplicated: usize,
    /// Users whose replies, duplicates removed, came in another order than expected.
    pub out_of_order: usize,
    /// Replies nobody expected (a text or a user the load never asked for).
    pub unexpected: usize,
}

impl Tally {
    /// Whether the run is a failure: a duplicate alone is not (a kill between Graph's
    /// acceptance and the store's record can send one reply twice, by design).
    pub fn failed(&self) -> bool {
        self.lost > 0 || self.out_of_order > 0 || self.unexpected > 0
    }

    /// Whether every expected reply arrived.
    pub fn complete(&self) -> bool {
        self.lost == 0
    }
}

/// Compares `received` (user, text) pairs in arrival order with `expected`: per user,
/// the texts in the order they must arrive.
pub fn tally(expected: &BTreeMap<String, Vec<String>>, received: &[(String, String)]) -> Tally {
    let mut per_user: HashMap<&str, Vec<&str>> = HashMap::new();
    for (user, text) in received {
        per_user
            .entry(user.as_str())
            .or_default()
            .push(text.as_str());
    }
    let mut t = Tally {
        expected: expected.values().map(Vec::len).sum(),
        received: received.len(),
        ..Tally::default()
    };
    t.unexpected += per_user
        .iter()
        .filter(|(user, _)| !expected.contains_key(**user))
        .map(|(_, texts)| texts.len())
        .sum::<usize>();
    for (user, want) in expected {
        let got = per_user
            .get(user.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let wanted: HashSet<&str> = want.iter().map(String::as_str).collect();
        let mut seen = HashSet::new();
        let mut firsts = Vec::new();
        for text in got {
            if !wanted.contains(text) {
                t.unexpected += 1;
            } else if seen.insert(*text) {
                firsts.push(*text);
            } else {
                t.duplicated += 1;
            }
        }
        t.lost += want.len() - firsts.len();
        // Lost replies are counted above; the order is checked among those that came.
        let in_order = want.iter().map(String::as_str).filter(|w| seen.contains(w));
        if !in_order.eq(firsts.iter().copied()) {
            t.out_of_order += 1;
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expected() -> BTreeMap<String, Vec<String>> {
        BTreeMap::from([
            ("a".to_string(), vec!["1".into(), "2".into(), "3".into()]),
            ("b".to_string(), vec!["1".into(), "2".into()]),
        ])
    }

    fn got(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(u, t)| (u.to_string(), t.to_string()))
            .collect()
    }

    #[test]
    fn everything_in_order_is_clean() {
        let t = tally(
            &expected(),
            &got(&[("a", "1"), ("b", "1"), ("a", "2"), ("b", "2"), ("a", "3")]),
        );
        assert_eq!(
            t,
            Tally {
                expected: 5,
                received: 5,
                ..Tally::default()
            }
        );
        assert!(!t.failed());
    }

    #[test]
    fn lost_duplicated_reordered_and_unexpected_are_counted() {
        let t = tally(
            &expected(),
            &got(&[
                ("a", "2"),
                ("a", "1"),
                ("a", "2"),
                ("a", "3"),
                ("b", "1"),
                ("b", "x"),
                ("c", "1"),
            ]),
        );
        assert_eq!(
            t,
            Tally {
                expected: 5,
                received: 7,
                lost: 1,
                duplicated: 1,
                out_of_order: 1,
                unexpected: 2,
            }
        );
        assert!(t.failed());
    }

    #[test]
    fn a_duplicate_alone_does_not_fail_the_run() {
        let t = tally(
            &expected(),
            &got(&[
                ("a", "1"),
                ("a", "1"),
                ("a", "2"),
                ("a", "3"),
                ("b", "1"),
                ("b", "2"),
            ]),
        );
        assert_eq!((t.duplicated, t.lost, t.out_of_order), (1, 0, 0));
        assert!(!t.failed());
    }
}
