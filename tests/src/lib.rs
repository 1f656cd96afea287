//! Helpers for Spool's end-to-end tests.
//!
//! Everything here drives the real `spool` binary from the outside, the way a user or a script
//! would: [`TestHost`] starts `spool serve` on port 0 with its own temporary database, talks to it
//! over HTTP, and can kill, stop or restart it; [`spool_cli`] runs client commands. The tests
//! themselves live in `tests/tests/` and state behaviour only through the public HTTP/CLI contract
//! (DESIGN §3 and §7), never through the host's internals.
//!
//! Every wait in this crate is bounded both in time and in the number of polls, and a failed wait
//! says what it was waiting for and what it saw last.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use reqwest::{Method, StatusCode};
pub use serde_json::{Value, json};

/// How long a host may take from spawn to printing its listening line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one HTTP request may take before the test gives up on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest any single [`wait_until`] is allowed to poll.
pub const MAX_WAIT: Duration = Duration::from_secs(120);

/// The workspace root (the parent of this crate).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent directory")
        .to_path_buf()
}

/// The release `spool` binary; panics with the command that builds it when it is missing.
pub fn spool_bin() -> PathBuf {
    let bin = workspace().join("target/release/spool");
    assert!(
        bin.is_file(),
        "{} is missing; build it first with:\n    cargo build --release -p spool",
        bin.display()
    );
    bin
}

/// A reference plugin built for `wasm32-wasip2`, e.g. `plugin_path("echo")`; panics with the
/// command that builds it when it is missing.
pub fn plugin_path(name: &str) -> PathBuf {
    let wasm = workspace()
        .join("target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(
        wasm.is_file(),
        "{} is missing; build the plugins first with:\n    scripts/build.sh",
        wasm.display()
    );
    wasm
}

/// A Python or JavaScript plugin built by `scripts/build.sh` (componentize-py / componentize-js),
/// e.g. `lang_plugin_path("py-handler")`; panics with the command that builds it when missing.
pub fn lang_plugin_path(name: &str) -> PathBuf {
    let wasm = workspace()
        .join("target/lang-plugins")
        .join(format!("{name}.wasm"));
    assert!(
        wasm.is_file(),
        "{} is missing; build the plugins first with:\n    scripts/build.sh",
        wasm.display()
    );
    wasm
}

/// The componentize-py and componentize-js that `scripts/build.sh` installs under
/// `target/tools`, as a `PATH` with them in front (for `spool plugin build` in tests).
pub fn lang_tools_path() -> std::ffi::OsString {
    let tools = workspace().join("target/tools");
    let mut dirs = vec![tools.join("py/bin"), tools.join("js/node_modules/.bin")];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(dirs).unwrap_or_default()
}

/// Milliseconds since the Unix epoch by the local clock (the host runs on the same machine).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One HTTP response: status, body parsed as JSON (or `Null` when it is not JSON) and raw text.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub json: Value,
    pub text: String,
}

impl Reply {
    /// Panics unless the status is `want`, showing what came back.
    #[track_caller]
    pub fn expect(self, want: u16, what: &str) -> Value {
        assert_eq!(
            self.status.as_u16(),
            want,
            "{what}: expected HTTP {want}, got {} with body {}",
            self.status,
            self.text
        );
        self.json
    }

    /// Panics unless the status is 2xx.
    #[track_caller]
    pub fn expect_ok(self, what: &str) -> Value {
        assert!(
            self.status.is_success(),
            "{what}: expected a 2xx status, got {} with body {}",
            self.status,
            self.text
        );
        self.json
    }

    /// Checks the error shape of DESIGN §7, `{"error": {"code", "message"}}`, with status `want`,
    /// and returns the error code.
    #[track_caller]
    pub fn expect_error(self, want: u16, what: &str) -> String {
        assert_eq!(
            self.status.as_u16(),
            want,
            "{what}: expected HTTP {want}, got {} with body {}",
            self.status,
            self.text
        );
        self.error_code(what)
    }

