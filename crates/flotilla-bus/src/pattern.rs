//! Subscription patterns: what a subscriber may ask for, and how a pattern matches a channel.
//!
//! A pattern is a channel name in which `*` matches any run of characters (none included), which
//! is Redis's PSUBSCRIBE glob restricted to `*`. Redis also knows `?`, `[...]` and `\` escapes;
//! the bus refuses them so that the in-process backend, which matches patterns itself, and the
//! Redis backend, where the server matches them, can never disagree. A pattern without `*` is an
//! exact channel name and is routed by hash lookup.

use crate::BusError;

/// Characters with a glob meaning in Redis that the bus does not support.
const UNSUPPORTED: &[char] = &['?', '[', ']', '\\'];

/// What a subscription listens to: one channel, or every channel matching a pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Topic {
    /// One channel, by exact name (Redis SUBSCRIBE).
    Exact(String),
    /// Channels matching a `*` pattern (Redis PSUBSCRIBE).
    Pattern(String),
}

impl Topic {
    /// Checks a subscription pattern and classifies it.
    pub(crate) fn parse(pattern: &str) -> Result<Topic, BusError> {
        let invalid = |reason| BusError::InvalidPattern {
            pattern: pattern.to_owned(),
            reason,
        };
        if pattern.is_empty() {
            return Err(invalid("a pattern cannot be empty"));
        }
        if pattern.contains(UNSUPPORTED) {
            return Err(invalid(
                "only `*` is supported as a wildcard; `?`, `[`, `]` and `\\` are not allowed",
            ));
        }
        Ok(if pattern.contains('*') {
            Topic::Pattern(pattern.to_owned())
        } else {
            Topic::Exact(pattern.to_owned())
        })
    }
}

/// Checks a channel name given to `publish`.
///
/// Glob characters are refused in channel names too: a name with `*` could not be subscribed to
/// exactly (it would be read as a pattern), and Redis would match `?` or `[` in the name
/// differently from the in-process backend.
pub(crate) fn check_channel(channel: &str) -> Result<(), BusError> {
    let invalid = |reason| BusError::InvalidChannel {
        channel: channel.to_owned(),
        reason,
    };
    if channel.is_empty() {
        return Err(invalid("a channel name cannot be empty"));
    }
    if channel.contains('*') || channel.contains(UNSUPPORTED) {
        return Err(invalid(
            "channel names cannot contain `*`, `?`, `[`, `]` or `\\` (they are pattern syntax)",
        ));
    }
    Ok(())
}

/// Whether `channel` matches `pattern`, where `*` in the pattern matches any run of characters
/// (including none) and every other character matches itself.
///
/// The same rule Redis applies to PSUBSCRIBE patterns made only of literals and `*`. Runs in
/// O(pattern × channel) at worst and linear time for the usual one or two stars: on a mismatch it
/// only ever backtracks to the most recent `*`, which is enough for `*`-only globs.
pub fn pattern_matches(pattern: &str, channel: &str) -> bool {
    let (p, c) = (pattern.as_bytes(), channel.as_bytes());
    let (mut pi, mut ci) = (0, 0);
    // Where to resume after the most recent star: the pattern index after it and the channel
    // index it is currently taken to match up to.
    let mut star: Option<(usize, usize)> = None;
    while ci < c.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi + 1, ci));
            pi += 1;
        } else if pi < p.len() && p[pi] == c[ci] {
            pi += 1;
            ci += 1;
        } else if let Some((after_star, matched_to)) = star {
            // Let the star swallow one more character and retry from there.
            star = Some((after_star, matched_to + 1));
            pi = after_star;
            ci = matched_to + 1;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn literal_patterns_match_only_themselves() {
        assert!(pattern_matches("swarm:s1:fleet", "swarm:s1:fleet"));
        assert!(!pattern_matches("swarm:s1:fleet", "swarm:s1:flee"));
        assert!(!pattern_matches("swarm:s1:flee", "swarm:s1:fleet"));
        assert!(!pattern_matches("swarm:s1:fleet", ""));
    }

    #[test]
    fn star_matches_any_run_including_colons_and_nothing() {
        assert!(pattern_matches("swarm:s1:*", "swarm:s1:agent:a"));
        assert!(pattern_matches("swarm:s1:*", "swarm:s1:"));
        assert!(!pattern_matches("swarm:s1:*", "swarm:s2:fleet"));
        assert!(!pattern_matches("swarm:s1:*", "swarm:s1"));
        assert!(pattern_matches("*", ""));
        assert!(pattern_matches("*", "anything:at:all"));
        assert!(pattern_matches("swarm:*:fleet", "swarm:s1:fleet"));
        assert!(pattern_matches("swarm:*:fleet", "swarm:a:b:fleet"));
        assert!(!pattern_matches("swarm:*:fleet", "swarm:s1:fleets"));
        assert!(pattern_matches("*:agent:*", "swarm:s:agent:a"));
        assert!(pattern_matches("a*b*c", "abc"));
        assert!(pattern_matches("a*b*c", "aXbYbZc"));
        assert!(!pattern_matches("a*b*c", "aXbYbZ"));
        assert!(pattern_matches("**", "x"));
        assert!(pattern_matches("*ab", "aab"));
    }

    #[test]
    fn topics_are_classified_and_unsupported_globs_refused() {
        assert_eq!(
            Topic::parse("swarm:s:fleet"),
            Ok(Topic::Exact("swarm:s:fleet".into()))
        );
        assert_eq!(
            Topic::parse("swarm:s:*"),
            Ok(Topic::Pattern("swarm:s:*".into()))
        );
        for bad in ["", "swarm:?", "swarm:[ab]", "swarm:]", "swarm:\\*"] {
            assert!(
                matches!(Topic::parse(bad), Err(BusError::InvalidPattern { .. })),
                "{bad:?} should be refused"
            );
        }
        for bad in ["", "a*", "a?", "a[b]", "a\\b"] {
            assert!(
                matches!(check_channel(bad), Err(BusError::InvalidChannel { .. })),
                "{bad:?} should be refused"
            );
        }
        assert_eq!(check_channel("swarm:s:agent:a"), Ok(()));
    }

    /// The obvious exponential definition, to check the iterative matcher against.
    fn reference(p: &[u8], c: &[u8]) -> bool {
        match p.split_first() {
            None => c.is_empty(),
            Some((b'*', rest)) => (0..=c.len()).any(|skip| reference(rest, &c[skip..])),
            Some((&first, rest)) => c.first() == Some(&first) && reference(rest, &c[1..]),
        }
    }

    proptest! {
        #[test]
        fn matches_the_reference_definition(
            pattern in "[ab:*]{0,8}",
            channel in "[ab:]{0,10}",
        ) {
            prop_assert_eq!(
                pattern_matches(&pattern, &channel),
                reference(pattern.as_bytes(), channel.as_bytes())
            );
        }
    }
}
