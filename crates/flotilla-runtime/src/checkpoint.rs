//! Snapshots of an agent's working directory ("workspace"), and rolling it back to one.
//!
//! [`snapshot`] records the workspace as it is on disk; [`restore`] makes it equal to a snapshot
//! again; [`discard`] deletes a snapshot. Two kinds, chosen by where the workspace is:
//! - In a git work tree, the whole work tree (tracked files and untracked files that are not
//!   ignored, uncommitted changes included) becomes a commit on the private ref
//!   `refs/flotilla/checkpoints/LABEL`, its parent `HEAD` if there is one. Everything goes
//!   through temporary index files (`GIT_INDEX_FILE`), so the user's branch, `HEAD`, index and
//!   stash are never touched, and the ref is not a branch (`git branch` does not list it; `git
//!   log --all` does). Restoring compares the checkpoint's tree with a tree of the work tree as
//!   it is now: files changed or deleted since are checked out again, files created since are
//!   removed (with the directories they leave empty); ignored files are left alone. Nested
//!   repositories and submodules are recorded as their commit only; their files are neither
//!   saved nor touched.
//! - Elsewhere, the directory becomes a gzip'd tar file `ARCHIVE_DIR/LABEL.tar.gz` (`/` in the
//!   label replaced by `_`), written to a temporary file and renamed into place. Symlinks are
//!   stored as symlinks; sockets, FIFOs and devices are skipped (and left alone on restore).
//!   Restoring removes what is not in the archive, then extracts it; entries with absolute paths
//!   or `..` are refused before anything is changed.
//!
//! Git is run as `git` from `PATH`, never through a shell, with a fixed identity (`Flotilla
//! <flotilla@localhost>`) so no git configuration is needed. This module knows nothing of the
//! coordinator, which stores the [`WorkspaceSnapshot`]s (they serialize to JSON).

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Prefix of the refs holding git checkpoints: the ref of label `L` is `REF_PREFIX` + `L`.
pub const REF_PREFIX: &str = "refs/flotilla/checkpoints/";

/// Longest label accepted, in bytes.
pub const MAX_LABEL_LEN: usize = 200;

/// Author and committer of checkpoint commits.
const IDENTITY_NAME: &str = "Flotilla";
const IDENTITY_EMAIL: &str = "flotilla@localhost";

/// Bytes of a failed git command's stderr kept in [`CheckpointError::Git`].
const STDERR_TAIL: usize = 2000;

/// Environment variables that would point git at another repository, work tree or index than
/// the one found from the workspace; removed from every git command.
const GIT_LOCATION_VARS: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_COMMON_DIR",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
];

/// Git's mode for a gitlink (a submodule or nested repository).
const GITLINK_MODE: &[u8] = b"160000";

/// A recorded state of a workspace, as returned by [`snapshot`]. Serializes as
/// `{"kind":"git",…}` or `{"kind":"archive",…}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum WorkspaceSnapshot {
    /// A commit on a private ref of the repository holding the workspace.
    Git {
        /// Top level of the repository's work tree.
        repo: PathBuf,
        /// The checkpoint commit's id (hex).
        commit: String,
        /// The ref holding it: [`REF_PREFIX`] followed by the label.
        reference: String,
    },
    /// A `.tar.gz` file of the workspace directory.
    Archive {
        /// The archive file (absolute).
        path: PathBuf,
        /// Size of the archive file.
        bytes: u64,
        /// Regular files and symlinks in it (directories not counted).
        files: u64,
    },
}

/// What [`restore`] changed in the workspace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreReport {
    /// Files (and symlinks) written back: for git, those changed or deleted since the
    /// checkpoint; for an archive, every file in it.
    pub files_written: u64,
    /// Files (and symlinks) removed because they were not in the checkpoint.
    pub files_removed: u64,
}