    /// Checks the error shape with any 4xx status and returns the error code.
    #[track_caller]
    pub fn expect_client_error(self, what: &str) -> String {
        assert!(
            self.status.is_client_error(),
            "{what}: expected a 4xx status, got {} with body {}",
            self.status,
            self.text
        );
        self.error_code(what)
    }

    #[track_caller]
    fn error_code(&self, what: &str) -> String {
        let err = &self.json["error"];
        let code = err["code"].as_str().unwrap_or_default();
        let message = err["message"].as_str().unwrap_or_default();
        assert!(
            !code.is_empty() && !message.is_empty(),
            "{what}: expected a JSON error {{\"error\": {{\"code\", \"message\"}}}}, got {} with body {}",
            self.status,
            self.text
        );
        assert!(
            code.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{what}: error codes should be stable snake_case identifiers, got {code:?}"
        );
        code.to_string()
    }
}

/// Queue statistics as `GET /v1/queues/{q}` reports them (DESIGN §7).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(default)]
pub struct Stats {
    pub scheduled: u64,
    pub ready: u64,
    pub leased: u64,
    pub acked: u64,
    pub dead: u64,
    pub cancelled: u64,
    pub expired: u64,
    pub retried: u64,
    pub enqueued: u64,
    pub dlq_depth: u64,
    pub oldest_ready_age_ms: Option<u64>,
}

impl Stats {
    /// Messages not yet in a final state.
    pub fn live(&self) -> u64 {
        self.scheduled + self.ready + self.leased
    }
}

/// How to start a host; [`TestHost::start`] covers the common case.
#[derive(Debug, Clone, Default)]
pub struct HostOptions {
    /// Contents of a `spool.toml` passed with `--config`.
    pub config: Option<String>,
    /// Extra `spool serve` flags, e.g. `["--maintenance-interval", "200ms"]`.
    pub args: Vec<String>,
    /// Bearer token sent with every request of the helpers (for servers with `[[auth.tokens]]`).
    pub token: Option<String>,
    /// The database file, instead of `spool.db` in the host's temporary directory.
    pub db: Option<PathBuf>,
    /// A PostgreSQL database URL (see [`postgres_database`]) instead of a SQLite file.
    pub database_url: Option<String>,
}

impl HostOptions {
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn config(mut self, toml: impl Into<String>) -> Self {
        self.config = Some(toml.into());
        self
    }

    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Puts the database at `path` (e.g. on a small file system of the test's own).
    pub fn db(mut self, path: impl Into<PathBuf>) -> Self {
        self.db = Some(path.into());
        self
    }

    /// Runs the host on the PostgreSQL database at `url` (several hosts may share one).
    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.database_url = Some(url.into());
        self
    }

    pub fn start(self) -> TestHost {
        TestHost::start_with(self)
    }
}

/// One private PostgreSQL server for the whole test process (started on first use, on
/// 127.0.0.1 and a free port; stopped by its watchdog when the process ends).
static PG_CLUSTER: std::sync::LazyLock<Result<spool_store::pg_cluster::PgCluster, String>> =
    std::sync::LazyLock::new(spool_store::pg_cluster::PgCluster::start_until_exit);
static PG_DATABASES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The URL of a new, empty database on the test process's private PostgreSQL server.
pub fn postgres_database() -> String {
    let cluster = PG_CLUSTER
        .as_ref()
        .unwrap_or_else(|e| panic!("cannot start a private PostgreSQL server: {e}"));
    let n = PG_DATABASES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    cluster
        .create_database(&format!("e2e_{}_{n}", std::process::id()))
        .unwrap_or_else(|e| panic!("cannot create a test database: {e}"))
}

