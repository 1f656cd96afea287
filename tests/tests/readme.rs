//! The README's "Writing a plugin" section is a complete project: its `Cargo.toml` and
//! `src/lib.rs`, copied into a directory of their own outside this workspace and built with the
//! command the README gives, make a component that `spool plugin run` acks.

use std::process::Command;
use std::time::{Duration, Instant};

use spool_tests::{Value, spool_cli, workspace};

/// The body of the first fenced block with this language after `after` in `text`.
fn fenced(text: &str, after: &str, lang: &str) -> String {
    let from = text
        .find(after)
        .unwrap_or_else(|| panic!("README has {after:?}"));
    let rest = &text[from..];
    let open = format!("```{lang}\n");
    let start = rest
        .find(&open)
        .unwrap_or_else(|| panic!("a ```{lang} block follows {after:?}"))
        + open.len();
    let len = rest[start..].find("```").expect("the block is closed");
    rest[start..start + len].to_owned()
}

#[test]
fn the_readme_plugin_example_builds_and_acks() {
    let root = workspace();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let manifest = fenced(&readme, "`my-handler/Cargo.toml`", "toml");
    let source = fenced(&readme, "`my-handler/src/lib.rs`", "rust");
    assert!(
        manifest.contains("crate-type = [\"cdylib\"]"),
        "without cdylib no .wasm is written:\n{manifest}"
    );
    // The README assumes the plugin sits beside a clone of Spool; here the clone is this tree.
    let sdk_line = r#"spool-guest = { path = "../spool/guest-sdk" }"#;
    assert!(manifest.contains(sdk_line), "{manifest}");
    let sdk = root.join("guest-sdk");
    let manifest = manifest.replace(
        sdk_line,
        &format!("spool-guest = {{ path = {:?} }}", sdk.display().to_string()),
    );

    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("my-handler");
    std::fs::create_dir_all(project.join("src")).unwrap();
    std::fs::write(project.join("Cargo.toml"), manifest).unwrap();
    std::fs::write(project.join("src/lib.rs"), source).unwrap();
    // The workspace's lock file pins the same dependency versions, so the build needs no
    // registry access; cargo drops the entries this small crate does not use.
    std::fs::copy(root.join("Cargo.lock"), project.join("Cargo.lock")).unwrap();

    // Its own target directory under the workspace's, kept between runs, so only the first
    // build compiles the guest dependencies.
    let target = root.join("target/readme-plugin");
    let started = Instant::now();
    let mut child = Command::new("cargo")
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--offline",
        ])
        .current_dir(&project)
        .env("CARGO_TARGET_DIR", &target)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run cargo");
    let limit = Duration::from_secs(600);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            child.kill().ok();
            panic!("building the README plugin took over {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().unwrap();
    assert!(
        status.success(),
        "the README plugin does not build:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The README names the file after the crate, with `-` turned into `_`.
    let wasm = target.join("wasm32-wasip2/release/my_handler.wasm");
    assert!(wasm.is_file(), "{} was not written", wasm.display());
    let run = spool_cli(
        None,
        [
            "plugin",
            "run",
            wasm.to_str().unwrap(),
            "--payload",
            r#"{"hello": "world"}"#,
            "--json",
        ],
    );
    run.expect_success("spool plugin run of the README plugin");
    let report: Value = serde_json::from_str(&run.stdout).expect("plugin run --json");
    assert_eq!(report["outcome"]["result"], "ack", "{report}");
    let log = report["logs"][0]["message"].as_str().unwrap_or_default();
    assert!(
        log.starts_with("got ") && log.ends_with(" bytes"),
        "the plugin's log line is reported: {report}"
    );
}
