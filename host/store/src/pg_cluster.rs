//! A private PostgreSQL server for tests: `initdb` into a temporary directory, started with
//! `pg_ctl` on 127.0.0.1 and a free port, stopped and removed when dropped. Tests never touch
//! a shared server, and need no more than Debian's `postgresql` package.
//!
//! The binaries are found through `SPOOL_PG_BIN` (a directory), `pg_config --bindir`, the
//! newest `/usr/lib/postgresql/*/bin`, or `PATH`. PostgreSQL refuses to run as root, so a test
//! run as root (CI containers) runs the server as the `postgres` user the package creates.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// A running private cluster. Its superuser is `spool`, trusted on 127.0.0.1 only.
pub struct PgCluster {
    // Dropped after the server is stopped (see `Drop`).
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    run_as: Option<String>,
}

impl std::fmt::Debug for PgCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgCluster")
            .field("port", &self.port)
            .field("dir", &self.dir.path())
            .finish()
    }
}

/// The superuser `initdb` creates.
pub const PG_USER: &str = "spool";

impl PgCluster {
    /// Creates and starts a cluster. Durability settings are off (`fsync`, full page writes):
    /// the tests kill Spool, never this server, so nothing they check depends on them.
    pub fn start() -> Result<PgCluster, String> {
        let bin = find_bin()?;
        let run_as = if is_root() {
            Some("postgres".to_owned())
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("spool-pg-")
            .tempdir()
            .map_err(|e| format!("cannot create a directory for the cluster: {e}"))?;
        if let Some(user) = &run_as {
            chown_to(dir.path(), user)?;
        }
        let mut cluster = PgCluster {
            dir,
            bin,
            port: 0,
            run_as,
        };
        let data = cluster.data();
        cluster.run(
            "initdb",
            &[
                "-D",
                path_str(&data)?,
                "-U",
                PG_USER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )?;
        // A port taken between choosing and binding fails the start: try a few.
        let mut last = String::new();
        for _ in 0..5 {
            cluster.port = free_port()?;
            let options = format!(
                "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c full_page_writes=off \
                 -c synchronous_commit=off -c max_connections=200",
                cluster.port,
                path_str(cluster.dir.path())?
            );
            let log = cluster.dir.path().join("server.log");
            match cluster.run(
                "pg_ctl",
                &[
                    "-D",
                    path_str(&data)?,
                    "-l",
                    path_str(&log)?,
                    "-o",
                    &options,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
            ) {
                Ok(_) => return Ok(cluster),
                Err(e) => {
                    let tail = std::fs::read_to_string(&log).unwrap_or_default();
                    last = format!(
                        "{e}\n{}",
                        tail.lines().rev().take(10).collect::<Vec<_>>().join("\n")
                    );
                }
            }
        }
        Err(format!(
            "the private PostgreSQL server did not start: {last}"
        ))
    }

    /// [`start`](Self::start) for a cluster kept in a `static` and shared by the tests of one
    /// process. Statics are never dropped, so `Drop` cannot stop it: a watchdog (a small shell
    /// loop, in its own process group so a Ctrl-C of the test run does not take it first)
    /// checks every second that this process is alive and, once it is gone, stops the server
    /// and removes its directory.
    pub fn start_until_exit() -> Result<PgCluster, String> {
        let cluster = PgCluster::start()?;
        cluster.watch(std::process::id())?;
        Ok(cluster)
    }

    /// Starts the watchdog that stops the server and removes its files once process `pid` is
    /// gone.
    fn watch(&self, pid: u32) -> Result<(), String> {
        // Arguments, not text spliced into the script: paths stay paths whatever they hold.
        const SCRIPT: &str = r#"
            trap '' INT HUP
            while kill -0 "$1" 2>/dev/null; do sleep 1; done
            if [ -n "$5" ]; then
                runuser -u "$5" -- "$2" -D "$3" -m immediate -w -t 30 stop
            else
                "$2" -D "$3" -m immediate -w -t 30 stop
            fi
            rm -rf "$4"
        "#;
        let pg_ctl = self.bin.join("pg_ctl");
        let data = self.data();
        std::process::Command::new("sh")
            .args(["-c", SCRIPT, "spool-pg-watchdog", &pid.to_string()])
            .args([
                path_str(&pg_ctl)?,
                path_str(&data)?,
                path_str(self.dir.path())?,
                self.run_as.as_deref().unwrap_or(""),
            ])
            // Not the test run's output: whoever reads it would wait for the watchdog's end.
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .map(drop)
            .map_err(|e| format!("cannot start the cluster's watchdog: {e}"))
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection URL for `database` as the superuser.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{PG_USER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates an empty database and returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String, String> {
        let port = self.port.to_string();
        self.run(
            "createdb",
            &["-h", "127.0.0.1", "-p", &port, "-U", PG_USER, name],
        )?;
        Ok(self.url(name))
    }

    /// Runs one SQL statement with `psql` and returns its unaligned output.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let port = self.port.to_string();
        let out = self.run(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                PG_USER,
                "-d",
                database,
                "-tAX",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<Output, String> {
        let program = self.bin.join(tool);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        let out = cmd
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{tool} {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(out)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.port == 0 {
            return;
        }
        let data = self.data();
        if let Some(data) = data.to_str() {
            // `immediate`: nothing to flush for a throwaway cluster; the directory goes next.
            let _ = self.run(
                "pg_ctl",
                &["-D", data, "-m", "immediate", "-w", "-t", "30", "stop"],
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn path_str(p: &Path) -> Result<&str, String> {
    p.to_str()
        .ok_or_else(|| format!("{} is not valid UTF-8", p.display()))
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("cannot find a free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn chown_to(dir: &Path, user: &str) -> Result<(), String> {
    let id = |flag: &str| -> Result<u32, String> {
        let out = Command::new("id")
            .args([flag, user])
            .output()
            .map_err(|e| format!("cannot run id: {e}"))?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| format!("there is no user {user:?} to run PostgreSQL as (install Debian's postgresql package)"))
    };
    std::os::unix::fs::chown(dir, Some(id("-u")?), Some(id("-g")?))
        .map_err(|e| format!("cannot give {} to {user}: {e}", dir.display()))
}

fn find_bin() -> Result<PathBuf, String> {
    let has_initdb = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("SPOOL_PG_BIN").map(PathBuf::from) {
        return if has_initdb(&dir) {
            Ok(dir)
        } else {
            Err(format!(
                "SPOOL_PG_BIN={} has no initdb and pg_ctl",
                dir.display()
            ))
        };
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_initdb(&dir) {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let e = e.ok()?;
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| has_initdb(d))
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Ok(dir);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .find(|d| has_initdb(d))
        .ok_or_else(|| {
            "PostgreSQL's initdb was not found: install it (`apt-get install -y postgresql`) or \
             set SPOOL_PG_BIN to its bin directory"
                .to_owned()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_cluster_starts_answers_and_stops() {
        let cluster = PgCluster::start().expect("start a private PostgreSQL");
        let url = cluster.create_database("probe").expect("createdb");
        assert!(url.ends_with("/probe"), "{url}");
        assert_eq!(cluster.psql("probe", "SELECT 40 + 2").unwrap(), "42");
        let data = cluster.dir.path().join("data");
        drop(cluster);
        assert!(!data.exists(), "the cluster's files are removed");
    }

    #[test]
    fn a_watched_cluster_is_stopped_and_removed_when_its_process_is_gone() {
        let cluster = PgCluster::start().expect("start a private PostgreSQL");
        // A stand-in for the test process: the watchdog acts once it is gone.
        let mut owner = Command::new("sleep").arg("600").spawn().unwrap();
        cluster.watch(owner.id()).unwrap();
        assert_eq!(cluster.psql("postgres", "SELECT 1").unwrap(), "1");
        std::thread::sleep(Duration::from_millis(1_500));
        assert!(cluster.dir.path().exists(), "kept while its owner lives");
        owner.kill().unwrap();
        owner.wait().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while cluster.dir.path().exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            !cluster.dir.path().exists(),
            "the cluster's files are removed"
        );
        assert!(
            cluster.psql("postgres", "SELECT 1").is_err(),
            "the server is stopped"
        );
    }
}
