//! A database URL whose password never appears in logs, errors or metrics.

use crate::{StoreError, StoreResult};

/// A parsed `postgres://` URL (or key=value connection string). `Display` and `Debug` show
/// user, hosts, ports and database only.
#[derive(Clone)]
pub struct DatabaseUrl {
    config: tokio_postgres::Config,
    password: Option<String>,
}

impl DatabaseUrl {
    pub fn parse(url: &str) -> StoreResult<DatabaseUrl> {
        let config: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| {
            // The driver's message may quote the string it could not parse.
            StoreError::Invalid(format!(
                "the database URL is not a PostgreSQL connection string ({}); expected \
                 postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE",
                redact(&e.to_string(), password_in(url).as_deref())
            ))
        })?;
        if config.get_hosts().is_empty() {
            return Err(StoreError::Invalid(
                "the database URL names no host: postgres://USER@HOST[:PORT]/DATABASE".into(),
            ));
        }
        let password = config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        Ok(DatabaseUrl { config, password })
    }

    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The same server, user and password, database `name` (for tools that make databases of
    /// their own, such as `spool bench`).
    pub fn with_dbname(&self, name: &str) -> DatabaseUrl {
        let mut config = self.config.clone();
        config.dbname(name);
        DatabaseUrl {
            config,
            password: self.password.clone(),
        }
    }

    /// `text` with this URL's password replaced (for driver messages that may echo it).
    pub fn scrub(&self, text: &str) -> String {
        redact(text, self.password.as_deref())
    }
}

fn redact(text: &str, password: Option<&str>) -> String {
    match password {
        Some(p) if !p.is_empty() => text.replace(p, "********"),
        _ => text.to_owned(),
    }
}

/// The password of a URL that did not parse, found by hand, so it can still be scrubbed.
fn password_in(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let userinfo = rest.split_once('@')?.0;
    userinfo.split_once(':').map(|(_, p)| p.to_owned())
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use tokio_postgres::config::Host;
        write!(f, "postgres://")?;
        if let Some(user) = self.config.get_user() {
            write!(f, "{user}")?;
            if self.password.is_some() {
                write!(f, ":********")?;
            }
            write!(f, "@")?;
        }
        let ports = self.config.get_ports();
        for (i, host) in self.config.get_hosts().iter().enumerate() {
            if i > 0 {
                write!(f, ",")?;
            }
            match host {
                Host::Tcp(h) => write!(f, "{h}")?,
                Host::Unix(p) => write!(f, "{}", p.display())?,
            }
            if let Some(port) = ports.get(i).or(ports.first()) {
                write!(f, ":{port}")?;
            }
        }
        write!(f, "/{}", self.config.get_dbname().unwrap_or(""))
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_database_keeps_the_server_and_the_secret() {
        let url = DatabaseUrl::parse("postgres://spool:pw@db.example:5433/queue").unwrap();
        let other = url.with_dbname("bench_1");
        assert_eq!(
            other.to_string(),
            "postgres://spool:********@db.example:5433/bench_1"
        );
        assert_eq!(other.config().get_password(), Some(&b"pw"[..]));
        assert_eq!(url.config().get_dbname(), Some("queue"));
    }

    #[test]
    fn the_password_is_never_shown() {
        let url = DatabaseUrl::parse("postgres://spool:s3cr3t-pw@db.example:5433/queue").unwrap();
        assert_eq!(
            url.to_string(),
            "postgres://spool:********@db.example:5433/queue"
        );
        assert!(!format!("{url:?}").contains("s3cr3t-pw"));
        assert_eq!(
            url.scrub("auth failed for s3cr3t-pw"),
            "auth failed for ********"
        );
        let bad = DatabaseUrl::parse("postgres://spool:s3cr3t-pw@db.example:notaport/q")
            .unwrap_err()
            .to_string();
        assert!(!bad.contains("s3cr3t-pw"), "{bad}");
        assert!(bad.contains("postgres://USER"), "{bad}");
    }
}