/// Why a workspace could not be snapshotted, restored or discarded.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The label cannot name a checkpoint.
    #[error(
        "invalid checkpoint label {label:?}: {reason}; use 1 to 200 characters from A-Z, a-z, 0-9, '.', '_', '-' and '/'"
    )]
    InvalidLabel {
        /// The label refused.
        label: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The workspace directory does not exist (or is not a directory).
    #[error("workspace {} does not exist or is not a directory", path.display())]
    WorkdirMissing {
        /// The directory given.
        path: PathBuf,
    },
    /// The workspace is in a git repository but `git` cannot be run.
    #[error("cannot run git ({source}); install git (e.g. `apt-get install git`)")]
    GitUnavailable {
        /// The OS error from running `git`.
        #[source]
        source: io::Error,
    },
    /// A git command failed.
    #[error("`{command}` in {} failed ({status}): {stderr}", dir.display())]
    Git {
        /// The command, with its arguments.
        command: String,
        /// The directory it ran in.
        dir: PathBuf,
        /// How it exited.
        status: String,
        /// The end of what git wrote to stderr.
        stderr: String,
    },
    /// A git snapshot is to be restored into a directory outside any git work tree.
    #[error("{} is not in a git work tree: a git checkpoint cannot be restored there", workdir.display())]
    NotARepository {
        /// The directory given.
        workdir: PathBuf,
    },
    /// The snapshot's fields cannot be used (tampered with, or from another repository).
    #[error("invalid snapshot: {0}")]
    InvalidSnapshot(String),
    /// The archive directory cannot hold archives of this workspace.
    #[error("archive directory {}: {reason}", path.display())]
    InvalidArchiveDir {
        /// The directory given.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The archive could not be written.
    #[error("cannot write archive {}: {source}", path.display())]
    ArchiveWrite {
        /// The archive file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The archive could not be read (missing, truncated, not a `.tar.gz`).
    #[error("archive {} is unreadable: {source}", path.display())]
    ArchiveUnreadable {
        /// The archive file.
        path: PathBuf,
        /// The OS or format error.
        #[source]
        source: io::Error,
    },
    /// The archive holds an entry that is refused; nothing was changed.
    #[error("archive {} has a refused entry {entry:?}: {reason}", path.display())]
    ArchiveEntry {
        /// The archive file.
        path: PathBuf,
        /// The entry's path, as stored.
        entry: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// Reading or changing the workspace failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl CheckpointError {
    fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// Checks that `label` can name a checkpoint: 1 to [`MAX_LABEL_LEN`] characters from
/// `A-Z a-z 0-9 . _ - /`, made of `/`-separated non-empty parts that do not start with `.` or
/// end with `.lock` (git's rules for ref names), with no `..` and no `/` at either end.
pub fn validate_label(label: &str) -> Result<(), CheckpointError> {
    let refuse = |reason| {
        Err(CheckpointError::InvalidLabel {
            label: label.to_owned(),
            reason,
        })
    };
    if label.is_empty() {
        return refuse("it is empty");
    }
    if label.len() > MAX_LABEL_LEN {
        return refuse("it is too long");
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
    {
        return refuse("it has a character outside the allowed set");
    }
    if label.contains("..") {
        return refuse("it contains '..'");
    }
    if label.starts_with('/') || label.ends_with('/') {
        return refuse("it starts or ends with '/'");
    }
    for part in label.split('/') {
        if part.is_empty() {
            return refuse("it contains '//'");
        }
        if part.starts_with('.') {
            return refuse("a part starts with '.'");
        }
        if part.ends_with(".lock") || part.ends_with('.') {
            return refuse("a part ends with '.lock' or '.'");
        }
    }
    Ok(())
}

/// Records the workspace `workdir` as it is on disk, under `label` (checked by
/// [`validate_label`], e.g. `AGENT/CHECKPOINT-ID`).
///
/// In a git work tree, the whole work tree becomes a commit with `message` on
/// `refs/flotilla/checkpoints/LABEL` (replacing what that ref held); elsewhere the directory
/// becomes `archive_dir/LABEL.tar.gz` (`/` replaced by `_`; `archive_dir` is created if needed
/// and must not be `workdir` itself; if it is inside `workdir`, it is left out of the archive).
pub async fn snapshot(
    workdir: &Path,
    label: &str,
    archive_dir: &Path,
    message: &str,
) -> Result<WorkspaceSnapshot, CheckpointError> {
    validate_label(label)?;
    check_workdir(workdir).await?;
    match toplevel(workdir).await? {
        Some(top) => snapshot_git(&top, label, message).await,
        None => snapshot_archive(workdir, label, archive_dir).await,
    }
}

/// Makes the workspace `workdir` equal to `snap` again: files changed since are rewritten,
/// files deleted since come back, files created since are removed (for git, only files that
/// are not ignored; ignored files are left alone).
///
/// For a git snapshot this is the whole work tree of the repository holding `workdir`, which
/// must have the checkpoint commit; the user's `HEAD`, branch, index and stash are unchanged.
pub async fn restore(
    workdir: &Path,
    snap: &WorkspaceSnapshot,
) -> Result<RestoreReport, CheckpointError> {
    check_workdir(workdir).await?;
    match snap {
        WorkspaceSnapshot::Git { commit, .. } => {
            check_commit_id(commit)?;
            let Some(top) = toplevel(workdir).await? else {
                return Err(CheckpointError::NotARepository {
                    workdir: workdir.to_owned(),
                });
            };
            restore_git(&top, commit).await
        }
        WorkspaceSnapshot::Archive { path, .. } => {
            check_archive_path(path)?;
            let (workdir, path) = (workdir.to_owned(), path.clone());
            blocking(move || restore_archive(&workdir, &path)).await
        }
    }
}

/// Deletes the snapshot: its ref (only if it still points at the snapshot's commit; a newer
/// snapshot under the same label is kept), or its archive file. Succeeds if it is already gone,
/// including when the repository is.
pub async fn discard(snap: &WorkspaceSnapshot) -> Result<(), CheckpointError> {
    match snap {
        WorkspaceSnapshot::Git {
            repo,
            commit,
            reference,
        } => {
            check_commit_id(commit)?;
            check_reference(reference)?;
            if !tokio::fs::metadata(repo).await.is_ok_and(|m| m.is_dir()) {
                return Ok(());
            }
            let verify = ["rev-parse", "-q", "--verify", reference.as_str()];
            match git(repo, None, &verify, None).await {
                Ok(current) if trim_output(&current) == commit.as_bytes() => {}
                // The ref is gone, holds a newer snapshot, or the repository is gone.
                Ok(_) | Err(CheckpointError::Git { .. }) => return Ok(()),
                Err(e) => return Err(e),
            }
            git(repo, None, &["update-ref", "-d", reference, commit], None).await?;
            Ok(())
        }
        WorkspaceSnapshot::Archive { path, .. } => {
            check_archive_path(path)?;
            match tokio::fs::remove_file(path).await {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(CheckpointError::io(
                    format!("cannot delete archive {}", path.display()),
                    e,
                )),
                _ => Ok(()),
            }
        }
    }
}

async fn check_workdir(workdir: &Path) -> Result<(), CheckpointError> {
    match tokio::fs::metadata(workdir).await {
        Ok(meta) if meta.is_dir() => Ok(()),
        _ => Err(CheckpointError::WorkdirMissing {
            path: workdir.to_owned(),
        }),
    }
}

fn check_commit_id(commit: &str) -> Result<(), CheckpointError> {
    if matches!(commit.len(), 40 | 64) && commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(CheckpointError::InvalidSnapshot(format!(
            "{commit:?} is not a commit id"
        )))
    }
}

fn check_reference(reference: &str) -> Result<(), CheckpointError> {
    match reference.strip_prefix(REF_PREFIX) {
        Some(label) if validate_label(label).is_ok() => Ok(()),
        _ => Err(CheckpointError::InvalidSnapshot(format!(
            "{reference:?} is not a checkpoint ref (under {REF_PREFIX})"
        ))),
    }
}

fn check_archive_path(path: &Path) -> Result<(), CheckpointError> {
    if path.is_absolute() && path.as_os_str().as_bytes().ends_with(b".tar.gz") {
        Ok(())
    } else {
        Err(CheckpointError::InvalidSnapshot(format!(
            "{} is not an absolute path to a .tar.gz file",
            path.display()
        )))
    }
}

/// Runs blocking file work on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, CheckpointError> + Send + 'static,
) -> Result<T, CheckpointError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| CheckpointError::io("checkpoint worker thread failed", io::Error::other(e)))?
}

// ---------------------------------------------------------------------------------------------
// Git
// ---------------------------------------------------------------------------------------------

/// Runs `git ARGS` in `dir` (with `GIT_INDEX_FILE=index` if given, `stdin` written to it) and
/// returns its stdout.
async fn git(
    dir: &Path,
    index: Option<&Path>,
    args: &[&str],
    stdin: Option<Vec<u8>>,
) -> Result<Vec<u8>, CheckpointError> {
    let mut cmd = Command::new("git");
    cmd.args(args)
        .current_dir(dir)
        .env("LC_ALL", "C")
        .env("GIT_OPTIONAL_LOCKS", "0")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", IDENTITY_NAME)
        .env("GIT_AUTHOR_EMAIL", IDENTITY_EMAIL)
        .env("GIT_COMMITTER_NAME", IDENTITY_NAME)
        .env("GIT_COMMITTER_EMAIL", IDENTITY_EMAIL)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in GIT_LOCATION_VARS {
        cmd.env_remove(var);
    }
    if let Some(index) = index {
        cmd.env("GIT_INDEX_FILE", index);
    }
    let mut child = cmd
        .spawn()
        .map_err(|source| CheckpointError::GitUnavailable { source })?;
    let input = child.stdin.take();
    let feed = async move {
        if let (Some(mut pipe), Some(data)) = (input, stdin) {
            // A failed write shows as git's own error (it read a truncated list).
            let _ = pipe.write_all(&data).await;
        }
    };
    let (_, output) = tokio::join!(feed, child.wait_with_output());
    let output = output.map_err(|source| CheckpointError::GitUnavailable { source })?;
    if output.status.success() {
        return Ok(output.stdout);
    }
    let tail = &output.stderr[output.stderr.len().saturating_sub(STDERR_TAIL)..];
    Err(CheckpointError::Git {
        command: format!("git {}", args.join(" ")),
        dir: dir.to_owned(),
        status: output.status.to_string(),
        stderr: String::from_utf8_lossy(tail).trim().to_owned(),
    })
}

/// Stdout of a git command that prints one value, without the line end.
fn trim_output(out: &[u8]) -> &[u8] {
    out.trim_ascii_end()
}

fn output_string(out: &[u8]) -> String {
    String::from_utf8_lossy(trim_output(out)).into_owned()
}

fn output_path(out: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(out.strip_suffix(b"\n").unwrap_or(out)))
}

