//! Where a backup may be written: only inside the configured `[admin] backup_dir`.
//!
//! A backup writes a file the server's user chooses the name of, so the name is checked
//! against where it really leads: the directory it would land in is resolved with every
//! symbolic link followed (`canonicalize`) and must be the backup directory or below it, and
//! the file name itself must be a plain name. `..`, an absolute path elsewhere and a link out
//! of the directory all resolve outside and are refused. Whether the file exists is the
//! store's question (it never overwrites, also not a file that appears meanwhile).

use std::path::{Component, Path, PathBuf};

/// Why a requested backup path cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("path is empty; name the backup file, e.g. \"spool-2026-01-31.db\"")]
    Empty,
    #[error(
        "path {path:?} resolves outside the backup directory {dir}; name a file inside it \
         (a relative path is taken relative to it)"
    )]
    Outside { path: String, dir: PathBuf },
    #[error("path {path:?} must end in a file name (not \"..\", \".\" or a trailing slash)")]
    NoFileName { path: String },
    #[error(
        "path {path:?}: the directory {parent} does not exist inside the backup directory; \
         create it first or write to the backup directory itself"
    )]
    NoDirectory { path: String, parent: PathBuf },
}

/// The file `requested` names, checked to lie inside `dir` (absolute, without symbolic links,
/// as `Config` resolves it). A relative `requested` is relative to `dir`.
pub fn resolve(dir: &Path, requested: &str) -> Result<PathBuf, TargetError> {
    if requested.is_empty() {
        return Err(TargetError::Empty);
    }
    let wanted = dir.join(requested);
    let outside = || TargetError::Outside {
        path: requested.to_owned(),
        dir: dir.to_owned(),
    };
    let name = match wanted.components().next_back() {
        Some(Component::Normal(name)) if !requested.ends_with('/') => name.to_owned(),
        _ => {
            return Err(TargetError::NoFileName {
                path: requested.to_owned(),
            });
        }
    };
    let parent = wanted.parent().ok_or_else(outside)?;
    let real_parent = match std::fs::canonicalize(parent) {
        Ok(p) => p,
        // A missing directory outside is still outside: say that rather than "create it".
        Err(_) if !lexically_inside(dir, parent) => return Err(outside()),
        Err(_) => {
            return Err(TargetError::NoDirectory {
                path: requested.to_owned(),
                parent: parent.to_owned(),
            });
        }
    };
    if !real_parent.starts_with(dir) {
        return Err(outside());
    }
    Ok(real_parent.join(name))
}

/// Whether `path` stays under `dir` going by its components alone (`..` taken literally).
fn lexically_inside(dir: &Path, path: &Path) -> bool {
    let mut depth: Vec<&std::ffi::OsStr> = Vec::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                depth.pop();
            }
            Component::Normal(n) => depth.push(n),
            Component::RootDir | Component::Prefix(_) => depth.clear(),
            Component::CurDir => {}
        }
    }
    let normal: PathBuf = std::iter::once(std::ffi::OsStr::new("/"))
        .chain(depth)
        .collect();
    normal.starts_with(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup_dir() -> (tempfile::TempDir, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("backups");
        std::fs::create_dir(&dir).unwrap();
        std::fs::create_dir(dir.join("daily")).unwrap();
        std::fs::create_dir(root.path().join("elsewhere")).unwrap();
        let dir = std::fs::canonicalize(dir).unwrap();
        (root, dir)
    }

    #[test]
    fn names_inside_the_directory_resolve_into_it() {
        let (_root, dir) = backup_dir();
        assert_eq!(resolve(&dir, "a.db").unwrap(), dir.join("a.db"));
        assert_eq!(resolve(&dir, "daily/a.db").unwrap(), dir.join("daily/a.db"));
        assert_eq!(resolve(&dir, "daily/../b.db").unwrap(), dir.join("b.db"));
        let absolute = dir.join("daily/c.db");
        assert_eq!(resolve(&dir, absolute.to_str().unwrap()).unwrap(), absolute);
    }

    #[test]
    fn paths_leading_outside_are_refused() {
        let (root, dir) = backup_dir();
        let elsewhere = std::fs::canonicalize(root.path().join("elsewhere")).unwrap();
        for path in [
            "../a.db".to_owned(),
            "daily/../../a.db".to_owned(),
            "../elsewhere/a.db".to_owned(),
            "../missing/a.db".to_owned(),
            "/etc/a.db".to_owned(),
            elsewhere.join("a.db").to_string_lossy().into_owned(),
        ] {
            assert!(
                matches!(resolve(&dir, &path), Err(TargetError::Outside { .. })),
                "{path}: {:?}",
                resolve(&dir, &path)
            );
        }
    }

    #[test]
    fn a_symbolic_link_out_of_the_directory_is_refused() {
        let (root, dir) = backup_dir();
        std::os::unix::fs::symlink(root.path().join("elsewhere"), dir.join("escape")).unwrap();
        std::os::unix::fs::symlink(dir.join("daily"), dir.join("inside")).unwrap();
        assert!(matches!(
            resolve(&dir, "escape/a.db"),
            Err(TargetError::Outside { .. })
        ));
        assert_eq!(
            resolve(&dir, "inside/a.db").unwrap(),
            dir.join("daily/a.db")
        );
    }

    #[test]
    fn a_path_must_name_a_file_in_an_existing_directory() {
        let (_root, dir) = backup_dir();
        assert_eq!(resolve(&dir, ""), Err(TargetError::Empty));
        for path in ["daily/", "..", ".", "daily/.."] {
            assert!(
                matches!(
                    resolve(&dir, path),
                    Err(TargetError::NoFileName { .. } | TargetError::Outside { .. })
                ),
                "{path}: {:?}",
                resolve(&dir, path)
            );
        }
        assert!(matches!(
            resolve(&dir, "weekly/a.db"),
            Err(TargetError::NoDirectory { .. })
        ));
    }
}
