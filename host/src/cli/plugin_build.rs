//! `spool plugin build [DIR]`: builds a plugin project with its language's toolchain and prints
//! the component's path as the last line of stdout, so that
//! `spool plugin deploy NAME "$(spool plugin build DIR)"` works.
//!
//! The toolchain's own output is streamed to stderr (stdout carries only the path). The language
//! is told by the project's marker file: `Cargo.toml` (Rust), `app.py` (Python), `package.json`
//! (JavaScript) — the files `spool plugin new` writes.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use clap::Args;

use crate::model::InstanceMode;
use crate::runtime::PluginSettings;

use super::plugin_new::{COMPONENTIZE_JS_VERSION, COMPONENTIZE_PY_VERSION, World, component_path};

#[derive(Debug, Args)]
pub struct PluginBuildArgs {
    /// The project directory [default: the current directory].
    pub dir: Option<PathBuf>,
    /// The world a Python project implements [default: filter if app.py uses @spool.filter,
    /// else handler].
    #[arg(long, value_enum)]
    pub world: Option<World>,
    /// The instance mode the component declares for queues left at `instance_mode = plugin`
    /// (its `spool-settings` section) [default: reuse for Python and JavaScript, whose fresh
    /// instances cost about half a millisecond; nothing for Rust, which then runs fresh].
    #[arg(long, value_parser = ["fresh", "reuse"])]
    pub instance_mode: Option<String>,
    /// Run the toolchain even when the Python or JavaScript component is newer than every
    /// file of the project (cargo decides that for Rust itself).
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: PluginBuildArgs) -> anyhow::Result<()> {
    let dir = args.dir.unwrap_or_else(|| PathBuf::from("."));
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    let (wasm, interpreted) = if dir.join("Cargo.toml").is_file() {
        (build_rust(&dir)?, false)
    } else if dir.join("app.py").is_file() {
        (build_python(&dir, args.world, args.force)?, true)
    } else if dir.join("package.json").is_file() {
        (build_js(&dir, args.force)?, true)
    } else {
        bail!(
            "{} has no Cargo.toml, app.py or package.json: not a plugin project \
             (create one with `spool plugin new NAME --lang rust|python|js`)",
            dir.display()
        );
    };
    let mode = match args.instance_mode.as_deref() {
        Some("fresh") => Some(InstanceMode::Fresh),
        Some(_) => Some(InstanceMode::Reuse),
        None if interpreted => Some(InstanceMode::Reuse),
        None => None,
    };
    if let Some(mode) = mode {
        declare_instance_mode(&wasm, mode)?;
    }
    println!("{}", wasm.display());
    Ok(())
}

