//! What the filter decides, as plain functions of the configuration, the payload and the headers.
//!
//! Nothing here touches the generated bindings, so `cargo test -p route-by-field` runs these
//! rules natively; `lib.rs` only reads the configuration and turns a [`Decision`] into a `Route`.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

/// Header added to every redirected message, naming this plugin.
pub const ROUTED_BY: &str = "routed-by";
/// Header added to every redirected message, holding the field's value.
pub const ROUTE_FIELD: &str = "route-field";

/// Longest field value used as (the end of) a queue name.
const MAX_WORD_LEN: usize = 64;
/// Longest prefix: with the longest word it stays within the host's 128-character queue names.
const MAX_PREFIX_LEN: usize = 64;

/// The plugin's configuration, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The top-level JSON field whose value names the destination.
    pub field: String,
    /// Put in front of the field's value to make the queue name.
    pub prefix: String,
    /// Messages carrying this header (name compared ASCII case-insensitively) with exactly
    /// `drop_value` are dropped. Empty: nothing is dropped.
    pub drop_header: String,
    pub drop_value: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            field: "region".to_owned(),
            prefix: String::new(),
            drop_header: "x-test".to_owned(),
            drop_value: "true".to_owned(),
        }
    }
}

impl Settings {
    /// Reads the configuration through `get` (the host's `config(key)`), with defaults for the
    /// keys that are not set. An error names the key and why its value cannot work.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Settings, String> {
        let defaults = Settings::default();
        let settings = Settings {
            field: get("field").unwrap_or(defaults.field),
            prefix: get("prefix").unwrap_or(defaults.prefix),
            drop_header: get("drop_header").unwrap_or(defaults.drop_header),
            drop_value: get("drop_value").unwrap_or(defaults.drop_value),
        };
        if settings.field.is_empty() {
            return Err("config `field` is empty: name the JSON field to route by".to_owned());
        }
        let prefix_ok = settings.prefix.len() <= MAX_PREFIX_LEN
            && settings
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !prefix_ok {
            return Err(format!(
                "config `prefix` {:?} cannot start a queue name: use at most {MAX_PREFIX_LEN} \
                 characters from A-Z a-z 0-9 . _ -",
                settings.prefix
            ));
        }
        Ok(settings)
    }
}

/// Where one message goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// To the route's own queue, unchanged.
    Own,
    /// Nowhere: it is test traffic.
    Drop,
    /// To `queue`, because the payload's field holds `value`.
    Redirect { queue: String, value: String },
}

/// Decides where a message goes. Never fails: a payload that is not JSON, not an object, or
/// whose field is missing, not a string or not a usable queue-name word goes to the route's own
/// queue, so user data can neither trap the filter nor lose the message.
pub fn decide(settings: &Settings, payload: &[u8], headers: &[(String, String)]) -> Decision {
    let is_test = !settings.drop_header.is_empty()
        && headers.iter().any(|(name, value)| {
            name.eq_ignore_ascii_case(&settings.drop_header) && *value == settings.drop_value
        });
    if is_test {
        return Decision::Drop;
    }
    match string_field(payload, &settings.field) {
        Some(value) if is_queue_word(&value) => Decision::Redirect {
            queue: format!("{}{value}", settings.prefix),
            value,
        },
        _ => Decision::Own,
    }
}

/// The headers of a redirected message: the original ones plus `routed-by` and `route-field`.
/// Copies of those two that the publisher sent are removed first, so a reader of the headers
/// cannot mistake a publisher's claim for this filter's decision.
pub fn enrich(mut headers: Vec<(String, String)>, value: &str) -> Vec<(String, String)> {
    headers.retain(|(name, _)| {
        !name.eq_ignore_ascii_case(ROUTED_BY) && !name.eq_ignore_ascii_case(ROUTE_FIELD)
    });
    headers.push((ROUTED_BY.to_owned(), "route-by-field".to_owned()));
    headers.push((ROUTE_FIELD.to_owned(), value.to_owned()));
    headers
}

