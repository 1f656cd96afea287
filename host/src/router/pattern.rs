//! Topic patterns: dot-separated words where `*` stands for exactly one word and `#` for any
//! number of words, zero included (AMQP topic-exchange semantics).
//!
//! Topics and patterns share one set of rules so that any topic a publisher may use can be
//! written, word for word, as a pattern. Those rules are the queue-name rules of
//! [`crate::model::validate_name`] narrowed to what words need: a topic is also the name of the
//! queue it reaches when no route matches, so a valid topic is always a valid queue name.

use std::fmt;
use std::str::FromStr;

/// The longest topic or pattern, in bytes; the same as a queue name, so no valid topic is too
/// long to name its default queue, and no pattern is longer than the topics it could match.
pub const MAX_LEN: usize = 128;

/// The most words in a topic or pattern. Matching costs grow with words × pattern segments;
/// the bound keeps a hostile pattern from costing more than a few hundred steps per topic.
pub const MAX_WORDS: usize = 32;

/// What was being validated, so one error type serves both and says which one was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Pattern,
    Topic,
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Subject::Pattern => "pattern",
            Subject::Topic => "topic",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PatternError {
    #[error("{subject} is empty: write one or more words separated by dots, such as `orders.eu`")]
    Empty { subject: Subject },
    #[error(
        "{subject} {text:?} has an empty word (word {position}): separate words with single dots, \
         with no dot at the start or the end"
    )]
    EmptyWord {
        subject: Subject,
        text: String,
        /// 1-based, counting words as the dots split them.
        position: usize,
    },
    #[error(
        "pattern {text:?} has the word {word:?}, which mixes a wildcard with other characters: \
         `*` (exactly one word) and `#` (any number of words) only match whole words, so write \
         each as a word of its own, such as `orders.*` or `orders.#`"
    )]
    MixedWildcard { text: String, word: String },
    #[error(
        "topic {text:?} contains the wildcard {wildcard:?}: a topic names what a message is about; \
         `*` and `#` belong in route patterns"
    )]
    WildcardInTopic { text: String, wildcard: char },
    #[error(
        "{subject} {text:?} has the word {word:?} containing {ch:?}: words use only the \
         characters A-Z a-z 0-9 _ - (dots separate words)"
    )]
    InvalidChar {
        subject: Subject,
        text: String,
        word: String,
        ch: char,
    },
    #[error(
        "{subject} is {len} bytes long; the limit is {MAX_LEN} bytes (the same as a queue name)"
    )]
    TooLong { subject: Subject, len: usize },
    #[error("{subject} {text:?} has {words} words; the limit is {MAX_WORDS}")]
    TooManyWords {
        subject: Subject,
        text: String,
        words: usize,
    },
}

/// Checks a topic a message is published to: words of `[A-Za-z0-9_-]` joined by single dots.
pub fn validate_topic(topic: &str) -> Result<(), PatternError> {
    validate(Subject::Topic, topic)
}

fn validate(subject: Subject, text: &str) -> Result<(), PatternError> {
    if text.is_empty() {
        return Err(PatternError::Empty { subject });
    }
    if text.len() > MAX_LEN {
        return Err(PatternError::TooLong {
            subject,
            len: text.len(),
        });
    }
    let words = text.split('.').count();
    if words > MAX_WORDS {
        return Err(PatternError::TooManyWords {
            subject,
            text: text.to_owned(),
            words,
        });
    }
    for (i, word) in text.split('.').enumerate() {
        if word.is_empty() {
            return Err(PatternError::EmptyWord {
                subject,
                text: text.to_owned(),
                position: i + 1,
            });
        }
        if let Some(wildcard) = word.chars().find(|c| matches!(c, '*' | '#')) {
            match subject {
                Subject::Topic => {
                    return Err(PatternError::WildcardInTopic {
                        text: text.to_owned(),
                        wildcard,
                    });
                }
                Subject::Pattern if word.len() == 1 => continue,
                Subject::Pattern => {
                    return Err(PatternError::MixedWildcard {
                        text: text.to_owned(),
                        word: word.to_owned(),
                    });
                }
            }
        }
        if let Some(ch) = word
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-')))
        {
            return Err(PatternError::InvalidChar {
                subject,
                text: text.to_owned(),
                word: word.to_owned(),
                ch,
            });
        }
    }
    Ok(())
}

/// One word of a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment<'a> {
    /// Matches this exact word.
    Literal(&'a str),
    /// `*`: exactly one word.
    Star,
    /// `#`: zero or more words.
    Hash,
}

