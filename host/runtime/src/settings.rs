//! What a plugin declares about itself, carried in the component: a custom section named
//! `spool-settings` whose content is a JSON object, e.g. `{"instance_mode": "reuse"}`.
//!
//! A queue whose `instance_mode` is `plugin` (the default) follows what its handler declares,
//! so an interpreted plugin (Python, JavaScript) that costs a millisecond per fresh instance
//! can ask for warm instances without every queue having to know. `spool plugin build` writes
//! the section; any tool that can append a custom section can too. The top-level section is
//! read; when there are several, the last one counts (so appending overrides).

use serde::{Deserialize, Serialize};

use super::RuntimeError;
use spool_model::InstanceMode;

/// The custom section's name.
pub const SECTION: &str = "spool-settings";

/// A plugin's own defaults; every field is optional and queue settings override them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSettings {
    /// `fresh` or `reuse`: used by queues whose `instance_mode` is `plugin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_mode: Option<InstanceMode>,
}

impl PluginSettings {
    /// Reads the settings from a component's top-level `spool-settings` section (none: the
    /// defaults). A section that is not valid JSON of this shape is an error: a plugin that
    /// says something Spool cannot read should not silently run with other settings.
    pub fn read(wasm: &[u8]) -> Result<PluginSettings, RuntimeError> {
        let mut found = None;
        // `parse_all` walks nested modules and components inline; they have sections of their
        // own, and only the component's own top level speaks for the plugin.
        let mut depth = 0usize;
        for payload in wasmparser::Parser::new(0).parse_all(wasm) {
            match payload.map_err(|e| RuntimeError::InvalidComponent(e.to_string()))? {
                wasmparser::Payload::CustomSection(s) if depth == 0 && s.name() == SECTION => {
                    found = Some(s.data().to_vec());
                }
                wasmparser::Payload::ModuleSection { .. }
                | wasmparser::Payload::ComponentSection { .. } => depth += 1,
                wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        let Some(data) = found else {
            return Ok(PluginSettings::default());
        };
        let settings: PluginSettings = serde_json::from_slice(&data).map_err(|e| {
            RuntimeError::InvalidComponent(format!(
                "its `{SECTION}` section is not a JSON object like \
                 {{\"instance_mode\": \"reuse\"}}: {e}"
            ))
        })?;
        if settings.instance_mode == Some(InstanceMode::Plugin) {
            return Err(RuntimeError::InvalidComponent(format!(
                "its `{SECTION}` section asks for instance_mode \"plugin\"; a plugin declares \
                 \"fresh\" or \"reuse\""
            )));
        }
        Ok(settings)
    }

    /// Appends these settings to a component as a top-level `spool-settings` section, which
    /// then overrides any earlier one.
    pub fn append_to(&self, wasm: &mut Vec<u8>) {
        let data = serde_json::to_vec(self).expect("settings serialize");
        let mut content = Vec::with_capacity(SECTION.len() + data.len() + 5);
        leb128(&mut content, SECTION.len());
        content.extend_from_slice(SECTION.as_bytes());
        content.extend_from_slice(&data);
        wasm.push(0); // custom section id
        leb128(wasm, content.len());
        wasm.extend_from_slice(&content);
    }
}

fn leb128(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::plugin_wasm;

    #[test]
    fn a_component_without_the_section_has_defaults() {
        let wasm = plugin_wasm("echo");
        assert_eq!(
            PluginSettings::read(&wasm).unwrap(),
            PluginSettings::default()
        );
    }

    #[test]
    fn appended_settings_are_read_back_and_the_last_section_counts() {
        let mut wasm = plugin_wasm("echo");
        PluginSettings {
            instance_mode: Some(InstanceMode::Fresh),
        }
        .append_to(&mut wasm);
        let reuse = PluginSettings {
            instance_mode: Some(InstanceMode::Reuse),
        };
        reuse.append_to(&mut wasm);
        assert_eq!(PluginSettings::read(&wasm).unwrap(), reuse);
        // Still a component wasmparser accepts as a whole.
        wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
            .validate_all(&wasm)
            .unwrap();
    }

    #[test]
    fn unreadable_settings_are_refused_with_the_shape_expected() {
        for bad in [
            &b"not json"[..],
            br#"{"instance_mode":"warm"}"#,
            br#"{"x":1}"#,
        ] {
            let mut wasm = plugin_wasm("echo");
            let mut content = Vec::new();
            leb128(&mut content, SECTION.len());
            content.extend_from_slice(SECTION.as_bytes());
            content.extend_from_slice(bad);
            wasm.push(0);
            leb128(&mut wasm, content.len());
            wasm.extend_from_slice(&content);
            let err = PluginSettings::read(&wasm).unwrap_err().to_string();
            assert!(err.contains("spool-settings"), "{err}");
        }
        let mut wasm = plugin_wasm("echo");
        PluginSettings {
            instance_mode: Some(InstanceMode::Plugin),
        }
        .append_to(&mut wasm);
        assert!(PluginSettings::read(&wasm).is_err());
    }

    #[test]
    fn leb128_encodes_multi_byte_lengths() {
        let mut out = Vec::new();
        leb128(&mut out, 624_485);
        assert_eq!(out, [0xe5, 0x8e, 0x26]);
    }
}
