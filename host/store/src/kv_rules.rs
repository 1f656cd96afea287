//! What a plugin's key-value entries may be, checked the same way by both backends.

use spool_model::validate_name;

use crate::{StoreError, StoreResult};

/// Longest key, in bytes.
pub const MAX_KV_KEY: usize = 256;
/// Largest value, in bytes.
pub const MAX_KV_VALUE: usize = 64 * 1024;

/// Checks a plugin name, a key and (for a set) a value before anything is written.
pub fn validate_kv(plugin: &str, key: &str, value: Option<&[u8]>) -> StoreResult<()> {
    validate_name("plugin", plugin).map_err(StoreError::Invalid)?;
    if key.is_empty() || key.len() > MAX_KV_KEY {
        return Err(StoreError::Invalid(format!(
            "plugin {plugin:?}: key-value keys must be 1 to {MAX_KV_KEY} bytes, got {}",
            key.len()
        )));
    }
    if let Some(v) = value
        && v.len() > MAX_KV_VALUE
    {
        return Err(StoreError::Invalid(format!(
            "plugin {plugin:?}: key-value values must be at most {MAX_KV_VALUE} bytes, got {}",
            v.len()
        )));
    }
    Ok(())
}