/// The top level of the git work tree holding `workdir`, or `None` if it is in none.
async fn toplevel(workdir: &Path) -> Result<Option<PathBuf>, CheckpointError> {
    match git(workdir, None, &["rev-parse", "--show-toplevel"], None).await {
        Ok(out) => Ok(Some(output_path(&out))),
        Err(CheckpointError::Git { stderr, .. }) if stderr.contains("not a git repository") => {
            Ok(None)
        }
        Err(CheckpointError::GitUnavailable { source }) => {
            // Without git, a directory that looks like part of a repository must not be
            // archived: restoring the archive would roll back `.git` too.
            if workdir.ancestors().any(|dir| dir.join(".git").exists()) {
                Err(CheckpointError::GitUnavailable { source })
            } else {
                Ok(None)
            }
        }
        Err(e) => Err(e),
    }
}

/// The commit `HEAD` points at, or `None` in a repository with no commits yet.
async fn head_commit(top: &Path) -> Result<Option<String>, CheckpointError> {
    match git(
        top,
        None,
        &["rev-parse", "-q", "--verify", "HEAD^{commit}"],
        None,
    )
    .await
    {
        Ok(out) => Ok(Some(output_string(&out))),
        // `-q --verify` fails silently when HEAD does not resolve.
        Err(CheckpointError::Git { stderr, .. }) if stderr.is_empty() => Ok(None),
        Err(e) => Err(e),
    }
}

/// A temporary index file in the repository's git directory, deleted when dropped.
struct TempIndex {
    path: PathBuf,
}

impl TempIndex {
    async fn new(top: &Path) -> Result<Self, CheckpointError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let git_dir =
            output_path(&git(top, None, &["rev-parse", "--absolute-git-dir"], None).await?);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "flotilla-index-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        Ok(Self {
            path: git_dir.join(name),
        })
    }
}

impl Drop for TempIndex {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
        let mut lock = self.path.clone().into_os_string();
        lock.push(".lock");
        let _ = fs::remove_file(lock);
    }
}

/// Writes the work tree as it is on disk (tracked, and untracked but not ignored) as a tree
/// object, through a temporary index; returns the tree's id.
async fn worktree_tree(top: &Path, head: Option<&str>) -> Result<String, CheckpointError> {
    let index = TempIndex::new(top).await?;
    let index = Some(index.path.as_path());
    if let Some(head) = head {
        git(top, index, &["read-tree", head], None).await?;
    }
    git(
        top,
        index,
        &[
            "-c",
            "advice.addEmbeddedRepo=false",
            "-c",
            "core.safecrlf=false",
            "add",
            "-A",
        ],
        None,
    )
    .await?;
    Ok(output_string(
        &git(top, index, &["write-tree"], None).await?,
    ))
}

async fn snapshot_git(
    top: &Path,
    label: &str,
    message: &str,
) -> Result<WorkspaceSnapshot, CheckpointError> {
    let head = head_commit(top).await?;
    let tree = worktree_tree(top, head.as_deref()).await?;
    let mut args = vec!["commit-tree", "--no-gpg-sign", "-m", message];
    if let Some(head) = &head {
        args.extend(["-p", head]);
    }
    args.push(&tree);
    let commit = output_string(&git(top, None, &args, None).await?);
    let reference = format!("{REF_PREFIX}{label}");
    let reflog = format!("flotilla checkpoint {label}");
    git(
        top,
        None,
        &["update-ref", "-m", &reflog, &reference, &commit],
        None,
    )
    .await?;
    Ok(WorkspaceSnapshot::Git {
        repo: top.to_owned(),
        commit,
        reference,
    })
}

async fn restore_git(top: &Path, commit: &str) -> Result<RestoreReport, CheckpointError> {
    let commit_tree = format!("{commit}^{{tree}}");
    let checkpoint_tree = match git(
        top,
        None,
        &["rev-parse", "-q", "--verify", &commit_tree],
        None,
    )
    .await
    {
        Ok(out) => output_string(&out),
        Err(CheckpointError::Git { .. }) => {
            return Err(CheckpointError::InvalidSnapshot(format!(
                "commit {commit} is not in the repository at {}",
                top.display()
            )));
        }
        Err(e) => return Err(e),
    };
    let head = head_commit(top).await?;
    let current_tree = worktree_tree(top, head.as_deref()).await?;
    if current_tree == checkpoint_tree {
        return Ok(RestoreReport::default());
    }
    let diff = git(
        top,
        None,
        &[
            "diff-tree",
            "-r",
            "-z",
            "--no-renames",
            &checkpoint_tree,
            &current_tree,
        ],
        None,
    )
    .await?;
    let changes = parse_raw_diff(&diff);

    // Files created since the checkpoint go first, so that a path they block (a file where
    // the checkpoint has a directory) is free when the checkpoint's files are written.
    let mut report = RestoreReport::default();
    let mut removed_dirs = Vec::new();
    for change in changes.iter().filter(|c| c.status == b'A') {
        if change.new_mode == GITLINK_MODE {
            continue;
        }
        let path = top.join(OsStr::from_bytes(change.path));
        match fs::symlink_metadata(&path) {
            Ok(meta) if !meta.is_dir() => {
                fs::remove_file(&path).map_err(|e| {
                    CheckpointError::io(format!("cannot remove {}", path.display()), e)
                })?;
                report.files_removed += 1;
                if let Some(parent) = path.parent() {
                    removed_dirs.push(parent.to_owned());
                }
            }
            _ => {}
        }
    }
    prune_empty_dirs(top, removed_dirs);

    let mut to_write = Vec::new();
    for change in &changes {
        if matches!(change.status, b'M' | b'T' | b'D') && change.old_mode != GITLINK_MODE {
            to_write.extend_from_slice(change.path);
            to_write.push(0);
            report.files_written += 1;
        }
    }
    if !to_write.is_empty() {
        let index = TempIndex::new(top).await?;
        let index = Some(index.path.as_path());
        git(top, index, &["read-tree", commit], None).await?;
        git(
            top,
            index,
            &["checkout-index", "-f", "-z", "--stdin"],
            Some(to_write),
        )
        .await?;
    }
    Ok(report)
}

