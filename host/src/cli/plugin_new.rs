//! `spool plugin new NAME --lang rust|python|js`: writes a plugin project that builds with only
//! the `spool` binary and that language's toolchain.
//!
//! Everything a project needs from this repository — the WIT contract and the guest SDK of its
//! language — is compiled into the binary with `include_str!` and written into the project, so a
//! project never points back at a Spool checkout. The tool versions written into projects are the
//! ones `scripts/build.sh` builds and tests the repository's plugins with (a unit test below
//! keeps them in step).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

/// The contract, as the host was built with it.
pub const WIT: &str = include_str!("../../../wit/spool.wit");
const RUST_SDK: &str = include_str!("../../../guest-sdk/src/lib.rs");
const PYTHON_SDK: &str = include_str!("../../../guest-sdk/python/spool.py");
const PYTHON_REQUIREMENTS: &str = include_str!("../../../guest-sdk/python/requirements.txt");
const JS_SDK: &str = include_str!("../../../guest-sdk/js/spool.js");
const JS_BUILD_SCRIPT: &str = include_str!("../../../scripts/componentize.mjs");

/// Pinned like in `scripts/build.sh`: a new version changes a component's size and fuel use.
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";
pub const COMPONENTIZE_JS_VERSION: &str = "0.23.0";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum World {
    Handler,
    Filter,
}

impl World {
    pub fn name(self) -> &'static str {
        match self {
            World::Handler => "handler",
            World::Filter => "filter",
        }
    }
}

#[derive(Debug, Args)]
pub struct PluginNewArgs {
    /// The plugin's name, also its directory: a letter, then letters, digits, - or _.
    pub name: String,
    /// The language to write it in.
    #[arg(long, value_enum)]
    pub lang: Lang,
    /// What it is: a queue's handler or a route's filter.
    #[arg(long, value_enum, default_value_t = World::Handler)]
    pub world: World,
    /// Where to create the project [default: ./NAME].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub fn run(args: PluginNewArgs) -> anyhow::Result<()> {
    check_name(&args.name)?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    // Never mix a template into an existing project: a stray file would make the build
    // detection (Cargo.toml / app.py / package.json) ambiguous, and user code could be lost.
    if dir.exists() {
        bail!(
            "{} already exists: choose another NAME or --dir",
            dir.display()
        );
    }
    let files = project_files(&args.name, args.lang, args.world);
    for (path, contents) in &files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!(
        "created {} {} {} in {}",
        lang_label(args.lang),
        args.world.name(),
        args.name,
        dir.display()
    );
    println!("next:");
    println!("  spool plugin build {}", dir.display());
    println!(
        "  spool plugin run \"$(spool plugin build {})\" --payload \"$(cat {})\"",
        dir.display(),
        dir.join("sample.json").display()
    );
    println!("see {} for deploying it", dir.join("README.md").display());
    Ok(())
}

fn lang_label(lang: Lang) -> &'static str {
    match lang {
        Lang::Rust => "Rust",
        Lang::Python => "Python",
        Lang::Js => "JavaScript",
    }
}

/// A name that is at once a valid plugin name, crate name, npm package name and file name.
fn check_name(name: &str) -> anyhow::Result<()> {
    let mut chars = name.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !starts_with_letter || !rest_ok || name.len() > 64 {
        bail!(
            "invalid plugin name {name:?}: use a lowercase letter, then lowercase letters, digits, \
             - or _ (at most 64), e.g. order-handler"
        );
    }
    Ok(())
}