/// Writes the component's default instance mode into its `spool-settings` section, unless it
/// declares that mode already: a build that changed nothing must leave the same bytes, or the
/// next deploy would store a new version of the same code.
fn declare_instance_mode(wasm: &Path, mode: InstanceMode) -> anyhow::Result<()> {
    let mut bytes =
        std::fs::read(wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
    if PluginSettings::read(&bytes).is_ok_and(|s| s.instance_mode == Some(mode)) {
        return Ok(());
    }
    PluginSettings {
        instance_mode: Some(mode),
    }
    .append_to(&mut bytes);
    std::fs::write(wasm, &bytes).with_context(|| format!("cannot write {}", wasm.display()))?;
    eprintln!(
        "==> declared instance_mode {} (queues left at `instance_mode = plugin` follow it)",
        serde_json::to_value(mode).unwrap_or_default()
    );
    Ok(())
}

fn build_rust(dir: &Path) -> anyhow::Result<PathBuf> {
    require(
        "cargo",
        "install Rust from https://rustup.rs, then `rustup target add wasm32-wasip2`",
    )?;
    // Without the target cargo fails with a long error about `core`; say the one command.
    if find_on_path("rustup").is_some() {
        let installed = Command::new("rustup")
            .args(["target", "list", "--installed"])
            .stderr(Stdio::null())
            .output()
            .context("cannot run rustup")?;
        let listed = String::from_utf8_lossy(&installed.stdout);
        if !listed.lines().any(|l| l.trim() == "wasm32-wasip2") {
            bail!("the wasm32-wasip2 target is missing: run `rustup target add wasm32-wasip2`");
        }
    }
    // cargo's JSON messages name the artifacts wherever CARGO_TARGET_DIR or a config puts them;
    // its human-readable diagnostics and progress still go to stderr.
    let output = Command::new("cargo")
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo")?;
    if !output.status.success() {
        bail!("cargo build failed ({})", output.status);
    }
    let artifacts = String::from_utf8_lossy(&output.stdout);
    wasm_artifact(&artifacts).with_context(|| {
        format!(
            "cargo built no .wasm in {}: is `crate-type = [\"cdylib\"]` in its [lib]?",
            dir.display()
        )
    })
}

/// The last `.wasm` file a `cargo build --message-format=json` run reported.
fn wasm_artifact(messages: &str) -> Option<PathBuf> {
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .flat_map(|m| {
            m["filenames"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|f| f.as_str().map(PathBuf::from))
        })
        .rfind(|f| f.extension() == Some(OsStr::new("wasm")))
}

/// Whether `wasm` is newer than every file of the project `dir` (its own build outputs,
/// dependencies and caches aside), so building again would make the same component.
fn up_to_date(dir: &Path, wasm: &Path) -> bool {
    const SKIP: [&str; 5] = ["target", "node_modules", ".venv", "__pycache__", ".git"];
    fn newest(dir: &Path, top: bool) -> Option<std::time::SystemTime> {
        let mut latest = std::time::SystemTime::UNIX_EPOCH;
        for entry in std::fs::read_dir(dir).ok()? {
            let entry = entry.ok()?;
            let meta = entry.metadata().ok()?;
            let time = if meta.is_dir() {
                if top && SKIP.iter().any(|s| entry.file_name() == *s) {
                    continue;
                }
                newest(&entry.path(), false)?
            } else {
                meta.modified().ok()?
            };
            latest = latest.max(time);
        }
        Some(latest)
    }
    let Ok(built) = wasm.metadata().and_then(|m| m.modified()) else {
        return false;
    };
    newest(dir, true).is_some_and(|sources| sources < built)
}

/// Says on stderr that the component is reused, and how to build anyway.
fn reuse(wasm: &Path) -> PathBuf {
    eprintln!(
        "==> {} is newer than every file of the project: not rebuilt (--force rebuilds)",
        wasm.display()
    );
    wasm.to_owned()
}

fn build_python(dir: &Path, world: Option<World>, force: bool) -> anyhow::Result<PathBuf> {
    let install = format!(
        "componentize-py is not installed: run `python3 -m venv {venv} && {venv}/bin/pip install \
         componentize-py=={COMPONENTIZE_PY_VERSION}` (or `pip install \
         componentize-py=={COMPONENTIZE_PY_VERSION}` into a Python on PATH)",
        venv = dir.join(".venv").display()
    );
    // A project's own venv first, so the pinned version wins over whatever is on PATH.
    let local = dir.join(".venv/bin/componentize-py");
    let tool = if local.is_file() {
        local
    } else {
        find_on_path("componentize-py").with_context(|| install.clone())?
    };
    let app = std::fs::read_to_string(dir.join("app.py"))
        .with_context(|| format!("cannot read {}", dir.join("app.py").display()))?;
    let world = world.unwrap_or(if app.contains("@spool.filter") {
        World::Filter
    } else {
        World::Handler
    });
    let wasm = component_path(dir, &project_name(dir));
    if !force && up_to_date(dir, &wasm) {
        return Ok(reuse(&wasm));
    }
    create_parent(&wasm)?;
    let status = Command::new(&tool)
        .args([OsStr::new("-d"), OsStr::new("wit/spool.wit")])
        .args(["-w", world.name(), "componentize", "app", "-p", ".", "-o"])
        .arg(&wasm)
        .current_dir(dir)
        .stdin(Stdio::null())
        // componentize-py reports on stdout; ours is reserved for the path.
        .stdout(std::io::stderr())
        .status()
        .with_context(|| format!("cannot run {}", tool.display()))?;
    if !status.success() {
        bail!("componentize-py failed ({status})");
    }
    Ok(wasm)
}

fn build_js(dir: &Path, force: bool) -> anyhow::Result<PathBuf> {
    let node = "install Node.js 18 or newer with npm (e.g. `apt-get install nodejs npm`, or \
                https://nodejs.org)";
    require("node", node)?;
    require("npm", node)?;
    let manifest = std::fs::read_to_string(dir.join("package.json"))
        .with_context(|| format!("cannot read {}", dir.join("package.json").display()))?;
    let manifest: serde_json::Value = serde_json::from_str(&manifest)
        .with_context(|| format!("{} is not JSON", dir.join("package.json").display()))?;
    let name = manifest["name"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| project_name(dir));
    let wasm = component_path(dir, &name);
    if !force && up_to_date(dir, &wasm) {
        return Ok(reuse(&wasm));
    }
    if !dir.join("node_modules").exists() {
        eprintln!(
            "==> npm install (fetches @bytecodealliance/componentize-js {COMPONENTIZE_JS_VERSION})"
        );
        npm(dir, &["install", "--no-audit", "--no-fund"])?;
    }
    npm(dir, &["run", "build"])?;
    if !wasm.is_file() {
        bail!(
            "`npm run build` succeeded but wrote no {}: its build script should write \
             target/{name}.wasm",
            wasm.display()
        );
    }
    Ok(wasm)
}

fn npm(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("npm")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .status()
        .context("cannot run npm")?;
    if !status.success() {
        bail!("`npm {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

fn project_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin".to_owned())
}

fn create_parent(path: &Path) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    Ok(())
}

fn require(program: &str, advice: &str) -> anyhow::Result<PathBuf> {
    find_on_path(program).with_context(|| format!("{program} was not found on PATH: {advice}"))
}

/// The first executable file called `program` in a directory of `PATH`.
fn find_on_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_component_newer_than_every_source_is_up_to_date() {
        let dir = tempfile::tempdir().unwrap();
        let wasm = dir.path().join("target/demo.wasm");
        std::fs::write(dir.path().join("app.py"), "x = 1\n").unwrap();
        assert!(!up_to_date(dir.path(), &wasm), "not built yet");
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::create_dir_all(dir.path().join("target")).unwrap();
        std::fs::write(&wasm, b"\0asm").unwrap();
        assert!(up_to_date(dir.path(), &wasm));
        // Dependencies and caches do not count; a source in a subdirectory does.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::create_dir_all(dir.path().join("node_modules/x")).unwrap();
        std::fs::write(dir.path().join("node_modules/x/i.js"), "").unwrap();
        assert!(up_to_date(dir.path(), &wasm));
        std::fs::create_dir_all(dir.path().join("lib")).unwrap();
        std::fs::write(dir.path().join("lib/util.py"), "y = 2\n").unwrap();
        assert!(
            !up_to_date(dir.path(), &wasm),
            "lib/util.py changed after the build"
        );
    }

    #[test]
    fn the_wasm_artifact_is_found_among_cargo_messages() {
        let messages = r#"{"reason":"compiler-artifact","filenames":["/t/libserde.rlib"]}
{"reason":"compiler-artifact","filenames":["/t/wasm32-wasip2/release/demo.wasm"]}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            wasm_artifact(messages),
            Some(PathBuf::from("/t/wasm32-wasip2/release/demo.wasm"))
        );
        assert_eq!(wasm_artifact("not json\n"), None);
    }
}
