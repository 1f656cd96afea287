//! `spool plugin config`: a plugin's configuration values, write-only secrets and grants on a
//! server (`/v1/plugins/{name}/config`).

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::{Map, Value, json};

use super::ClientOpts;
use super::client::seg;
use super::commands::{client, key_values};
use super::output::{cell, fields, json as print_json};

#[derive(Debug, Subcommand)]
pub enum PluginConfigCmd {
    /// Show a plugin's configuration: values, secret names (never their values) and grants
    ///
    /// Examples:
    ///
    ///   spool plugin config show fetch
    #[command(verbatim_doc_comment)]
    Show {
        /// The plugin (it need not be deployed yet).
        name: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Set configuration values and secrets; other keys stay as they are
    ///
    /// Every version of the plugin reads them through `config(key)` from its next call; they
    /// override spool.toml's [plugins.NAME.config]. Secrets are write-only: the server lists
    /// their names only. `--secret-env` reads a secret from an environment variable so that it
    /// stays out of shell history and process listings.
    ///
    /// Examples:
    ///
    ///   spool plugin config set fetch endpoint=http://127.0.0.1:8080/hook
    ///   API_KEY=... spool plugin config set fetch --secret-env api_key=API_KEY
    #[command(verbatim_doc_comment)]
    Set {
        /// The plugin.
        name: String,
        /// Plain values: KEY=VALUE.
        #[arg(value_name = "KEY=VALUE")]
        values: Vec<String>,
        /// A secret, repeatable: --secret KEY=VALUE (visible in shell history; prefer
        /// --secret-env).
        #[arg(long = "secret", value_name = "KEY=VALUE")]
        secrets: Vec<String>,
        /// A secret read from an environment variable, repeatable: --secret-env KEY=VARIABLE.
        #[arg(long = "secret-env", value_name = "KEY=VARIABLE")]
        secret_env: Vec<String>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Remove configuration keys (values or secrets)
    ///
    /// Examples:
    ///
    ///   spool plugin config unset fetch endpoint api_key
    #[command(verbatim_doc_comment)]
    Unset {
        /// The plugin.
        name: String,
        /// The keys to remove.
        #[arg(required = true)]
        keys: Vec<String>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Replace the capabilities granted to a plugin through the API
    ///
    /// Each flag given overrides spool.toml's [plugins.NAME] key of the same name; no flags
    /// remove the API's grants. A component importing wasi:http is refused at deploy unless
    /// it has allowed outbound hosts.
    ///
    /// Examples:
    ///
    ///   spool plugin config grant fetch --allow-outbound-host http://127.0.0.1:8080
    ///   spool plugin config grant fetch --allow-outbound-host 'https://*.example.com'
    #[command(verbatim_doc_comment)]
    Grant {
        /// The plugin.
        name: String,
        /// scheme://host[:port] the plugin may send HTTP requests to, repeatable.
        #[arg(long = "allow-outbound-host", value_name = "URL")]
        hosts: Vec<String>,
        /// Most keys in the plugin's key-value store.
        #[arg(long)]
        kv_max_keys: Option<u64>,
        /// Most bytes (keys plus values) in the plugin's key-value store.
        #[arg(long)]
        kv_max_bytes: Option<u64>,
        #[command(flatten)]
        client: ClientOpts,
    },
}

pub async fn run(cmd: PluginConfigCmd) -> anyhow::Result<()> {
    match cmd {
        PluginConfigCmd::Show { name, client: opts } => {
            let resp = client(&opts)?.get(&config_path(&name)).await?;
            show(&opts, &resp);
            Ok(())
        }
        PluginConfigCmd::Set {
            name,
            values,
            secrets,
            secret_env,
            client: opts,
        } => {
            let values = key_values("config", &values)?;
            let mut secrets = key_values("secret", &secrets)?;
            for item in &secret_env {
                let Some((key, var)) = item.split_once('=') else {
                    bail!("--secret-env {item:?} must look like KEY=VARIABLE");
                };
                // The error names the variable, never a value.
                let value = std::env::var(var)
                    .with_context(|| format!("--secret-env {key}: cannot read ${var}"))?;
                secrets.insert(key.to_owned(), Value::String(value));
            }
            if values.is_empty() && secrets.is_empty() {
                bail!("nothing to set: give KEY=VALUE, --secret KEY=VALUE or --secret-env");
            }
            let body = json!({"values": values, "secrets": secrets});
            let resp = client(&opts)?.put(&config_path(&name), &body).await?;
            show(&opts, &resp);
            Ok(())
        }
        PluginConfigCmd::Grant {
            name,
            hosts,
            kv_max_keys,
            kv_max_bytes,
            client: opts,
        } => {
            let mut body = Map::new();
            if !hosts.is_empty() {
                body.insert("allowed_outbound_hosts".into(), json!(hosts));
            }
            if let Some(n) = kv_max_keys {
                body.insert("kv_max_keys".into(), json!(n));
            }
            if let Some(n) = kv_max_bytes {
                body.insert("kv_max_bytes".into(), json!(n));
            }
            let resp = client(&opts)?
                .put(&grants_path(&name), &Value::Object(body))
                .await?;
            show(&opts, &resp);
            Ok(())
        }
        PluginConfigCmd::Unset {
            name,
            keys,
            client: opts,
        } => {
            // The server removes a key given as null whichever kind it is; sending it as a
            // value removes a secret of that name too.
            let values: Map<String, Value> = keys.into_iter().map(|k| (k, Value::Null)).collect();
            let resp = client(&opts)?
                .put(&config_path(&name), &json!({"values": values}))
                .await?;
            show(&opts, &resp);
            Ok(())
        }
    }
}

fn grants_path(name: &str) -> String {
    format!("/v1/plugins/{}/grants", seg(name))
}

fn config_path(name: &str) -> String {
    format!("/v1/plugins/{}/config", seg(name))
}

/// Prints the configuration: values (the API's over spool.toml's), then secret names.
fn show(opts: &ClientOpts, resp: &Value) {
    if opts.json {
        print_json(resp);
        return;
    }
    let mut pairs = vec![("plugin".to_owned(), cell(&resp["plugin"]))];
    let object = |v: &Value| v.as_object().cloned().unwrap_or_default();
    let file = object(&resp["file_values"]);
    let api = object(&resp["values"]);
    for (k, v) in &file {
        if !api.contains_key(k) {
            pairs.push((k.clone(), format!("{} (spool.toml)", cell(v))));
        }
    }
    for (k, v) in &api {
        pairs.push((k.clone(), cell(v)));
    }
    for k in resp["secrets"].as_array().into_iter().flatten() {
        pairs.push((cell(k), "(secret)".to_owned()));
    }
    let grants = &resp["grants"];
    let hosts: Vec<String> = grants["allowed_outbound_hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(cell)
        .collect();
    pairs.push((
        "allowed_outbound_hosts".into(),
        if hosts.is_empty() {
            "(none)".into()
        } else {
            hosts.join(", ")
        },
    ));
    for key in ["kv_max_keys", "kv_max_bytes"] {
        if !grants[key].is_null() {
            pairs.push((key.into(), cell(&grants[key])));
        }
    }
    fields(&pairs);
}