/// The project's files, relative to its directory.
fn project_files(name: &str, lang: Lang, world: World) -> Vec<(PathBuf, String)> {
    let mut files: Vec<(&str, String)> = vec![
        ("wit/spool.wit", WIT.to_owned()),
        ("sample.json", SAMPLE.to_owned()),
        ("README.md", readme(name, lang, world)),
    ];
    let fill = |template: &str| template.replace("{{name}}", name);
    match lang {
        Lang::Rust => {
            files.push(("Cargo.toml", fill(RUST_MANIFEST)));
            files.push(("spool-guest/Cargo.toml", RUST_SDK_MANIFEST.to_owned()));
            files.push(("spool-guest/src/lib.rs", RUST_SDK.to_owned()));
            let source = match world {
                World::Handler => RUST_HANDLER,
                World::Filter => RUST_FILTER,
            };
            files.push(("src/lib.rs", fill(source)));
            files.push((".gitignore", "/target\n".to_owned()));
        }
        Lang::Python => {
            let source = match world {
                World::Handler => PYTHON_HANDLER,
                World::Filter => PYTHON_FILTER,
            };
            files.push(("app.py", fill(source)));
            files.push(("spool.py", PYTHON_SDK.to_owned()));
            files.push(("requirements.txt", PYTHON_REQUIREMENTS.to_owned()));
            files.push((".gitignore", "/target\n__pycache__/\n.venv/\n".to_owned()));
        }
        Lang::Js => {
            let (file, source) = match world {
                World::Handler => ("handler.js", JS_HANDLER),
                World::Filter => ("filter.js", JS_FILTER),
            };
            files.push((file, fill(source)));
            files.push(("spool.js", JS_SDK.to_owned()));
            files.push(("componentize.mjs", JS_BUILD_SCRIPT.to_owned()));
            files.push(("package.json", js_manifest(name, file, world)));
            files.push((".gitignore", "/target\nnode_modules/\n".to_owned()));
        }
    }
    files
        .into_iter()
        .map(|(path, contents)| (PathBuf::from(path), contents))
        .collect()
}

/// Where `spool plugin build` finds a Python or JavaScript project's component.
pub fn component_path(dir: &Path, name: &str) -> PathBuf {
    dir.join("target").join(format!("{name}.wasm"))
}

const SAMPLE: &str = "{\"order\": 1, \"amount_cents\": 1250}\n";

const RUST_MANIFEST: &str = r#"[package]
name = "{{name}}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# A cdylib built for wasm32-wasip2 is a component: no other tool is needed.
crate-type = ["cdylib"]

[dependencies]
# The Spool guest SDK, vendored by `spool plugin new` (it wraps wit-bindgen and wit/spool.wit).
spool-guest = { path = "spool-guest" }
serde = { version = "1", features = ["derive"] }
serde_json = "1"

[profile.release]
# A trivial handler is ~44 KB like this, 2.4 MB without.
opt-level = "s"
lto = true
strip = true

# A project of its own, even when created inside another Cargo workspace.
[workspace]
"#;

const RUST_SDK_MANIFEST: &str = r#"[package]
name = "spool-guest"
description = "Write Spool handler and filter plugins as plain Rust functions (vendored)"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
name = "spool_guest"

[dependencies]
wit-bindgen = "0.63"
serde = { version = "1", features = ["derive"] }
serde_json = "1"
"#;

const RUST_HANDLER: &str = r#"//! {{name}}: a Spool handler. `spool plugin build` compiles it; README.md says how to try and
//! deploy it.

use spool_guest::{Message, Outcome, log};

fn handle(msg: Message) -> Outcome {
    let body: serde_json::Value = match msg.json() {
        Ok(body) => body,
        // A payload that is not JSON will not become JSON on a retry.
        Err(e) => return Outcome::dead_letter(format!("not JSON: {e}")),
    };
    log::info(&format!("message {} (attempt {}): {body}", msg.id, msg.attempt));
    Outcome::Ack
}

spool_guest::handler!(handle);
"#;

const RUST_FILTER: &str = r#"//! {{name}}: a Spool routing filter. `spool plugin build` compiles it; README.md says how to
//! try and deploy it.

use spool_guest::{Message, Route};

fn route(msg: Message) -> Route {
    match msg.header("x-test") {
        // Test traffic goes nowhere.
        Some("true") => Route::Drop,
        // No queues: the route's own queue, unchanged.
        _ => Route::Deliver(Vec::new()),
    }
}