/// What `sql` prints (unaligned, tuples only) on database `database` of the test process's
/// private PostgreSQL server.
pub fn postgres_psql(database: &str, sql: &str) -> String {
    PG_CLUSTER
        .as_ref()
        .unwrap_or_else(|e| panic!("cannot start a private PostgreSQL server: {e}"))
        .psql(database, sql)
        .unwrap_or_else(|e| panic!("psql {sql:?}: {e}"))
}

/// A running `spool serve` on port 0 with its own temporary database.
///
/// The process is killed when the `TestHost` is dropped; if the test is panicking at that point,
/// the tail of the host's log is printed so the failure can be read next to the host's view.
pub struct TestHost {
    dir: tempfile::TempDir,
    opts: HostOptions,
    child: Option<Child>,
    base: String,
    client: reqwest::Client,
    runs: u32,
}

impl std::fmt::Debug for TestHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestHost")
            .field("dir", &self.dir.path())
            .field("base", &self.base)
            .field("runs", &self.runs)
            .finish()
    }
}

impl TestHost {
    /// Starts a host with default options.
    pub fn start() -> TestHost {
        Self::start_with(HostOptions::default())
    }

    pub fn options() -> HostOptions {
        HostOptions::default()
    }

    /// With `SPOOL_E2E_STORE=postgres` in the environment, a host given neither a database
    /// file nor a URL runs on a new database of the test process's private PostgreSQL server,
    /// so the same tests drive both stores (`scripts/test.sh` runs the store-touching modules
    /// that way too).
    pub fn start_with(mut opts: HostOptions) -> TestHost {
        if opts.db.is_none()
            && opts.database_url.is_none()
            && std::env::var("SPOOL_E2E_STORE").as_deref() == Ok("postgres")
        {
            opts.database_url = Some(postgres_database());
        }
        let dir = tempfile::Builder::new()
            .prefix("spool-e2e-")
            .tempdir()
            .expect("create a temp dir");
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .no_proxy()
            .build()
            .expect("build an HTTP client");
        let mut host = TestHost {
            dir,
            opts,
            child: None,
            base: String::new(),
            client,
            runs: 0,
        };
        host.spawn();
        host
    }

    /// The host's base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// The database file this host (and its restarts) use.
    pub fn db_path(&self) -> PathBuf {
        self.opts
            .db
            .clone()
            .unwrap_or_else(|| self.dir.path().join("spool.db"))
    }

