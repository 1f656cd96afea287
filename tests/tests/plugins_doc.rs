//! docs/PLUGINS.md's walk-through, run as written in each language: every fenced block of its
//! "Writing a plugin" section, in order — `spool plugin new`, the handler's source for the
//! language, build, local runs, deploy with messages, upgrade, rollback and activate — against a
//! real server whose spool.toml is the section's `toml` block. The shell blocks run in bash with
//! `spool` and the language tools (`scripts/build.sh` puts them under `target/tools`) on PATH;
//! only `--lang python` is replaced by the language under test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use spool_tests::{
    CliOutput, TestHost, lang_tools_path, run_bounded, run_cli, spool_bin, workspace,
};

/// The section of docs/PLUGINS.md that the test runs.
const SECTION: &str = "## Writing a plugin in Rust, Python or JavaScript";

/// A fenced block: its language tag and body.
struct Block {
    lang: String,
    body: String,
}

/// Every fenced block of the walk-through section, in order.
fn walkthrough() -> Vec<Block> {
    let doc = std::fs::read_to_string(workspace().join("docs/PLUGINS.md")).expect("PLUGINS.md");
    let start = doc.find(SECTION).expect("the walk-through section");
    let rest = &doc[start + SECTION.len()..];
    let section = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
    let mut blocks = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        let Some(lang) = line.strip_prefix("```") else {
            continue;
        };
        let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        blocks.push(Block {
            lang: lang.to_owned(),
            body: body.join("\n") + "\n",
        });
    }
    blocks
}

/// The source file a new project of `lang` keeps its handler in, and the block's tag for it.
fn source_of(lang: &str) -> (&'static str, &'static str) {
    match lang {
        "python" => ("app.py", "python"),
        "js" => ("handler.js", "js"),
        _ => ("src/lib.rs", "rust"),
    }
}

struct Shell {
    dir: PathBuf,
    env: Vec<(String, String)>,
}

impl Shell {
    /// Runs `script` in bash (`-euo pipefail`), failing the test if it fails or outlasts
    /// `limit` (the whole process group is killed then).
    fn run(&self, script: &str, limit: Duration) -> CliOutput {
        let mut cmd = Command::new("bash");
        cmd.args(["-euo", "pipefail", "-c", script])
            .current_dir(&self.dir)
            .env_remove("SPOOL_TOKEN");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let (status, ran) = run_bounded(cmd, None, limit);
        match status {
            Some(s) if s.success() => ran,
            Some(s) => panic!(
                "this block of docs/PLUGINS.md failed ({s}):\n{script}\n--- stdout\n{}\n--- stderr\n{}",
                ran.stdout, ran.stderr
            ),
            None => panic!(
                "this block of docs/PLUGINS.md ran over {limit:?}:\n{script}\n--- stderr\n{}",
                ran.stderr
            ),
        }
    }
}

/// The messages of `queue` acked and ready, waited for until both reach the given counts.
async fn wait_counts(host: &TestHost, queue: &str, acked: u64, ready: u64) {
    host.wait_stats(
        queue,
        &format!("{acked} acked and {ready} ready"),
        Duration::from_secs(90),
        |s| s.acked >= acked && s.ready >= ready && s.live() == ready,
    )
    .await;
}

async fn follow_the_walkthrough(lang: &str) {
    let blocks = walkthrough();
    let (source_file, tag) = source_of(lang);
    let config = blocks
        .iter()
        .find(|b| b.lang == "toml")
        .expect("a spool.toml block");
    let host = TestHost::options().config(config.body.clone()).start();

    let dir = tempfile::tempdir().expect("temp dir");
    let bin_dir = spool_bin().parent().expect("bin dir").to_owned();
    let mut path = std::ffi::OsString::from(bin_dir);
    path.push(":");
    path.push(lang_tools_path());
    let mut env = vec![
        ("PATH".to_owned(), path.to_string_lossy().into_owned()),
        ("SPOOL_SERVER".to_owned(), host.url().to_owned()),
    ];
    if lang == "rust" {
        // Kept between runs so only the first one compiles wit-bindgen.
        let target = workspace().join("target/plugin-new-rust");
        env.push(("CARGO_TARGET_DIR".to_owned(), target.display().to_string()));
    }
    let shell = Shell {
        dir: dir.path().to_owned(),
        env,
    };
    let project = dir.path().join("orders");
    let mut ran_source = false;
    let mut ran = Vec::new();

    for block in &blocks {
        match block.lang.as_str() {
            "sh" => {
                let script = block
                    .body
                    .replace("--lang python", &format!("--lang {lang}"));
                if script.contains("plugin rollback") {
                    // "Change the code (say, the log line)": version 2 has other bytes.
                    let file = project.join(source_file);
                    let code = std::fs::read_to_string(&file).expect("the handler's source");
                    assert!(code.contains("so far"), "{code}");
                    std::fs::write(&file, code.replace("so far", "so far, v2")).expect("edit");
                }
                // Builds of Python and JavaScript components take up to a minute here.
                let out = shell.run(&script, Duration::from_secs(600));
                after_block(&host, lang, &project, &script, &out).await;
                ran.push(script);
            }
            t if t == tag => {
                let file = project.join(source_file);
                assert!(
                    file.is_file(),
                    "the walk-through names {source_file}, which `spool plugin new` writes"
                );
                std::fs::write(&file, &block.body).expect("write the handler");
                ran_source = true;
            }
            _ => {}
        }
    }
    assert!(ran_source, "a ```{tag} block with the handler");
    assert!(
        ran.iter().any(|s| s.contains("plugin activate")),
        "the walk-through ends with upgrade, rollback and activate: {} shell blocks ran",
        ran.len()
    );
}

