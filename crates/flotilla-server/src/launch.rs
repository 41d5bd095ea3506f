//! Where and as whom managed agents may run: the work roots their working directories must lie
//! in, and the user their processes run as.
//!
//! [`LaunchPolicy`] is built once at start from `--work-root` and `--run-as`. Applying a pool
//! checks its template against it ([`LaunchPolicy::check`], a 400 when it does not fit), and
//! every start of an agent resolves it again ([`LaunchPolicy::resolve`]): a symbolic link
//! changed since the pool was applied, a user deleted, or a coordinator restarted with other
//! roots are caught there, and the agent fails to start with the reason.
//!
//! Working directories: with roots, a template's `workdir` is joined to the first root when it
//! is relative (the first root itself when left out), then canonicalized (symbolic links
//! followed, `.` and `..` removed: it must exist), and must lie inside one of the roots. The
//! agent is started in the canonical path. Without roots, nothing is checked and the workdir is
//! used as given (relative to the coordinator's own directory), as before work roots existed.
//!
//! Users: a template's `user`, else `--run-as`, else the coordinator's own user. Starting a
//! process as another user needs a coordinator running as root; one that is not refuses such a
//! pool (and refuses to start with `--run-as` naming another user).

use std::path::PathBuf;

use flotilla_core::AgentTemplate;
use flotilla_runtime::RunAs;

/// The work roots and default user of managed agents; see the module documentation.
#[derive(Debug, Clone, Default)]
pub struct LaunchPolicy {
    /// Canonical, existing directories.
    roots: Vec<PathBuf>,
    /// The `--run-as` user.
    run_as: Option<RunAs>,
}

/// Where and as whom one agent runs, resolved from its template at start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Launch {
    /// Its working directory (canonical when work roots are set).
    pub workdir: Option<PathBuf>,
    /// The user it runs as (`None`: the coordinator's own).
    pub user: Option<RunAs>,
}

impl LaunchPolicy {
    /// The policy of `--work-root` (each must be an existing directory) and `--run-as`.
    ///
    /// Fails with one line saying what to fix. A coordinator running as root with no `--run-as`
    /// logs a warning: its managed agents run as root unless their pools name a user.
    pub fn new(roots: &[PathBuf], run_as: Option<&str>) -> Result<LaunchPolicy, String> {
        let mut canonical = Vec::with_capacity(roots.len());
        for root in roots {
            let path = std::fs::canonicalize(root)
                .map_err(|e| format!("--work-root {}: {e}", root.display()))?;
            if !path.is_dir() {
                return Err(format!("--work-root {}: not a directory", root.display()));
            }
            if !canonical.contains(&path) {
                canonical.push(path);
            }
        }
        let run_as = match run_as {
            None => None,
            Some(name) => {
                let user = RunAs::lookup(name).map_err(|e| format!("--run-as: {e}"))?;
                if user.switches() && !RunAs::caller_is_root() {
                    return Err(format!(
                        "--run-as {name}: the coordinator runs as uid {}, not root, so it cannot start agents as another user; start it as root, or leave --run-as out",
                        RunAs::caller_uid()
                    ));
                }
                Some(user)
            }
        };
        if run_as.is_none() && RunAs::caller_is_root() {
            tracing::warn!(
                "the coordinator runs as root and no --run-as is set: managed agents will run as root unless their pool names a user; pass --run-as USER (e.g. --run-as nobody) to run them unprivileged"
            );
        }
        Ok(LaunchPolicy {
            roots: canonical,
            run_as,
        })
    }

    /// The work roots (canonical).
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// The `--run-as` user.
    pub fn run_as(&self) -> Option<&RunAs> {
        self.run_as.as_ref()
    }

    /// Checks a template as a pool is applied; the error is the message of a 400.
    pub fn check(&self, template: &AgentTemplate) -> Result<(), String> {
        self.resolve(template).map(drop)
    }

    /// Where and as whom an agent of this template runs now.
    pub fn resolve(&self, template: &AgentTemplate) -> Result<Launch, String> {
        Ok(Launch {
            workdir: self.workdir(template.workdir.as_deref())?,
            user: self.user(template.user.as_deref())?,
        })
    }

    /// Where an agent of this template works: as [`LaunchPolicy::resolve`] says, without
    /// looking at its user.
    pub fn workdir_of(&self, template: &AgentTemplate) -> Result<Option<PathBuf>, String> {
        self.workdir(template.workdir.as_deref())
    }