    /// The file the host's stderr goes to (all runs, appended).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("spool.log")
    }

    /// The host's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "spawn while a host is still running");
        self.runs += 1;
        let cache = workspace().join("target/spool-test-cache");
        std::fs::create_dir_all(&cache).expect("create the component cache dir");
        let mut cmd = Command::new(spool_bin());
        cmd.arg("serve");
        match &self.opts.database_url {
            Some(url) => cmd.arg("--database-url").arg(url),
            None => cmd.arg("--db").arg(self.db_path()),
        };
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--cache-dir")
            .arg(&cache);
        if let Some(toml) = &self.opts.config {
            let path = self.dir.path().join("spool.toml");
            std::fs::write(&path, toml).expect("write spool.toml");
            cmd.arg("--config").arg(path);
        }
        cmd.args(&self.opts.args);

        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the host log");
        writeln!(log, "===== spool serve, run {} =====", self.runs).ok();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .env_remove("SPOOL_SERVER");
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", spool_bin().display()));

        // The host prints one line when it is ready. Keep draining stdout afterwards into a file
        // so the host never blocks on (or dies of) a full or closed pipe.
        let stdout = child.stdout.take().expect("piped stdout");
        let stdout_log = self.dir.path().join("stdout.log");
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut out = OpenOptions::new()
                .create(true)
                .append(true)
                .open(stdout_log)
                .ok();
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(out) = out.as_mut() {
                    writeln!(out, "{line}").ok();
                }
                if line.contains("listening on")
                    && let Some(tx) = tx.take()
                {
                    tx.send(line).ok();
                }
            }
        });

        let line = match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(line) => line,
            Err(e) => {
                let status = child.try_wait().ok().flatten();
                child.kill().ok();
                child.wait().ok();
                panic!(
                    "spool serve did not print `spool listening on http://...` within {STARTUP_TIMEOUT:?} ({e}); \
                     exit status: {status:?}\n--- host log tail ---\n{}",
                    tail(&self.log_path(), 60)
                );
            }
        };
        let base = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no http:// address in the listening line {line:?}"))
            .trim_end_matches('/')
            .to_string();
        self.base = base;
        self.child = Some(child);
    }

    /// SIGKILLs the host (no chance to clean up) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().expect("reap the killed host");
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for the host to exit, returning its exit status.
    /// Panics (after SIGKILLing it) if it is still running then.
    pub fn stop(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("stop: the host is not running");
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("run `kill -TERM`");
        assert!(status.success(), "`kill -TERM {}` failed", child.id());
        let started = Instant::now();
        let polls = timeout.as_millis() / 20 + 1;
        for _ in 0..polls {
            if let Some(status) = child.try_wait().expect("poll the host process") {
                return status;
            }
            if started.elapsed() > timeout {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill().ok();
        child.wait().ok();
        panic!(
            "the host did not exit within {timeout:?} of SIGTERM\n--- host log tail ---\n{}",
            tail(&self.log_path(), 60)
        );
    }

    /// Starts the host again on the same database (SIGKILLing it first if it still runs). The new
    /// process listens on a new port; [`TestHost::url`] follows it.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// The host's log, last `lines` lines.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_path(), lines)
    }

    // ----- HTTP -----

    /// Sends a request; `body` is sent as JSON when given.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Reply {
        self.call_as(self.opts.token.as_deref(), method, path, body)
            .await
    }

    /// Like [`call`](Self::call) with `token` as the bearer token (`None`: no Authorization).
    pub async fn call_as(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Reply {
        let mut req = self.client.request(method.clone(), self.full(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let what = format!("{method} {path}");
        self.send(req, &what).await
    }

    /// Like [`call`](Self::call) with extra request headers.
    pub async fn call_with_headers(
        &self,
        method: Method,
        path: &str,
        headers: &[(String, String)],
        body: Option<&Value>,
    ) -> Reply {
        let mut req = self.client.request(method.clone(), self.full(path));
        if let Some(token) = &self.opts.token {
            req = req.bearer_auth(token);
        }
        for (name, value) in headers {
            req = req.header(name, value);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let what = format!("{method} {path}");
        self.send(req, &what).await
    }

    /// Sends raw bytes with a content type, for malformed bodies and plugin uploads.
    pub async fn call_raw(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Reply {
        self.call_raw_as(self.opts.token.as_deref(), method, path, content_type, body)
            .await
    }

    /// Like [`call_raw`](Self::call_raw) with `token` as the bearer token (`None`: none).
    pub async fn call_raw_as(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Reply {
        let mut req = self
            .client
            .request(method.clone(), self.full(path))
            .header("content-type", content_type)
            .body(body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let what = format!("{method} {path}");
        self.send(req, &what).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Reply {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.call(Method::DELETE, path, None).await
    }

    fn full(&self, path: &str) -> String {
        assert!(!self.base.is_empty(), "the host is not running");
        format!("{}{path}", self.base)
    }

    async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> Reply {
        let resp = match req.send().await {
            Ok(resp) => resp,
            Err(e) => panic!(
                "{what}: request failed: {e}\n--- host log tail ---\n{}",
                self.log_tail(40)
            ),
        };
        let status = resp.status();
        let text = resp
            .text()
            .await
            .unwrap_or_else(|e| panic!("{what}: reading the body failed: {e}"));
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, json, text }
    }

    /// `GET /healthz` answers 200.
    pub async fn healthy(&self) -> bool {
        match self.client.get(self.full("/healthz")).send().await {
            Ok(resp) => resp.status().is_success(),
            Err(_) => false,
        }
    }

    /// Creates or updates a queue (`PUT /v1/queues/{q}`), expecting 200 or 201; returns the body.
    pub async fn put_queue(&self, name: &str, config: Value) -> Value {
        let reply = self.put(&format!("/v1/queues/{name}"), &config).await;
        assert!(
            matches!(reply.status.as_u16(), 200 | 201),
            "PUT /v1/queues/{name} {config}: expected 200/201, got {} with body {}",
            reply.status,
            reply.text
        );
        reply.json
    }

    /// Uploads a plugin (`PUT /v1/plugins/{name}`), expecting 201; returns the body.
    pub async fn deploy(&self, name: &str, wasm: &Path) -> Value {
        let bytes = std::fs::read(wasm).unwrap_or_else(|e| panic!("read {}: {e}", wasm.display()));
        self.call_raw(
            Method::PUT,
            &format!("/v1/plugins/{name}"),
            "application/wasm",
            bytes,
        )
        .await
        .expect(201, &format!("deploy plugin {name}"))
    }

    /// Enqueues with a full request body (`{"payload": ...}` or `{"messages": [...]}`), expecting
    /// 202; returns the ids.
    pub async fn enqueue(&self, queue: &str, body: Value) -> Vec<String> {
        let reply = self
            .post(&format!("/v1/queues/{queue}/messages"), &body)
            .await;
        let json = reply.expect(202, &format!("enqueue to {queue}"));
        let ids = json["ids"]
            .as_array()
            .unwrap_or_else(|| panic!("enqueue to {queue}: no `ids` array in {json}"));
        ids.iter()
            .map(|id| {
                id.as_str()
                    .unwrap_or_else(|| panic!("message ids are strings, got {id}"))
                    .to_string()
            })
            .collect()
    }

    /// Enqueues one message with just a payload; returns its id.
    pub async fn enqueue_one(&self, queue: &str, payload: Value) -> String {
        let ids = self.enqueue(queue, json!({ "payload": payload })).await;
        assert_eq!(ids.len(), 1, "one message enqueued, got ids {ids:?}");
        ids.into_iter().next().unwrap()
    }

    /// `GET /v1/messages/{id}`, expecting 200.
    pub async fn get_message(&self, id: &str) -> Value {
        self.get(&format!("/v1/messages/{id}"))
            .await
            .expect(200, &format!("get message {id}"))
    }

    /// The state of one message.
    pub async fn state(&self, id: &str) -> String {
        let m = self.get_message(id).await;
        m["state"]
            .as_str()
            .unwrap_or_else(|| panic!("message {id} has no string `state`: {m}"))
            .to_string()
    }

    /// `GET /v1/queues/{q}`, expecting 200; the whole body.
    pub async fn queue(&self, name: &str) -> Value {
        self.get(&format!("/v1/queues/{name}"))
            .await
            .expect(200, &format!("get queue {name}"))
    }

    /// The queue's stats.
    pub async fn stats(&self, name: &str) -> Stats {
        let q = self.queue(name).await;
        serde_json::from_value(q["stats"].clone())
            .unwrap_or_else(|e| panic!("queue {name}: cannot read `stats` from {q}: {e}"))
    }

    /// Polls the queue's stats until `done` holds; returns the stats that satisfied it.
    pub async fn wait_stats(
        &self,
        queue: &str,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Stats) -> bool,
    ) -> Stats {
        let done = &done;
        wait_until(what, timeout, move || async move {
            let s = self.stats(queue).await;
            if done(&s) {
                Ok(s)
            } else {
                Err(format!("{s:?}"))
            }
        })
        .await
    }

    /// Polls one message until its state is `want`; returns the message.
    pub async fn wait_state(&self, id: &str, want: &str, timeout: Duration) -> Value {
        wait_until(
            &format!("message {id} to become {want}"),
            timeout,
            move || async move {
                let m = self.get_message(id).await;
                if m["state"] == want {
                    Ok(m)
                } else {
                    Err(m.to_string())
                }
            },
        )
        .await
    }

    /// Polls one message until it reaches a final state (acked, dead, cancelled, expired);
    /// returns the message.
    pub async fn wait_until_final(&self, id: &str, timeout: Duration) -> Value {
        wait_until(
            &format!("message {id} to reach a final state"),
            timeout,
            move || async move {
                let m = self.get_message(id).await;
                let final_state = matches!(
                    m["state"].as_str(),
                    Some("acked" | "dead" | "cancelled" | "expired")
                );
                if final_state {
                    Ok(m)
                } else {
                    Err(m.to_string())
                }
            },
        )
        .await
    }

    /// Runs the CLI against this host (`SPOOL_SERVER` set to its URL).
    pub fn cli<I, S>(&self, args: I) -> CliOutput
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        spool_cli(Some(&self.base), args)
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!(
                "--- spool host log ({}), last 80 lines ---\n{}",
                self.log_path().display(),
                self.log_tail(80)
            );
        }
    }
}

/// What came back on a raw connection: the status, the body as text and JSON (`Null` if not
/// JSON), and how long the answer took.
#[derive(Debug, Clone)]
pub struct RawReply {
    pub status: u16,
    pub body: String,
    pub json: Value,
    pub elapsed: Duration,
}

/// Sends `request` byte for byte on a new loopback connection to `url` (a host's URL) and reads
/// until the server closes it or `timeout` passes, for requests no HTTP client library would
/// send (an announced body never sent, 10,000 headers, a broken request line). Panics if no
/// complete answer came in time.
pub fn raw_http(url: &str, request: &[u8], timeout: Duration) -> RawReply {
    use std::net::TcpStream;
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(timeout))
        .expect("read timeout");
    stream
        .set_write_timeout(Some(timeout))
        .expect("write timeout");
    // Written from another thread while this one reads: the server may answer (and close)
    // before it has taken all of a huge head, and the answer still counts.
    let mut writer = stream.try_clone().expect("clone the connection");
    let request = request.to_vec();
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(&request);
    });
    let mut received = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    // Bounded by time (the read timeout and the overall deadline) and by size.
    while started.elapsed() < timeout && received.len() < 1 << 20 {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !received.is_empty() => {
                break;
            }
            Err(e) => panic!(
                "no complete answer within {timeout:?} ({e}); got so far: {}",
                String::from_utf8_lossy(&received)
            ),
        }
    }
    let elapsed = started.elapsed();
    // Unblocks the writer if the server stopped reading.
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = sender.join();
    let text = String::from_utf8_lossy(&received).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete response head in {text:?}"));
    let status = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    RawReply {
        status,
        json: serde_json::from_str(body).unwrap_or(Value::Null),
        body: body.to_owned(),
        elapsed,
    }
}