/// What each shell block must have done, checked before the next one runs.
async fn after_block(host: &TestHost, lang: &str, project: &Path, script: &str, out: &CliOutput) {
    if script.contains("plugin new") {
        for file in ["README.md", "sample.json", "wit/spool.wit"] {
            assert!(project.join(file).is_file(), "{file} in the new project");
        }
        // Creating over an existing project is refused rather than mixing files.
        let project_arg = project.display().to_string();
        let again = [
            "plugin",
            "new",
            "orders",
            "--lang",
            lang,
            "--dir",
            &project_arg,
        ];
        run_cli(None, &[], None, &again).expect_failure("plugin new over an existing project");
        match lang {
            // The npm package is already under target/tools: no download in the test.
            "js" => std::os::unix::fs::symlink(
                workspace().join("target/tools/js/node_modules"),
                project.join("node_modules"),
            )
            .expect("link node_modules"),
            // Without componentize-py the error says exactly what to install.
            "python" => {
                let bare = run_cli(
                    None,
                    &[("PATH", "/usr/bin:/bin")],
                    None,
                    &["plugin", "build", &project_arg],
                );
                bare.expect_failure("plugin build without componentize-py");
                assert!(
                    bare.stderr.contains("pip install componentize-py==0.25.1"),
                    "{}",
                    bare.stderr
                );
            }
            _ => {}
        }
    } else if script.contains("plugin rollback") {
        wait_counts(host, "orders", 2, 0).await;
        let p = host
            .get("/v1/plugins/orders")
            .await
            .expect(200, "the plugin");
        let versions = p["versions"].as_array().map_or(0, Vec::len);
        assert_eq!(versions, 2, "the upgrade stored version 2: {p}");
        assert_eq!(
            p["active_version"], 2,
            "activated again after the rollback: {p}"
        );
        let actions: Vec<&str> = p["history"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| h["action"].as_str())
            .collect();
        assert_eq!(actions, ["deploy", "deploy", "rollback", "activate"], "{p}");
        assert!(
            out.stdout.contains("version"),
            "plugin show: {}",
            out.stdout
        );
    } else if script.contains("plugin deploy") {
        // One big order acked, its review request published, the limits read from the queue.
        wait_counts(host, "orders", 1, 0).await;
        wait_counts(host, "orders.review", 0, 1).await;
        assert!(
            out.stderr.contains("limits of queue orders"),
            "--limits-from says where the limits came from: {}",
            out.stderr
        );
        assert!(out.stdout.contains("outcome: ack"), "{}", out.stdout);
    } else if script.contains("plugin run") {
        let acks = out.stdout.matches("outcome: ack").count();
        let runs = script.matches("plugin run").count();
        let messages = if script.contains("--messages") { 2 } else { 1 };
        assert_eq!(
            acks,
            runs * messages,
            "every local run acks:\n{}",
            out.stdout
        );
        if script.contains("250000") {
            assert!(
                out.stdout.contains("orders.review"),
                "the big order's review request is reported: {}",
                out.stdout
            );
        }
    } else if script.contains("plugin build") {
        let wasm = out.stdout.lines().last().unwrap_or_default();
        assert!(
            wasm.ends_with(".wasm") && Path::new(wasm).is_file(),
            "the last line of stdout is the component: {:?}",
            out.stdout
        );
        eprintln!(
            "{lang}: orders is {} KiB",
            std::fs::metadata(wasm).map_or(0, |m| m.len() / 1024)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walkthrough_runs_in_python() {
    follow_the_walkthrough("python").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walkthrough_runs_in_javascript() {
    follow_the_walkthrough("js").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walkthrough_runs_in_rust() {
    follow_the_walkthrough("rust").await;
}
