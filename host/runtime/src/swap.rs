//! Whether the kernel may swap out this process's memory: swap areas on the host, unless the
//! process's cgroup (v2) forbids it from swapping.

use std::path::{Path, PathBuf};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Whether pages of this process may end up in swap. `None` when it cannot be told (no
/// `/proc/swaps`: not Linux, or no procfs).
pub(crate) fn may_swap() -> Option<bool> {
    let swaps = std::fs::read_to_string("/proc/swaps").ok()?;
    if !swap_in_use(&swaps) {
        return Some(false);
    }
    let forbidden = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|cgroups| unified_cgroup(&cgroups).map(str::to_owned))
        .is_some_and(|cgroup| {
            cgroup_forbids_swap(Path::new(CGROUP_ROOT), &cgroup, |path| {
                std::fs::read_to_string(path).ok()
            })
        });
    Some(!forbidden)
}

/// Whether `/proc/swaps` lists any active swap area (a line after its header).
fn swap_in_use(proc_swaps: &str) -> bool {
    proc_swaps
        .lines()
        .skip(1)
        .any(|line| !line.trim().is_empty())
}

/// The cgroup v2 path in `/proc/self/cgroup` (the `0::/path` line).
fn unified_cgroup(proc_self_cgroup: &str) -> Option<&str> {
    proc_self_cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
}

/// Whether `memory.swap.max` is `0` for `cgroup` or any cgroup above it: then nothing in it is
/// ever swapped out, whatever swap the host has.
fn cgroup_forbids_swap(root: &Path, cgroup: &str, read: impl Fn(&Path) -> Option<String>) -> bool {
    let mut dir: PathBuf = root.join(cgroup.trim_start_matches('/'));
    while dir.starts_with(root) && dir != root {
        if read(&dir.join("memory.swap.max")).is_some_and(|max| max.trim() == "0") {
            return true;
        }
        if !dir.pop() {
            break;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n";

    #[test]
    fn swap_is_in_use_when_an_area_is_listed() {
        assert!(!swap_in_use(HEADER));
        assert!(!swap_in_use(""));
        assert!(!swap_in_use(&format!("{HEADER}\n")));
        assert!(swap_in_use(&format!(
            "{HEADER}/dev/zram0                              partition\t8388604\t\t0\t\t100\n"
        )));
        assert!(swap_in_use(&format!(
            "{HEADER}/swapfile                               file\t\t2097148\t\t512\t\t-2\n"
        )));
    }

    #[test]
    fn finds_the_unified_cgroup() {
        assert_eq!(
            unified_cgroup("0::/system.slice/spool.service\n"),
            Some("/system.slice/spool.service")
        );
        assert_eq!(
            unified_cgroup("12:memory:/docker/abc\n0::/docker/abc\n"),
            Some("/docker/abc")
        );
        assert_eq!(unified_cgroup("12:memory:/docker/abc\n"), None);
    }

    #[test]
    fn a_zero_swap_max_here_or_above_forbids_swap() {
        let root = Path::new("/cg");
        let files = |zero_at: &'static str| {
            move |path: &Path| {
                let dir = path.parent()?.to_str()?;
                Some(if dir == zero_at { "0\n" } else { "max\n" }.to_owned())
            }
        };
        assert!(cgroup_forbids_swap(root, "/a/b", files("/cg/a/b")));
        assert!(cgroup_forbids_swap(root, "/a/b", files("/cg/a")));
        assert!(!cgroup_forbids_swap(root, "/a/b", files("/cg/other")));
        // The root's own file is not consulted (it has none), nor anything outside the root.
        assert!(!cgroup_forbids_swap(root, "/", files("/cg")));
        assert!(!cgroup_forbids_swap(root, "/../..", files("/")));
        // No memory controller: no file, no limit.
        assert!(!cgroup_forbids_swap(root, "/a", |_: &Path| None));
    }
}