impl RawReply {
    /// Checks the status and the JSON error shape, and returns the error code.
    #[track_caller]
    pub fn expect_error(&self, want: u16, what: &str) -> String {
        assert_eq!(self.status, want, "{what}: body {}", self.body);
        let code = self.json["error"]["code"].as_str();
        let message = self.json["error"]["message"].as_str();
        assert!(
            code.is_some_and(|c| !c.is_empty()) && message.is_some_and(|m| !m.is_empty()),
            "{what}: the body is not the JSON error shape: {:?}",
            self.body
        );
        code.unwrap_or_default().to_owned()
    }
}

/// Polls `check` until it returns `Ok`, at most for `timeout` (capped at [`MAX_WAIT`]) and a
/// bounded number of times. `check` returns `Err(description of what it saw)` while not done;
/// the last description is in the panic message if time runs out.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let timeout = timeout.min(MAX_WAIT);
    let interval = Duration::from_millis(25);
    let max_polls = (timeout.as_millis() / interval.as_millis()) as u64 + 2;
    let started = Instant::now();
    let mut last = String::from("(never checked)");
    for _ in 0..max_polls {
        match check().await {
            Ok(v) => return v,
            Err(seen) => last = seen,
        }
        if started.elapsed() >= timeout {
            break;
        }
        tokio::time::sleep(interval).await;
    }
    panic!(
        "timed out after {:?} waiting for {what}; last observed: {last}",
        started.elapsed()
    );
}