/// 1 to 64 characters from `A-Z a-z 0-9 _ -`: safe to append to any valid prefix. Dots are left
/// out on purpose, so a payload cannot make up names like `.` or `..`.
fn is_queue_word(s: &str) -> bool {
    (1..=MAX_WORD_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// The string value of the top-level `field` of a JSON object payload; `None` if the payload is
/// not a JSON object, lacks the field, or the field is not a string. With a duplicated key the
/// last one counts, as in most JSON parsers.
///
/// The payload is read as a stream: other fields are skipped without being built in memory, so a
/// large payload costs no more memory than a small one (building a `serde_json::Value` of a
/// 1 MB payload can take many MB, and running out of memory would trap the filter).
fn string_field(payload: &[u8], field: &str) -> Option<String> {
    let mut json = serde_json::Deserializer::from_slice(payload);
    let value = FieldOf(field).deserialize(&mut json).ok()?;
    json.end().ok()?;
    value
}

/// Reads a JSON object, keeping only the string value of one field.
struct FieldOf<'f>(&'f str);

impl<'de> DeserializeSeed<'de> for FieldOf<'_> {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FieldOf<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(is_field) = map.next_key_seed(KeyIs(self.0))? {
            if is_field {
                found = map.next_value::<StringOrSkip>()?.0;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Compares an object key with the field name without allocating it.
struct KeyIs<'f>(&'f str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

/// Any JSON value: a string is kept, anything else is skipped.
struct StringOrSkip(Option<String>);

impl<'de> de::Deserialize<'de> for StringOrSkip {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StringOrSkipVisitor)
    }
}

struct StringOrSkipVisitor;

impl<'de> Visitor<'de> for StringOrSkipVisitor {
    type Value = StringOrSkip;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<StringOrSkip, E> {
        Ok(StringOrSkip(Some(s.to_owned())))
    }