/// One line of `git diff-tree -r -z` raw output.
struct RawChange<'a> {
    old_mode: &'a [u8],
    new_mode: &'a [u8],
    status: u8,
    path: &'a [u8],
}

/// Parses `:OLDMODE NEWMODE OLDID NEWID STATUS\0PATH\0…` (no renames or copies).
fn parse_raw_diff(out: &[u8]) -> Vec<RawChange<'_>> {
    let mut changes = Vec::new();
    let mut fields = out.split(|&b| b == 0);
    while let Some(meta) = fields.next() {
        let Some(meta) = meta.strip_prefix(b":") else {
            continue;
        };
        let Some(path) = fields.next() else { break };
        let parts: Vec<&[u8]> = meta.split(|&b| b == b' ').collect();
        if let [old_mode, new_mode, _, _, status, ..] = parts[..]
            && let Some(&status) = status.first()
        {
            changes.push(RawChange {
                old_mode,
                new_mode,
                status,
                path,
            });
        }
    }
    changes
}

/// Removes `dirs` and their ancestors below `top` while they are empty.
fn prune_empty_dirs(top: &Path, mut dirs: Vec<PathBuf>) {
    // Deepest first, so a parent is tried after its children.
    dirs.sort_by_key(|dir| std::cmp::Reverse(dir.components().count()));
    dirs.dedup();
    for dir in dirs {
        let mut dir = dir.as_path();
        while dir != top && dir.starts_with(top) && fs::remove_dir(dir).is_ok() {
            match dir.parent() {
                Some(parent) => dir = parent,
                None => break,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Archives
// ---------------------------------------------------------------------------------------------

async fn snapshot_archive(
    workdir: &Path,
    label: &str,
    archive_dir: &Path,
) -> Result<WorkspaceSnapshot, CheckpointError> {
    let archive_dir = std::path::absolute(archive_dir).map_err(|e| {
        CheckpointError::io(format!("archive directory {}", archive_dir.display()), e)
    })?;
    let path = archive_dir.join(format!("{}.tar.gz", label.replace('/', "_")));
    let workdir = workdir.to_owned();
    blocking(move || {
        fs::create_dir_all(&archive_dir).map_err(|source| CheckpointError::ArchiveWrite {
            path: path.clone(),
            source,
        })?;
        let root = canonical(&workdir)?;
        let archive_dir = canonical(&archive_dir)?;
        if archive_dir == root {
            return Err(CheckpointError::InvalidArchiveDir {
                path: archive_dir,
                reason: "it is the workspace itself; use another directory",
            });
        }
        let exclude = archive_dir
            .starts_with(&root)
            .then_some(archive_dir.as_path());
        let files = write_archive(&root, exclude, &path)?;
        let bytes = fs::metadata(&path)
            .map_err(|source| CheckpointError::ArchiveWrite {
                path: path.clone(),
                source,
            })?
            .len();
        Ok(WorkspaceSnapshot::Archive { path, bytes, files })
    })
    .await
}

fn canonical(path: &Path) -> Result<PathBuf, CheckpointError> {
    fs::canonicalize(path)
        .map_err(|e| CheckpointError::io(format!("cannot resolve {}", path.display()), e))
}

/// Writes the tree under `root` (minus `exclude`) to `path`, through a temporary file renamed
/// into place; returns the number of files and symlinks archived.
fn write_archive(root: &Path, exclude: Option<&Path>, path: &Path) -> Result<u64, CheckpointError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let write_err = |source| CheckpointError::ArchiveWrite {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let file = File::create(&temp).map_err(write_err)?;
        let mut builder = tar::Builder::new(GzEncoder::new(file, Compression::default()));
        builder.follow_symlinks(false);
        let files = append_tree(&mut builder, root, exclude)?;
        let file = builder
            .into_inner()
            .and_then(GzEncoder::finish)
            .map_err(write_err)?;
        file.sync_all().map_err(write_err)?;
        fs::rename(&temp, path).map_err(write_err)?;
        if let Ok(dir) = File::open(dir) {
            let _ = dir.sync_all();
        }
        Ok(files)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// The entries of `dir`, sorted by name.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, CheckpointError> {
    let read_err = |e| CheckpointError::io(format!("cannot read directory {}", dir.display()), e);
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_err)? {
        paths.push(entry.map_err(read_err)?.path());
    }
    paths.sort();
    Ok(paths)
}

/// Appends everything under `root` but `exclude`, symlinks as symlinks, to `builder`.
fn append_tree<W: Write>(
    builder: &mut tar::Builder<W>,
    root: &Path,
    exclude: Option<&Path>,
) -> Result<u64, CheckpointError> {
    let mut files = 0;
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let mut subdirs = Vec::new();
        for full in sorted_entries(&dir)? {
            if Some(full.as_path()) == exclude {
                continue;
            }
            let Ok(rel) = full.strip_prefix(root) else {
                continue;
            };
            let read_err = |e| CheckpointError::io(format!("cannot archive {}", full.display()), e);
            let meta = match fs::symlink_metadata(&full) {
                Ok(meta) => meta,
                // Deleted while we walked: it is not part of the snapshot.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(read_err(e)),
            };
            let mut header = tar::Header::new_gnu();
            header.set_metadata(&meta);
            let kind = meta.file_type();
            if kind.is_dir() {
                header.set_size(0);
                builder
                    .append_data(&mut header, rel, io::empty())
                    .map_err(read_err)?;
                subdirs.push(full);
            } else if kind.is_file() {
                let mut file = match File::open(&full) {
                    Ok(file) => file,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(read_err(e)),
                };
                let meta = file.metadata().map_err(read_err)?;
                header.set_metadata(&meta);
                // Exactly the size in the header, even if the file changes as it is read.
                let len = meta.len();
                let data = (&mut file).take(len).chain(io::repeat(0)).take(len);
                builder
                    .append_data(&mut header, rel, data)
                    .map_err(read_err)?;
                files += 1;
            } else if kind.is_symlink() {
                let target = match fs::read_link(&full) {
                    Ok(target) => target,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(read_err(e)),
                };
                header.set_size(0);
                builder
                    .append_link(&mut header, rel, target)
                    .map_err(read_err)?;
                files += 1;
            } else {
                tracing::debug!(path = %full.display(), "checkpoint: skipping special file");
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(files)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryKind {
    Dir,
    File,
    Symlink,
}

fn open_archive(path: &Path) -> Result<tar::Archive<GzDecoder<File>>, CheckpointError> {
    let file = File::open(path).map_err(|source| CheckpointError::ArchiveUnreadable {
        path: path.to_owned(),
        source,
    })?;
    Ok(tar::Archive::new(GzDecoder::new(file)))
}

/// Reads the archive's entries (relative paths and kinds), refusing unsafe or unsupported
/// ones.
fn list_archive(path: &Path) -> Result<HashMap<PathBuf, EntryKind>, CheckpointError> {
    let unreadable = |source| CheckpointError::ArchiveUnreadable {
        path: path.to_owned(),
        source,
    };
    let mut archive = open_archive(path)?;
    let mut listing = HashMap::new();
    for entry in archive.entries().map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        let name = entry.path().map_err(unreadable)?;
        let refuse = |reason| CheckpointError::ArchiveEntry {
            path: path.to_owned(),
            entry: name.to_string_lossy().into_owned(),
            reason,
        };
        let mut rel = PathBuf::new();
        for part in name.components() {
            match part {
                Component::Normal(part) => rel.push(part),
                Component::CurDir => {}
                Component::RootDir | Component::Prefix(_) => {
                    return Err(refuse("absolute path"));
                }
                Component::ParentDir => return Err(refuse("path with '..'")),
            }
        }
        let kind = match entry.header().entry_type() {
            tar::EntryType::Directory => EntryKind::Dir,
            tar::EntryType::Regular | tar::EntryType::Continuous => EntryKind::File,
            tar::EntryType::Symlink => EntryKind::Symlink,
            _ => return Err(refuse("not a file, directory or symlink")),
        };
        if rel.as_os_str().is_empty() {
            if kind == EntryKind::Dir {
                continue;
            }
            return Err(refuse("empty path"));
        }
        listing.insert(rel, kind);
    }
    Ok(listing)
}

fn restore_archive(workdir: &Path, archive: &Path) -> Result<RestoreReport, CheckpointError> {
    let listing = list_archive(archive)?;
    let root = canonical(workdir)?;
    // The directory of the archive, if in the workspace, was left out of it: keep it.
    let exclude = fs::canonicalize(archive)
        .ok()
        .and_then(|p| p.parent().map(Path::to_owned))
        .filter(|dir| dir.starts_with(&root) && *dir != root);

    let mut dirs: HashSet<&Path> = HashSet::new();
    for (rel, kind) in &listing {
        if *kind == EntryKind::Dir {
            dirs.insert(rel);
        }
        dirs.extend(
            rel.ancestors()
                .skip(1)
                .filter(|a| !a.as_os_str().is_empty()),
        );
    }
    let files_removed = remove_extraneous(&root, &listing, &dirs, exclude.as_deref())?;

    let mut archive_reader = open_archive(archive)?;
    archive_reader.set_overwrite(true);
    archive_reader.unpack(&root).map_err(|e| {
        CheckpointError::io(
            format!(
                "cannot extract {} into {}",
                archive.display(),
                root.display()
            ),
            e,
        )
    })?;
    let files_written = listing
        .values()
        .filter(|kind| **kind != EntryKind::Dir)
        .count() as u64;
    Ok(RestoreReport {
        files_written,
        files_removed,
    })
}

/// Removes what is under `root` but not in the archive (or of another kind: a directory where
/// the archive has a file, or the reverse); returns the number of files and symlinks removed.
fn remove_extraneous(
    root: &Path,
    listing: &HashMap<PathBuf, EntryKind>,
    dirs: &HashSet<&Path>,
    exclude: Option<&Path>,
) -> Result<u64, CheckpointError> {
    let mut removed = 0;
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for full in sorted_entries(&dir)? {
            if Some(full.as_path()) == exclude {
                continue;
            }
            let Ok(rel) = full.strip_prefix(root) else {
                continue;
            };
            let remove_err =
                |e| CheckpointError::io(format!("cannot remove {}", full.display()), e);
            let meta = match fs::symlink_metadata(&full) {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(remove_err(e)),
            };
            let kind = meta.file_type();
            if kind.is_dir() {
                if dirs.contains(rel) || exclude.is_some_and(|e| e.starts_with(&full)) {
                    stack.push(full);
                } else {
                    removed += count_files(&full)?;
                    fs::remove_dir_all(&full).map_err(remove_err)?;
                }
            } else if kind.is_file() || kind.is_symlink() {
                // A file where the archive has a file or symlink is replaced by extraction.
                if !matches!(listing.get(rel), Some(EntryKind::File | EntryKind::Symlink)) {
                    fs::remove_file(&full).map_err(remove_err)?;
                    removed += 1;
                }
            }
        }
    }
    Ok(removed)
}

/// Files and symlinks under `dir`, symlinks not followed.
fn count_files(dir: &Path) -> Result<u64, CheckpointError> {
    let mut count = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for full in sorted_entries(&dir)? {
            match fs::symlink_metadata(&full) {
                Ok(meta) if meta.is_dir() => stack.push(full),
                Ok(meta) if meta.is_file() || meta.file_type().is_symlink() => count += 1,
                _ => {}
            }
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::process::Command as StdCommand;

    /// Runs the real `git` in `dir`, isolated from the user's configuration; asserts success.
    fn run_git(dir: &Path, args: &[&str]) -> String {
        let out = git_cmd(dir, args);
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 git output")
    }

    fn git_cmd(dir: &Path, args: &[&str]) -> std::process::Output {
        StdCommand::new("git")
            .args([
                "-c",
                "commit.gpgsign=false",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_OPTIONAL_LOCKS", "0")
            .env("GIT_AUTHOR_NAME", "Tester")
            .env("GIT_AUTHOR_EMAIL", "tester@example.com")
            .env("GIT_COMMITTER_NAME", "Tester")
            .env("GIT_COMMITTER_EMAIL", "tester@example.com")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .env_remove("GIT_INDEX_FILE")
            .output()
            .expect("run git")
    }

    fn write(path: &Path, contents: &str) {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(path, contents).unwrap();
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    /// What must not change in the user's repository, the index file's bytes included.
    #[derive(Debug, PartialEq, Eq)]
    struct RepoState {
        head: String,
        symbolic_head: String,
        staged: String,
        stash: String,
        index: Option<Vec<u8>>,
    }

    fn repo_state(repo: &Path) -> RepoState {
        RepoState {
            head: String::from_utf8_lossy(&git_cmd(repo, &["rev-parse", "HEAD"]).stdout)
                .into_owned(),
            symbolic_head: run_git(repo, &["symbolic-ref", "HEAD"]),
            staged: run_git(repo, &["diff", "--cached"]),
            stash: run_git(repo, &["stash", "list"]),
            index: fs::read(repo.join(".git/index")).ok(),
        }
    }

    #[tokio::test]
    async fn git_snapshot_and_restore_leave_the_users_repository_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        let archives = tmp.path().join("archives");
        fs::create_dir(&repo).unwrap();
        run_git(&repo, &["init", "-q"]);
        write(&repo.join("a.txt"), "one\n");
        write(&repo.join("b.txt"), "bee\n");
        write(&repo.join("c.txt"), "sea\n");
        write(&repo.join(".gitignore"), "*.log\n");
        run_git(&repo, &["add", "."]);
        run_git(&repo, &["commit", "-q", "-m", "init"]);
        // A stash entry.
        write(&repo.join("a.txt"), "stashed\n");
        run_git(&repo, &["stash", "-q"]);
        assert_eq!(read(&repo.join("a.txt")), "one\n");
        // An unstaged change, a staged change, an untracked file, an ignored file.
        write(&repo.join("a.txt"), "one\ntwo\n");
        write(&repo.join("b.txt"), "bee staged\n");
        run_git(&repo, &["add", "b.txt"]);
        write(&repo.join("dir/u.txt"), "untracked\n");
        write(&repo.join("debug.log"), "ignored v1\n");

        let before = repo_state(&repo);
        assert!(before.staged.contains("+bee staged"), "{}", before.staged);
        assert!(before.stash.contains("stash@{0}"), "{}", before.stash);
        let status_before = run_git(&repo, &["status", "--porcelain"]);

        let snap = snapshot(&repo, "coder-1/ck-1", &archives, "checkpoint 1")
            .await
            .unwrap();
        assert_eq!(repo_state(&repo), before);
        assert!(!archives.exists(), "no archive for a git workspace");
        let WorkspaceSnapshot::Git {
            repo: snap_repo,
            commit,
            reference,
        } = &snap
        else {
            panic!("expected a git snapshot, got {snap:?}");
        };
        assert_eq!(*snap_repo, fs::canonicalize(&repo).unwrap());
        assert_eq!(reference, "refs/flotilla/checkpoints/coder-1/ck-1");
        assert_eq!(run_git(&repo, &["rev-parse", reference]).trim(), commit);
        // The commit holds the work tree as it was on disk, its parent is HEAD.
        assert_eq!(
            run_git(&repo, &["ls-tree", "-r", "--name-only", commit]),
            ".gitignore\na.txt\nb.txt\nc.txt\ndir/u.txt\n"
        );
        assert_eq!(
            run_git(&repo, &["show", &format!("{commit}:a.txt")]),
            "one\ntwo\n"
        );
        assert_eq!(
            run_git(&repo, &["rev-parse", &format!("{commit}^")]),
            before.head
        );
        assert_eq!(
            run_git(&repo, &["log", "-1", "--format=%an <%ae>|%s", commit]),
            "Flotilla <flotilla@localhost>|checkpoint 1\n"
        );
        // A private ref: `git log --all` sees it, `git branch -a` does not.
        assert!(run_git(&repo, &["log", "--all", "--format=%H"]).contains(commit.as_str()));
        let branches = run_git(&repo, &["branch", "-a"]);
        assert_eq!(branches, "* main\n");

        // The agent works on: changes, deletes, creates.
        write(&repo.join("a.txt"), "rewritten\n");
        fs::remove_file(repo.join("b.txt")).unwrap();
        fs::remove_file(repo.join("c.txt")).unwrap();
        write(&repo.join("dir/u.txt"), "changed\n");
        write(&repo.join("new.txt"), "new\n");
        write(&repo.join("newdir/deep/x.txt"), "x\n");
        write(&repo.join("debug.log"), "ignored v2\n");
        write(&repo.join("other.log"), "ignored new\n");

        let report = restore(&repo, &snap).await.unwrap();
        assert_eq!(
            report,
            RestoreReport {
                files_written: 4,
                files_removed: 2
            }
        );
        assert_eq!(read(&repo.join("a.txt")), "one\ntwo\n");
        assert_eq!(read(&repo.join("b.txt")), "bee staged\n");
        assert_eq!(read(&repo.join("c.txt")), "sea\n");
        assert_eq!(read(&repo.join("dir/u.txt")), "untracked\n");
        assert!(!repo.join("new.txt").exists());
        assert!(!repo.join("newdir").exists(), "emptied directories removed");
        assert_eq!(read(&repo.join("debug.log")), "ignored v2\n");
        assert_eq!(read(&repo.join("other.log")), "ignored new\n");
        assert_eq!(repo_state(&repo), before);
        assert_eq!(run_git(&repo, &["status", "--porcelain"]), status_before);

        // Restoring again changes nothing.
        assert_eq!(
            restore(&repo, &snap).await.unwrap(),
            RestoreReport::default()
        );
        assert_eq!(read(&repo.join("a.txt")), "one\ntwo\n");
    }

    #[tokio::test]
    async fn git_repository_without_commits() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        fs::create_dir(&repo).unwrap();
        run_git(&repo, &["init", "-q"]);
        write(&repo.join("sub/keep.txt"), "keep\n");
        write(&repo.join("top.txt"), "top\n");

        // From a subdirectory: the whole work tree is recorded.
        let snap = snapshot(&repo.join("sub"), "agent/first", &tmp.path().join("a"), "")
            .await
            .unwrap();
        let WorkspaceSnapshot::Git {
            repo: top, commit, ..
        } = &snap
        else {
            panic!("expected a git snapshot, got {snap:?}");
        };
        assert_eq!(*top, fs::canonicalize(&repo).unwrap());
        assert_eq!(
            run_git(&repo, &["ls-tree", "-r", "--name-only", commit]),
            "sub/keep.txt\ntop.txt\n"
        );
        assert!(
            !git_cmd(
                &repo,
                &["rev-parse", "--verify", "-q", &format!("{commit}^")]
            )
            .status
            .success(),
            "a root commit"
        );
        assert!(
            !git_cmd(&repo, &["rev-parse", "--verify", "-q", "HEAD"])
                .status
                .success()
        );
        assert!(!repo.join(".git/index").exists(), "no index was created");

        write(&repo.join("top.txt"), "changed\n");
        fs::remove_file(repo.join("sub/keep.txt")).unwrap();
        write(&repo.join("extra.txt"), "extra\n");
        let report = restore(&repo.join("sub"), &snap).await.unwrap();
        assert_eq!(
            report,
            RestoreReport {
                files_written: 2,
                files_removed: 1
            }
        );
        assert_eq!(read(&repo.join("top.txt")), "top\n");
        assert_eq!(read(&repo.join("sub/keep.txt")), "keep\n");
        assert!(!repo.join("extra.txt").exists());
        assert!(
            !git_cmd(&repo, &["rev-parse", "--verify", "-q", "HEAD"])
                .status
                .success()
        );
        assert!(!repo.join(".git/index").exists());
    }

    #[tokio::test]
    async fn discard_deletes_the_ref_and_is_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path();
        run_git(repo, &["init", "-q"]);
        write(&repo.join("f.txt"), "v1\n");
        run_git(repo, &["add", "."]);
        run_git(repo, &["commit", "-q", "-m", "init"]);
        let archives = repo.join("unused");

        let first = snapshot(repo, "a/ck", &archives, "one").await.unwrap();
        let kept = snapshot(repo, "a/kept", &archives, "two").await.unwrap();
        assert_eq!(
            run_git(
                repo,
                &["for-each-ref", "--format=%(refname)", "refs/flotilla"]
            ),
            "refs/flotilla/checkpoints/a/ck\nrefs/flotilla/checkpoints/a/kept\n"
        );
        discard(&first).await.unwrap();
        assert_eq!(
            run_git(
                repo,
                &["for-each-ref", "--format=%(refname)", "refs/flotilla"]
            ),
            "refs/flotilla/checkpoints/a/kept\n"
        );
        discard(&first).await.unwrap();

        // A newer snapshot under the same label is not deleted by discarding the older one.
        write(&repo.join("f.txt"), "v2\n");
        let newer = snapshot(repo, "a/kept", &archives, "three").await.unwrap();
        assert_ne!(newer, kept);
        discard(&kept).await.unwrap();
        let WorkspaceSnapshot::Git { commit, .. } = &newer else {
            panic!("expected a git snapshot");
        };
        assert_eq!(
            run_git(repo, &["rev-parse", "refs/flotilla/checkpoints/a/kept"]).trim(),
            commit
        );
        discard(&newer).await.unwrap();
        assert_eq!(
            run_git(repo, &["for-each-ref", "refs/flotilla"]),
            "",
            "no checkpoint ref left"
        );

        // A snapshot naming another ref is refused, and the branch stays.
        let forged = WorkspaceSnapshot::Git {
            repo: repo.to_owned(),
            commit: run_git(repo, &["rev-parse", "HEAD"]).trim().to_owned(),
            reference: "refs/heads/main".into(),
        };
        let err = discard(&forged).await.unwrap_err();
        assert!(matches!(err, CheckpointError::InvalidSnapshot(_)), "{err}");
        assert!(
            git_cmd(repo, &["rev-parse", "--verify", "-q", "refs/heads/main"])
                .status
                .success()
        );
        // A commit that is not in the repository cannot be restored.
        let gone = WorkspaceSnapshot::Git {
            repo: repo.to_owned(),
            commit: "0123456789abcdef0123456789abcdef01234567".into(),
            reference: "refs/flotilla/checkpoints/x".into(),
        };
        let err = restore(repo, &gone).await.unwrap_err();
        assert!(matches!(err, CheckpointError::InvalidSnapshot(_)), "{err}");
    }

    #[tokio::test]
    async fn archive_snapshot_restore_and_discard() {
        let tmp = tempfile::tempdir().unwrap();
        let work = tmp.path().join("work");
        let archives = tmp.path().join("archives");
        write(&work.join("top.txt"), "top\n");
        write(&work.join("nested/a/b.txt"), "deep\n");
        write(&work.join("script.sh"), "#!/bin/sh\n");
        fs::set_permissions(work.join("script.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir_all(work.join("nested/empty")).unwrap();
        symlink("nested/a/b.txt", work.join("link")).unwrap();

        let snap = snapshot(&work, "agent-7/ck-1", &archives, "ignored")
            .await
            .unwrap();
        let WorkspaceSnapshot::Archive { path, bytes, files } = &snap else {
            panic!("expected an archive snapshot, got {snap:?}");
        };
        assert_eq!(*path, archives.join("agent-7_ck-1.tar.gz"));
        assert_eq!(*bytes, fs::metadata(path).unwrap().len());
        assert_eq!(*files, 4);
        assert_eq!(
            fs::read_dir(&archives).unwrap().count(),
            1,
            "no temporary file left"
        );
        let listing = list_archive(path).unwrap();
        assert_eq!(listing.get(Path::new("link")), Some(&EntryKind::Symlink));
        assert_eq!(
            listing.get(Path::new("nested/empty")),
            Some(&EntryKind::Dir)
        );

        write(&work.join("top.txt"), "changed\n");
        fs::remove_file(work.join("nested/a/b.txt")).unwrap();
        fs::remove_file(work.join("link")).unwrap();
        write(&work.join("link"), "now a file\n");
        fs::remove_dir(work.join("nested/empty")).unwrap();
        write(&work.join("new.txt"), "new\n");
        write(&work.join("newdir/x/y.txt"), "y\n");
        fs::set_permissions(work.join("script.sh"), fs::Permissions::from_mode(0o644)).unwrap();

        let report = restore(&work, &snap).await.unwrap();
        assert_eq!(
            report,
            RestoreReport {
                files_written: 4,
                files_removed: 2
            }
        );
        assert_eq!(read(&work.join("top.txt")), "top\n");
        assert_eq!(read(&work.join("nested/a/b.txt")), "deep\n");
        assert!(work.join("nested/empty").is_dir());
        assert!(
            fs::symlink_metadata(work.join("link"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            fs::read_link(work.join("link")).unwrap(),
            Path::new("nested/a/b.txt")
        );
        assert_eq!(read(&work.join("link")), "deep\n");
        assert_eq!(
            fs::metadata(work.join("script.sh"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o755
        );
        assert!(!work.join("new.txt").exists());
        assert!(!work.join("newdir").exists());
        let mut names: Vec<_> = fs::read_dir(&work)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["link", "nested", "script.sh", "top.txt"]);

        discard(&snap).await.unwrap();
        assert!(!path.exists());
        discard(&snap).await.unwrap();
        let err = restore(&work, &snap).await.unwrap_err();
        assert!(
            matches!(err, CheckpointError::ArchiveUnreadable { .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn archive_directory_inside_the_workspace_is_left_out_and_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let work = tmp.path();
        write(&work.join("f.txt"), "f\n");
        let archives = work.join("state/checkpoints");
        let snap = snapshot(work, "one", &archives, "").await.unwrap();
        let WorkspaceSnapshot::Archive { path, files, .. } = &snap else {
            panic!("expected an archive snapshot");
        };
        assert_eq!(*files, 1);
        let listing = list_archive(path).unwrap();
        assert!(
            listing.keys().all(|p| !p.starts_with("state/checkpoints")),
            "{listing:?}"
        );
        write(&work.join("f.txt"), "g\n");
        restore(work, &snap).await.unwrap();
        assert_eq!(read(&work.join("f.txt")), "f\n");
        assert!(path.exists(), "the archive survives its own restore");

        let err = snapshot(work, "two", work, "").await.unwrap_err();
        assert!(
            matches!(err, CheckpointError::InvalidArchiveDir { .. }),
            "{err}"
        );
    }

    /// Writes a `.tar.gz` holding one file entry named `name`, bypassing the tar crate's checks.
    fn raw_archive(path: &Path, name: &[u8]) {
        let mut header = tar::Header::new_old();
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_size(5);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        let mut builder = tar::Builder::new(GzEncoder::new(
            File::create(path).unwrap(),
            Compression::default(),
        ));
        builder.append(&header, &b"evil\n"[..]).unwrap();
        builder.into_inner().unwrap().finish().unwrap();
    }

    #[tokio::test]
    async fn archive_with_unsafe_paths_is_refused_before_any_change() {
        let tmp = tempfile::tempdir().unwrap();
        let work = tmp.path().join("work");
        write(&work.join("keep.txt"), "keep\n");
        for (i, name) in [
            &b"../escaped.txt"[..],
            b"/tmp/absolute.txt",
            b"a/../../x.txt",
        ]
        .into_iter()
        .enumerate()
        {
            let path = tmp.path().join(format!("bad{i}.tar.gz"));
            raw_archive(&path, name);
            let snap = WorkspaceSnapshot::Archive {
                path,
                bytes: 0,
                files: 1,
            };
            let err = restore(&work, &snap).await.unwrap_err();
            assert!(matches!(err, CheckpointError::ArchiveEntry { .. }), "{err}");
        }
        assert!(!tmp.path().join("escaped.txt").exists());
        assert_eq!(read(&work.join("keep.txt")), "keep\n", "nothing removed");

        let garbage = tmp.path().join("garbage.tar.gz");
        fs::write(&garbage, b"not gzip at all").unwrap();
        let snap = WorkspaceSnapshot::Archive {
            path: garbage,
            bytes: 0,
            files: 0,
        };
        let err = restore(&work, &snap).await.unwrap_err();
        assert!(
            matches!(err, CheckpointError::ArchiveUnreadable { .. }),
            "{err}"
        );
        assert_eq!(read(&work.join("keep.txt")), "keep\n");
    }

    #[tokio::test]
    async fn bad_labels_and_missing_workdirs_are_errors() {
        let tmp = tempfile::tempdir().unwrap();
        for label in [
            "",
            "/abs",
            "a/../b",
            "..",
            "a b",
            "a//b",
            "a/",
            ".hidden",
            "a/.b",
            "x.lock",
            "end.",
            "ü",
            "a:b",
            &"x".repeat(MAX_LABEL_LEN + 1),
        ] {
            let err = snapshot(tmp.path(), label, tmp.path(), "")
                .await
                .unwrap_err();
            assert!(
                matches!(&err, CheckpointError::InvalidLabel { label: l, .. } if l == label),
                "{label:?}: {err}"
            );
        }
        validate_label("coder-1/ck.2_x").unwrap();
        assert_eq!(
            fs::read_dir(tmp.path()).unwrap().count(),
            0,
            "nothing written"
        );

        let missing = tmp.path().join("missing");
        let err = snapshot(&missing, "ok", tmp.path(), "").await.unwrap_err();
        assert!(
            matches!(err, CheckpointError::WorkdirMissing { .. }),
            "{err}"
        );
        let snap = WorkspaceSnapshot::Archive {
            path: tmp.path().join("x.tar.gz"),
            bytes: 0,
            files: 0,
        };
        let err = restore(&missing, &snap).await.unwrap_err();
        assert!(
            matches!(err, CheckpointError::WorkdirMissing { .. }),
            "{err}"
        );
        let file = tmp.path().join("file");
        fs::write(&file, "").unwrap();
        let err = snapshot(&file, "ok", tmp.path(), "").await.unwrap_err();
        assert!(
            matches!(err, CheckpointError::WorkdirMissing { .. }),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("does not exist or is not a directory")
        );

        // A git snapshot cannot be restored outside a repository.
        let plain = tmp.path().join("plain");
        fs::create_dir(&plain).unwrap();
        let snap = WorkspaceSnapshot::Git {
            repo: plain.clone(),
            commit: "0123456789abcdef0123456789abcdef01234567".into(),
            reference: "refs/flotilla/checkpoints/x".into(),
        };
        let err = restore(&plain, &snap).await.unwrap_err();
        assert!(
            matches!(err, CheckpointError::NotARepository { .. }),
            "{err}"
        );
        let bad_commit = WorkspaceSnapshot::Git {
            repo: plain.clone(),
            commit: "--help".into(),
            reference: "refs/flotilla/checkpoints/x".into(),
        };
        let err = restore(&plain, &bad_commit).await.unwrap_err();
        assert!(matches!(err, CheckpointError::InvalidSnapshot(_)), "{err}");
    }

    #[test]
    fn snapshots_serialize_with_a_kind_tag() {
        let git = WorkspaceSnapshot::Git {
            repo: "/r".into(),
            commit: "abc".into(),
            reference: "refs/flotilla/checkpoints/a/b".into(),
        };
        let json = serde_json::to_value(&git).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "git", "repo": "/r", "commit": "abc",
                "reference": "refs/flotilla/checkpoints/a/b"})
        );
        assert_eq!(
            serde_json::from_value::<WorkspaceSnapshot>(json).unwrap(),
            git
        );
        let archive = WorkspaceSnapshot::Archive {
            path: "/a/x.tar.gz".into(),
            bytes: 10,
            files: 2,
        };
        let json = serde_json::to_value(&archive).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "archive", "path": "/a/x.tar.gz", "bytes": 10, "files": 2})
        );
        assert_eq!(
            serde_json::from_value::<WorkspaceSnapshot>(json).unwrap(),
            archive
        );
    }

    #[test]
    fn raw_diff_parsing() {
        let out = b":000000 100644 0000 1111 A\0new file\0:100644 000000 2222 0000 D\0gone\0:160000 160000 3 4 M\0sub\0";
        let changes = parse_raw_diff(out);
        let summary: Vec<_> = changes
            .iter()
            .map(|c| (c.status, c.old_mode, c.new_mode, c.path))
            .collect();
        assert_eq!(
            summary,
            [
                (b'A', &b"000000"[..], &b"100644"[..], &b"new file"[..]),
                (b'D', b"100644", b"000000", b"gone"),
                (b'M', b"160000", b"160000", b"sub"),
            ]
        );
        assert!(parse_raw_diff(b"garbage\0\0:1\0").is_empty());
    }
}