/// What a CLI invocation did.
#[derive(Debug, Clone)]
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    #[track_caller]
    pub fn expect_success(&self, what: &str) -> &Self {
        assert!(
            self.status.success(),
            "{what}: expected exit 0, got {}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn expect_failure(&self, what: &str) -> &Self {
        assert!(
            !self.status.success() && self.status.code().is_some(),
            "{what}: expected a non-zero exit (not a crash), got {}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        assert!(
            !self.stderr.contains("panicked"),
            "{what}: the CLI panicked instead of reporting an error:\n{}",
            self.stderr
        );
        self
    }
}

/// Runs `spool ARGS...` with `SPOOL_SERVER` set to `server` (or unset), bounded to 60 s.
pub fn spool_cli<I, S>(server: Option<&str>, args: I) -> CliOutput
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let args: Vec<String> = args
        .into_iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_cli(server, &[], None, &args)
}

/// Runs `spool ARGS` with extra environment variables and, optionally, bytes on standard input;
/// bounded to 60 s like `spool_cli`. `SPOOL_SERVER` and `SPOOL_TOKEN` come only from `env`.
pub fn run_cli(
    server: Option<&str>,
    env: &[(&str, &str)],
    stdin: Option<&[u8]>,
    args: &[&str],
) -> CliOutput {
    let mut cmd = Command::new(spool_bin());
    cmd.args(args)
        .env_remove("SPOOL_SERVER")
        .env_remove("SPOOL_TOKEN");
    if let Some(server) = server {
        cmd.env("SPOOL_SERVER", server);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let what = format!("`spool {args:?}`");
    let (status, out) = run_bounded(cmd, stdin, Duration::from_secs(60));
    match status {
        Some(status) => CliOutput { status, ..out },
        None => panic!("{what} did not finish within 60 s"),
    }
}

/// Runs `cmd` in a process group of its own with stdout and stderr captured and `stdin` (if
/// any) written to it, for at most `limit`; then the whole group is killed and the status is
/// `None` (the output up to then is returned either way, for the test's message).
pub fn run_bounded(
    mut cmd: Command,
    stdin: Option<&[u8]>,
    limit: Duration,
) -> (Option<ExitStatus>, CliOutput) {
    use std::os::unix::process::CommandExt;
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0);
    let mut child = cmd.spawn().expect("spawn a command");
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        let bytes = bytes.to_vec();
        // A writer thread, so a command that reads slowly never deadlocks against our reads.
        std::thread::spawn(move || {
            pipe.write_all(&bytes).ok();
        });
    }
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).ok();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).ok();
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll the command") {
            break Some(status);
        }
        if started.elapsed() > limit {
            // The group: a shell's children (toolchains, servers) go too.
            Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status()
                .ok();
            child.wait().ok();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let output = CliOutput {
        status: status.unwrap_or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            ExitStatus::from_raw(9)
        }),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    };
    (status, output)
}

/// The last `lines` lines of a file (best effort; empty if it cannot be read).
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    // Only the end matters; skip most of a large log.
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024))).ok();
    let mut s = String::new();
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok();
    s.push_str(&String::from_utf8_lossy(&buf));
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A minimal valid WebAssembly *component* that imports and exports nothing: it implements no
/// Spool world, so deploying it must be refused.
pub const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\x00\x01\x00";

/// A minimal valid core WebAssembly *module* (not a component).
pub const EMPTY_CORE_MODULE: &[u8] = b"\0asm\x01\x00\x00\x00";