/// A validated topic pattern.
///
/// Kept as its text: a valid pattern has exactly one spelling (words joined by single dots),
/// so the text is already canonical and the segments are cheap to re-split when needed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pattern {
    text: Box<str>,
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        validate(Subject::Pattern, text)?;
        Ok(Pattern { text: text.into() })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn segments(&self) -> impl Iterator<Item = Segment<'_>> + Clone {
        self.text.split('.').map(|word| match word {
            "*" => Segment::Star,
            "#" => Segment::Hash,
            w => Segment::Literal(w),
        })
    }

    /// Whether `topic` matches. The obviously-correct reference that
    /// [`RouteIndex`](super::index::RouteIndex) is tested against; matching one topic against
    /// many patterns should go through the index instead.
    ///
    /// `topic` is taken to be valid ([`validate_topic`]); for an invalid one the answer is
    /// unspecified (but there is one, and no panic).
    pub fn matches(&self, topic: &str) -> bool {
        // Dynamic programming rather than backtracking, because backtracking over several `#`
        // is exponential: `reach[j]` says whether the segments seen so far can consume exactly
        // the first `j` words.
        let words: Vec<&str> = topic.split('.').collect();
        let mut reach = vec![false; words.len() + 1];
        reach[0] = true;
        for segment in self.segments() {
            let mut next = vec![false; words.len() + 1];
            for j in 0..=words.len() {
                next[j] = match segment {
                    Segment::Hash => reach[j] || (j > 0 && next[j - 1]),
                    Segment::Star => j > 0 && reach[j - 1],
                    Segment::Literal(w) => j > 0 && reach[j - 1] && words[j - 1] == w,
                };
            }
            reach = next;
        }
        reach[words.len()]
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Pattern {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Pattern::parse(s)
    }
}

impl serde::Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Pattern::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> PatternError {
        Pattern::parse(text).expect_err(text)
    }

    #[test]
    fn valid_patterns_round_trip_through_display() {
        for text in [
            "orders",
            "orders.#",
            "#",
            "#.#",
            "*.#",
            "a.#.#.b",
            "a.*.b",
            "Tenant_1.eu-west.*",
        ] {
            assert_eq!(Pattern::parse(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn each_mistake_gets_its_own_error() {
        assert_eq!(
            err(""),
            PatternError::Empty {
                subject: Subject::Pattern
            }
        );
        for (text, position) in [("a..b", 2), (".a", 1), ("a.", 2), (".", 1)] {
            assert!(
                matches!(err(text), PatternError::EmptyWord { position: p, .. } if p == position),
                "{text}"
            );
        }
        for text in ["a*", "#b", "a.**", "##", "x.*#"] {
            assert!(
                matches!(err(text), PatternError::MixedWildcard { .. }),
                "{text}"
            );
        }
        for (text, bad) in [("a/b", '/'), ("a b", ' '), ("é", 'é'), ("a.b:c", ':')] {
            assert!(
                matches!(err(text), PatternError::InvalidChar { ch, .. } if ch == bad),
                "{text}"
            );
        }
        assert!(matches!(
            err(&"x".repeat(MAX_LEN + 1)),
            PatternError::TooLong { len, .. } if len == MAX_LEN + 1
        ));
        assert!(Pattern::parse(&"x".repeat(MAX_LEN)).is_ok());
        let words = |n: usize| vec!["a"; n].join(".");
        assert!(Pattern::parse(&words(MAX_WORDS)).is_ok());
        assert!(matches!(
            err(&words(MAX_WORDS + 1)),
            PatternError::TooManyWords { words, .. } if words == MAX_WORDS + 1
        ));
    }

    #[test]
    fn messages_say_what_is_wrong_and_how_to_fix_it() {
        assert_eq!(
            err("orders..eu").to_string(),
            "pattern \"orders..eu\" has an empty word (word 2): separate words with single \
             dots, with no dot at the start or the end"
        );
        assert_eq!(
            err("orders.eu*").to_string(),
            "pattern \"orders.eu*\" has the word \"eu*\", which mixes a wildcard with other \
             characters: `*` (exactly one word) and `#` (any number of words) only match whole \
             words, so write each as a word of its own, such as `orders.*` or `orders.#`"
        );
        assert_eq!(
            validate_topic("orders.*").unwrap_err().to_string(),
            "topic \"orders.*\" contains the wildcard '*': a topic names what a message is \
             about; `*` and `#` belong in route patterns"
        );
    }

    #[test]
    fn topics_follow_the_same_word_rules_without_wildcards() {
        assert!(validate_topic("orders.eu-1.paid_x").is_ok());
        assert!(matches!(
            validate_topic("a..b"),
            Err(PatternError::EmptyWord {
                subject: Subject::Topic,
                ..
            })
        ));
        assert!(matches!(
            validate_topic("#"),
            Err(PatternError::WildcardInTopic { wildcard: '#', .. })
        ));
        assert!(matches!(
            validate_topic("a#"),
            Err(PatternError::WildcardInTopic { .. })
        ));
        assert!(validate_topic("").is_err());
    }

    #[test]
    fn every_valid_topic_is_a_valid_queue_name() {
        for topic in ["a", "orders.eu-1.paid_x", &"x".repeat(MAX_LEN)] {
            validate_topic(topic).unwrap();
            crate::model::validate_name("queue", topic).unwrap();
        }
    }

    #[test]
    fn serde_uses_the_text_and_validates_it() {
        let p = Pattern::parse("orders.*.paid").unwrap();
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, r#""orders.*.paid""#);
        assert_eq!(serde_json::from_str::<Pattern>(&json).unwrap(), p);
        let e = serde_json::from_str::<Pattern>(r#""a*""#).unwrap_err();
        assert!(e.to_string().contains("mixes a wildcard"), "{e}");
    }

    #[test]
    fn segments_classify_words() {
        let p = Pattern::parse("a.*.#").unwrap();
        assert_eq!(
            p.segments().collect::<Vec<_>>(),
            [Segment::Literal("a"), Segment::Star, Segment::Hash]
        );
    }
}