spool_guest::filter!(route);
"#;

const PYTHON_HANDLER: &str = r#""""{{name}}: a Spool handler. `spool plugin build` compiles it; README.md says how."""

import spool


@spool.handler
def handle(msg: spool.Message):
    try:
        body = msg.json()
    except ValueError as e:
        # A payload that is not JSON will not become JSON on a retry.
        return spool.dead_letter(f"not JSON: {e}")
    spool.log.info(f"message {msg.id} (attempt {msg.attempt}): {body}")
    return spool.ack()
"#;

const PYTHON_FILTER: &str = r#""""{{name}}: a Spool routing filter. `spool plugin build` compiles it; README.md says how."""

import spool


@spool.filter
def route(msg: spool.Message):
    if msg.header("x-test") == "true":
        # Test traffic goes nowhere.
        return spool.drop()
    # No queues: the route's own queue, unchanged.
    return spool.deliver()
"#;

const JS_HANDLER: &str = r#"/**
 * {{name}}: a Spool handler. `spool plugin build` compiles it; README.md says how.
 */
import { handler, ack, deadLetter, log } from './spool.js';

export const handle = handler((msg) => {
  let body;
  try {
    body = msg.json();
  } catch (e) {
    // A payload that is not JSON will not become JSON on a retry.
    return deadLetter(`not JSON: ${e.message}`);
  }
  log.info(`message ${msg.id} (attempt ${msg.attempt}): ${JSON.stringify(body)}`);
  return ack();
});
"#;

const JS_FILTER: &str = r#"/**
 * {{name}}: a Spool routing filter. `spool plugin build` compiles it; README.md says how.
 */
import { filter, deliver, drop } from './spool.js';

export const route = filter((msg) => {
  // Test traffic goes nowhere.
  if (msg.header('x-test') === 'true') return drop();
  // No queues: the route's own queue, unchanged.
  return deliver();
});
"#;

fn js_manifest(name: &str, source: &str, world: World) -> String {
    // Written as text to keep npm's usual key order (serde_json would sort the keys).
    format!(
        r#"{{
  "name": "{name}",
  "version": "0.1.0",
  "private": true,
  "type": "module",
  "description": "A Spool {world} plugin",
  "scripts": {{
    "build": "node componentize.mjs {source} wit/spool.wit {world} target/{name}.wasm"
  }},
  "devDependencies": {{
    "@bytecodealliance/componentize-js": "{COMPONENTIZE_JS_VERSION}"
  }}
}}
"#,
        world = world.name()
    )
}

