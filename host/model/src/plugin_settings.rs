//! A plugin's settings kept in the store: configuration values, write-only secrets and the
//! capabilities granted to it. All versions of a plugin share them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Longest configuration key.
pub const MAX_CONFIG_KEY: usize = 256;
/// Longest configuration value or secret.
pub const MAX_CONFIG_VALUE: usize = 16 * 1024;
/// Most keys (values and secrets together) one plugin may have.
pub const MAX_CONFIG_KEYS: usize = 256;
/// Most entries in `allowed_outbound_hosts`.
pub const MAX_OUTBOUND_HOSTS: usize = 64;

/// What the store holds for one plugin. `Debug` never prints secret values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PluginSettings {
    pub values: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, String>,
    pub grants: PluginGrants,
}

impl std::fmt::Debug for PluginSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginSettings")
            .field("values", &self.values)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("grants", &self.grants)
            .finish()
    }
}

/// Capabilities granted to a plugin; `None` means "not set here" (spool.toml's value, or the
/// default, applies).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginGrants {
    /// `scheme://host[:port]` patterns the plugin may send HTTP requests to (Spin syntax).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = json!(["http://127.0.0.1:8080", "https://*.example.com"]))]
    pub allowed_outbound_hosts: Option<Vec<String>>,
    /// Most keys in the plugin's key-value store.
    #[serde(
        default,
        deserialize_with = "crate::whole::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 0, maximum = 9_223_372_036_854_775_807_u64)]
    pub kv_max_keys: Option<u64>,
    /// Most bytes (keys plus values) in the plugin's key-value store.
    #[serde(
        default,
        deserialize_with = "crate::whole::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 0, maximum = 9_223_372_036_854_775_807_u64)]
    pub kv_max_bytes: Option<u64>,
}

impl PluginGrants {
    /// `self` with each field that `over` sets replaced by `over`'s.
    pub fn overridden_by(&self, over: &PluginGrants) -> PluginGrants {
        PluginGrants {
            allowed_outbound_hosts: over
                .allowed_outbound_hosts
                .clone()
                .or_else(|| self.allowed_outbound_hosts.clone()),
            kv_max_keys: over.kv_max_keys.or(self.kv_max_keys),
            kv_max_bytes: over.kv_max_bytes.or(self.kv_max_bytes),
        }
    }
}

/// One change to a plugin's configuration: set `key` (as a value or a secret), or remove it
/// (`value: None`), whichever kind it was.
#[derive(Clone, PartialEq, Eq)]
pub struct ConfigChange {
    pub key: String,
    pub value: Option<String>,
    pub secret: bool,
}

impl std::fmt::Debug for ConfigChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value = match (&self.value, self.secret) {
            (None, _) => "<remove>",
            (Some(_), true) => "<secret>",
            (Some(v), false) => v.as_str(),
        };
        write!(f, "{}={value}", self.key)
    }
}

/// Checks a configuration key (the message names it, never a value).
pub fn validate_config_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_CONFIG_KEY {
        return Err(format!(
            "configuration keys must be 1 to {MAX_CONFIG_KEY} bytes, got {}",
            key.len()
        ));
    }
    if key.chars().any(char::is_control) {
        return Err(format!(
            "configuration key {key:?} contains control characters"
        ));
    }
    Ok(())
}

/// Checks a change before it is stored. Messages name the key, never the value.
pub fn validate_config_change(change: &ConfigChange) -> Result<(), String> {
    validate_config_key(&change.key)?;
    if let Some(v) = &change.value
        && v.len() > MAX_CONFIG_VALUE
    {
        let what = if change.secret { "secret" } else { "value" };
        return Err(format!(
            "the {what} of {:?} is {} bytes, over the limit of {MAX_CONFIG_VALUE}",
            change.key,
            v.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secrets() {
        let s = PluginSettings {
            secrets: BTreeMap::from([("api_key".into(), "hunter2".into())]),
            ..PluginSettings::default()
        };
        let shown = format!("{s:?}");
        assert!(
            shown.contains("api_key") && !shown.contains("hunter2"),
            "{shown}"
        );
        let c = ConfigChange {
            key: "api_key".into(),
            value: Some("hunter2".into()),
            secret: true,
        };
        assert_eq!(format!("{c:?}"), "api_key=<secret>");
    }

    #[test]
    fn grants_override_field_by_field() {
        let base = PluginGrants {
            allowed_outbound_hosts: Some(vec!["http://a".into()]),
            kv_max_keys: Some(5),
            kv_max_bytes: None,
        };
        let over = PluginGrants {
            kv_max_bytes: Some(9),
            ..PluginGrants::default()
        };
        let merged = base.overridden_by(&over);
        assert_eq!(merged.allowed_outbound_hosts, Some(vec!["http://a".into()]));
        assert_eq!(
            (merged.kv_max_keys, merged.kv_max_bytes),
            (Some(5), Some(9))
        );
    }

    #[test]
    fn changes_are_bounded_without_echoing_values() {
        let big = ConfigChange {
            key: "k".into(),
            value: Some("s".repeat(MAX_CONFIG_VALUE + 1)),
            secret: true,
        };
        let err = validate_config_change(&big).unwrap_err();
        assert!(
            err.contains("secret of \"k\"") && !err.contains("sss"),
            "{err}"
        );
        assert!(validate_config_key("").is_err());
        assert!(validate_config_key("a\nb").is_err());
    }
}