    fn workdir(&self, given: Option<&str>) -> Result<Option<PathBuf>, String> {
        let Some(first) = self.roots.first() else {
            return Ok(given.map(PathBuf::from));
        };
        let joined = match given {
            None => first.clone(),
            Some(dir) => first.join(dir),
        };
        let shown = given.unwrap_or(".");
        let canonical = std::fs::canonicalize(&joined).map_err(|e| {
            format!(
                "agent.workdir {shown:?} ({}): {e}; it must be an existing directory inside the work roots ({})",
                joined.display(),
                self.roots_text()
            )
        })?;
        if !self.roots.iter().any(|root| canonical.starts_with(root)) {
            return Err(format!(
                "agent.workdir {shown:?} resolves to {}, outside the work roots ({}); use a directory inside one of them (a relative workdir is taken from {}), or start the coordinator with another --work-root",
                canonical.display(),
                self.roots_text(),
                first.display()
            ));
        }
        if !canonical.is_dir() {
            return Err(format!(
                "agent.workdir {shown:?} ({}) is not a directory",
                canonical.display()
            ));
        }
        Ok(Some(canonical))
    }

    fn user(&self, given: Option<&str>) -> Result<Option<RunAs>, String> {
        let Some(name) = given else {
            return Ok(self.run_as.clone());
        };
        let user = RunAs::lookup(name).map_err(|e| format!("agent.user: {e}"))?;
        if user.switches() && !RunAs::caller_is_root() {
            return Err(format!(
                "agent.user {name:?}: the coordinator runs as uid {}, not root, so it can start agents only as itself; run the coordinator as root, or leave agent.user out",
                RunAs::caller_uid()
            ));
        }
        Ok(Some(user))
    }

    fn roots_text(&self) -> String {
        self.roots
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(workdir: Option<&str>) -> AgentTemplate {
        serde_json::from_value(serde_json::json!({"command": "x", "workdir": workdir}))
            .expect("a template")
    }

    #[test]
    fn workdirs_must_resolve_inside_a_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let other = dir.path().join("other");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        std::os::unix::fs::symlink(&other, root.join("escape")).unwrap();
        std::os::unix::fs::symlink(root.join("a"), root.join("inside")).unwrap();
        let policy = LaunchPolicy::new(std::slice::from_ref(&root), None).unwrap();
        let canonical_root = std::fs::canonicalize(&root).unwrap();

        // Relative: from the first root; none: the first root itself; links inside stay inside.
        let at = |w: Option<&str>| policy.resolve(&template(w)).map(|l| l.workdir);
        assert_eq!(at(Some("a/b")), Ok(Some(canonical_root.join("a/b"))));
        assert_eq!(at(None), Ok(Some(canonical_root.clone())));
        assert_eq!(at(Some("inside/b")), Ok(Some(canonical_root.join("a/b"))));
        assert_eq!(at(Some("a/b/../..")), Ok(Some(canonical_root.clone())));
        let abs = canonical_root.join("a").display().to_string();
        assert_eq!(at(Some(&abs)), Ok(Some(canonical_root.join("a"))));

        // Out: by `..`, by a symbolic link, by an absolute path; missing; the error names the roots.
        for bad in ["..", "a/../../other", "escape", "/tmp", "missing"] {
            let err = at(Some(bad)).unwrap_err();
            assert!(
                err.contains(&canonical_root.display().to_string()),
                "{bad}: {err}"
            );
        }
        assert!(
            at(Some("escape"))
                .unwrap_err()
                .contains("outside the work roots")
        );

        // Without roots: as given, unchecked.
        let open = LaunchPolicy::new(&[], None).unwrap();
        assert_eq!(
            open.resolve(&template(Some("../anything")))
                .unwrap()
                .workdir,
            Some(PathBuf::from("../anything"))
        );
        assert_eq!(open.resolve(&template(None)).unwrap().workdir, None);
    }

    #[test]
    fn roots_must_exist() {
        let err = LaunchPolicy::new(&[PathBuf::from("/no/such/root")], None).unwrap_err();
        assert!(err.starts_with("--work-root /no/such/root:"), "{err}");
        let err = LaunchPolicy::new(&[], Some("no-such-user-here")).unwrap_err();
        assert!(err.contains("no such user"), "{err}");
    }
}