    // Everything else a JSON document can hold is skipped (nested values without being built).
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<StringOrSkip, E> {
        Ok(StringOrSkip(None))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<StringOrSkip, E> {
        Ok(StringOrSkip(None))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<StringOrSkip, E> {
        Ok(StringOrSkip(None))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<StringOrSkip, E> {
        Ok(StringOrSkip(None))
    }
    fn visit_unit<E: de::Error>(self) -> Result<StringOrSkip, E> {
        Ok(StringOrSkip(None))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<StringOrSkip, A::Error> {
        IgnoredAny.visit_seq(seq).map(|_| StringOrSkip(None))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<StringOrSkip, A::Error> {
        IgnoredAny.visit_map(map).map(|_| StringOrSkip(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn decide_default(payload: &str, hdrs: &[(&str, &str)]) -> Decision {
        decide(&Settings::default(), payload.as_bytes(), &headers(hdrs))
    }

    fn redirect(queue: &str, value: &str) -> Decision {
        Decision::Redirect {
            queue: queue.to_owned(),
            value: value.to_owned(),
        }
    }

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, String> {
        Settings::from_lookup(|key| {
            pairs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn a_string_field_redirects_to_the_queue_it_names() {
        assert_eq!(
            decide_default(r#"{"id":7,"region":"eu-west"}"#, &[]),
            redirect("eu-west", "eu-west")
        );
    }

    #[test]
    fn the_prefix_goes_in_front_of_the_value() {
        let s = settings(&[("field", "tenant"), ("prefix", "orders.")]).unwrap();
        assert_eq!(
            decide(&s, br#"{"tenant":"acme_1"}"#, &[]),
            redirect("orders.acme_1", "acme_1")
        );
    }

    #[test]
    fn test_traffic_is_dropped_before_the_payload_is_read() {
        assert_eq!(
            decide_default(r#"{"region":"eu"}"#, &[("X-Test", "true")]),
            Decision::Drop
        );
        assert_eq!(
            decide_default("not json", &[("x-test", "true")]),
            Decision::Drop
        );
        // Only the configured value counts.
        assert_eq!(
            decide_default(r#"{"region":"eu"}"#, &[("x-test", "false")]),
            redirect("eu", "eu")
        );
    }

    #[test]
    fn the_drop_header_and_value_are_configurable_and_can_be_switched_off() {
        let s = settings(&[("drop_header", "env"), ("drop_value", "staging")]).unwrap();
        assert_eq!(
            decide(&s, b"{}", &headers(&[("env", "staging")])),
            Decision::Drop
        );
        assert_eq!(
            decide(&s, b"{}", &headers(&[("x-test", "true")])),
            Decision::Own
        );

        let off = settings(&[("drop_header", "")]).unwrap();
        assert_eq!(
            decide(&off, b"{}", &headers(&[("x-test", "true")])),
            Decision::Own
        );
    }

    #[test]
    fn anything_but_a_usable_string_field_stays_on_the_routes_queue() {
        for payload in [
            "",
            "not json",
            "\u{0}\u{1}",
            r#"{"region":"eu""#,           // truncated
            r#"{"region":"eu"} trailing"#, // not one JSON document
            r#"["region","eu"]"#,          // not an object
            r#""eu""#,                     // a bare string
            r#"{}"#,                       // no field
            r#"{"Region":"eu"}"#,          // field names are case-sensitive
            r#"{"region":null}"#,
            r#"{"region":42}"#,
            r#"{"region":["eu"]}"#,
            r#"{"region":{"name":"eu"}}"#,
            r#"{"region":""}"#,        // empty
            r#"{"region":"eu west"}"#, // not a queue-name word
            r#"{"region":"../admin"}"#,
            r#"{"region":"eu.west"}"#, // dots are not allowed in the word
            r#"{"meta":{"region":"eu"}}"#, // only top-level fields count
        ] {
            assert_eq!(
                decide_default(payload, &[]),
                Decision::Own,
                "payload {payload:?}"
            );
        }
        let long = format!(r#"{{"region":"{}"}}"#, "a".repeat(65));
        assert_eq!(decide_default(&long, &[]), Decision::Own);
        let longest = "a".repeat(64);
        assert_eq!(
            decide_default(&format!(r#"{{"region":"{longest}"}}"#), &[]),
            redirect(&longest, &longest)
        );
    }

    #[test]
    fn other_fields_of_any_shape_are_skipped() {
        let payload = r#"{"items":[1,{"region":"no"},[true,null]],"n":-1.5e3,"region":"us"}"#;
        assert_eq!(decide_default(payload, &[]), redirect("us", "us"));
    }

    #[test]
    fn escaped_strings_are_read_as_their_value() {
        assert_eq!(
            decide_default(r#"{"re\u0067ion":"e\u0075"}"#, &[]),
            redirect("eu", "eu")
        );
    }

    #[test]
    fn with_a_duplicated_field_the_last_one_counts() {
        assert_eq!(
            decide_default(r#"{"region":"eu","region":"us"}"#, &[]),
            redirect("us", "us")
        );
        assert_eq!(
            decide_default(r#"{"region":"eu","region":7}"#, &[]),
            Decision::Own
        );
    }

    #[test]
    fn deeply_nested_values_are_skipped_without_deep_recursion() {
        // serde_json skips ignored values with a loop, not recursion, so nesting cannot overflow
        // the guest's stack — neither beside the field nor in it.
        let (open, close) = ("[".repeat(100_000), "]".repeat(100_000));
        let beside = format!(r#"{{"x":{open}1{close},"region":"eu"}}"#);
        assert_eq!(decide_default(&beside, &[]), redirect("eu", "eu"));
        let inside = format!(r#"{{"region":{open}"eu"{close}}}"#);
        assert_eq!(decide_default(&inside, &[]), Decision::Own);
    }

    #[test]
    fn enriching_adds_the_two_headers_once() {
        let out = enrich(
            headers(&[
                ("trace", "abc"),
                ("Route-Field", "forged"),
                ("routed-by", "x"),
            ]),
            "eu",
        );
        assert_eq!(
            out,
            headers(&[
                ("trace", "abc"),
                ("routed-by", "route-by-field"),
                ("route-field", "eu")
            ])
        );
    }

    #[test]
    fn defaults_apply_to_unset_keys() {
        assert_eq!(settings(&[]).unwrap(), Settings::default());
    }

    #[test]
    fn a_configuration_that_cannot_work_is_an_error_naming_the_key() {
        assert!(settings(&[("field", "")]).unwrap_err().contains("`field`"));
        assert!(
            settings(&[("prefix", "a/b")])
                .unwrap_err()
                .contains("`prefix`")
        );
        assert!(
            settings(&[("prefix", &"p".repeat(65))])
                .unwrap_err()
                .contains("`prefix`")
        );
    }
}