fn readme(name: &str, lang: Lang, world: World) -> String {
    let (source, toolchain, build_note) = match lang {
        Lang::Rust => (
            "src/lib.rs",
            "Rust with the wasm target: `rustup target add wasm32-wasip2`".to_owned(),
            "runs `cargo build --release --target wasm32-wasip2`; the SDK is the vendored \
             `spool-guest/` crate"
                .to_owned(),
        ),
        Lang::Python => (
            "app.py",
            format!(
                "Python 3 and componentize-py {COMPONENTIZE_PY_VERSION}: \
                 `python3 -m venv .venv && .venv/bin/pip install -r requirements.txt` \
                 (`spool plugin build` finds `.venv/bin/componentize-py`, or one on PATH)"
            ),
            format!(
                "runs `componentize-py -d wit/spool.wit -w {} componentize app -p . -o \
                 target/{name}.wasm`; the SDK is `spool.py`",
                world.name()
            ),
        ),
        Lang::Js => (
            if world == World::Handler {
                "handler.js"
            } else {
                "filter.js"
            },
            format!(
                "Node.js 18+ and npm; `npm install` fetches componentize-js \
                 {COMPONENTIZE_JS_VERSION} (`spool plugin build` does it when `node_modules` is \
                 missing)"
            ),
            "runs `npm run build` (componentize-js through `componentize.mjs`); the SDK is \
             `spool.js`"
                .to_owned(),
        ),
    };
    let deploy = match world {
        World::Handler => format!(
            "spool plugin deploy {name} \"$(spool plugin build .)\"\n\
             spool queue create {name}-jobs --handler {name}{limits}\n\
             spool enqueue {name}-jobs \"$(cat sample.json)\"",
            limits = match lang {
                Lang::Rust => String::new(),
                // Interpreters burn far more fuel per call than compiled code, and a warm
                // instance per worker saves ~1-3 ms of interpreter start-up per message.
                _ => " --fuel 200000000 --memory-mb 256 --instance-mode reuse".to_owned(),
            }
        ),
        World::Filter => format!(
            "spool plugin deploy {name} \"$(spool plugin build .)\"\n\
             spool route add 'orders.#' orders --filter {name}{limits}",
            limits = match lang {
                Lang::Rust => String::new(),
                _ => " --fuel 200000000 --timeout-ms 5000".to_owned(),
            }
        ),
    };
    format!(
        "# {name}\n\n\
         A Spool {world} plugin in {lang}, created by `spool plugin new`. The code is in \
         `{source}`; `wit/spool.wit` is the contract it implements (do not edit it: it is the \
         one the server speaks).\n\n\
         ## Build\n\n\
         Needs {toolchain}.\n\n\
         ```sh\nspool plugin build .\n```\n\n\
         It {build_note}. It prints the component's path as its last line.\n\n\
         ## Try it locally\n\n\
         No server needed: run it on one message and see its outcome, logs, publishes and \
         key-value calls.\n\n\
         ```sh\nspool plugin run \"$(spool plugin build .)\" --payload \"$(cat sample.json)\"\n```\n\n\
         ## Deploy\n\n\
         Against a running server (`SPOOL_SERVER`, default {server}):\n\n\
         ```sh\n{deploy}\n```\n\n\
         ## Upgrade and roll back\n\n\
         Each deploy is a new version, active at once. `spool plugin show {name}` lists the \
         versions and who activated which; `spool plugin rollback {name}` re-activates the one \
         before; `spool plugin activate {name} N` any version by number.\n",
        world = world.name(),
        lang = lang_label(lang),
        server = super::DEFAULT_SERVER,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_agree_with_the_repository_build() {
        // The wit-bindgen line the Rust SDK is written against.
        const WIT_BINDGEN_VERSION: &str = "0.63";
        let build = include_str!("../../../scripts/build.sh");
        assert!(build.contains(&format!(
            "COMPONENTIZE_PY_VERSION={COMPONENTIZE_PY_VERSION}\n"
        )));
        assert!(build.contains(&format!(
            "COMPONENTIZE_JS_VERSION={COMPONENTIZE_JS_VERSION}\n"
        )));
        assert!(
            PYTHON_REQUIREMENTS.contains(&format!("componentize-py=={COMPONENTIZE_PY_VERSION}"))
        );
        assert!(RUST_SDK_MANIFEST.contains(&format!("wit-bindgen = \"{WIT_BINDGEN_VERSION}\"")));
        let root = include_str!("../../../Cargo.toml");
        assert!(root.contains(&format!("wit-bindgen = \"{WIT_BINDGEN_VERSION}\"")));
    }

    #[test]
    fn names_must_suit_every_toolchain() {
        for good in ["orders", "order-handler", "a1_b"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "1abc", "Orders", "a b", "../x", "a/b", &"a".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn projects_are_self_contained() {
        for lang in [Lang::Rust, Lang::Python, Lang::Js] {
            for world in [World::Handler, World::Filter] {
                let files = project_files("demo", lang, world);
                let has = |p: &str| files.iter().any(|(path, _)| path == Path::new(p));
                assert!(has("wit/spool.wit") && has("README.md") && has("sample.json"));
                for (path, contents) in &files {
                    assert!(!contents.contains("{{name}}"), "{}", path.display());
                    // Nothing may point back into a Spool checkout.
                    assert!(!contents.contains("guest-sdk/"), "{}", path.display());
                }
            }
        }
    }
}
