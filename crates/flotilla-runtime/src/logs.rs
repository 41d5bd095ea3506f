//! Log files of agent processes, rotated by size.
//!
//! Two ways to rotate, for two kinds of writers:
//! - [`RotatingLog`] is the writer this crate uses for output it captures itself (the process
//!   runtime, exec mode). Before a write would take the file past `max_bytes` it renames
//!   `log` → `log.1` → … → `log.{keep}` and starts a new file, so no file ever exceeds
//!   `max_bytes` (a write is split at the limit). Writers in this process share one
//!   [`RotatingLog`] per path ([`shared`]), so concurrent tasks of one agent do not fight.
//! - [`rotate_if_needed`] is for files appended to by someone else, namely tmux's `pipe-pane`
//!   (`cat >> log`), which keeps its file open: renaming would leave it writing into `log.1`. It
//!   copies the file to `log.1` and truncates it (logrotate's `copytruncate`); the writer opened
//!   it with `O_APPEND`, so it goes on at the new end. Output written between the copy and the
//!   truncation is lost: call it every few seconds so the file stays near `max_bytes`.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use crate::spec::LogSpec;

/// A log file written through this crate, rotated by renaming when it reaches its size.
#[derive(Debug)]
pub struct RotatingLog {
    spec: LogSpec,
    file: File,
    size: u64,
}

impl RotatingLog {
    /// Opens (creating it and its directory if needed) the log for appending.
    pub fn open(spec: &LogSpec) -> io::Result<Self> {
        if let Some(dir) = spec.path.parent()
            && !dir.as_os_str().is_empty()
        {
            fs::create_dir_all(dir)?;
        }
        let file = open_append(&spec.path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            spec: spec.clone(),
            file,
            size,
        })
    }

    /// The log file being written.
    pub fn path(&self) -> &Path {
        &self.spec.path
    }

    /// Appends `data`, rotating first whenever the file is full.
    pub fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        let max = self.spec.max_bytes.max(1);
        while !data.is_empty() {
            if self.size >= max {
                self.rotate()?;
            }
            let room = usize::try_from(max.saturating_sub(self.size)).unwrap_or(usize::MAX);
            let n = room.min(data.len());
            self.file.write_all(&data[..n])?;
            self.size += n as u64;
            data = &data[n..];
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        // Someone may have truncated the file (rotate_if_needed): trust the file over our count.
        let actual = self.file.metadata()?.len();
        if actual < self.spec.max_bytes.max(1) {
            self.size = actual;
            return Ok(());
        }
        if self.spec.keep == 0 {
            self.file.set_len(0)?;
        } else {
            shift_rotated(&self.spec)?;
            fs::rename(&self.spec.path, rotated_path(&self.spec.path, 1))?;
            self.file = open_append(&self.spec.path)?;
        }
        self.size = 0;
        Ok(())
    }
}

/// The writer for `spec.path` shared by everything in this process that logs there, opened on
/// first use and closed when the last user drops it.
pub fn shared(spec: &LogSpec) -> io::Result<Arc<Mutex<RotatingLog>>> {
    static OPEN: OnceLock<Mutex<HashMap<PathBuf, Weak<Mutex<RotatingLog>>>>> = OnceLock::new();
    let mut open = OPEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(log) = open.get(&spec.path).and_then(Weak::upgrade) {
        return Ok(log);
    }
    open.retain(|_, log| log.strong_count() > 0);
    let log = Arc::new(Mutex::new(RotatingLog::open(spec)?));
    open.insert(spec.path.clone(), Arc::downgrade(&log));
    Ok(log)
}

/// Rotates a log written by another process (tmux `pipe-pane`) once it is larger than
/// `max_bytes`, by copy and truncate; returns whether it rotated. A missing file is not an
/// error. See the module documentation.
pub fn rotate_if_needed(spec: &LogSpec) -> io::Result<bool> {
    let len = match fs::metadata(&spec.path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if len <= spec.max_bytes {
        return Ok(false);
    }
    if spec.keep > 0 {
        shift_rotated(spec)?;
        fs::copy(&spec.path, rotated_path(&spec.path, 1))?;
    }
    OpenOptions::new()
        .write(true)
        .open(&spec.path)?
        .set_len(0)?;
    Ok(true)
}

/// The path of the `n`th rotated file of a log: `agent.log` → `agent.log.2`.
pub fn rotated_path(path: &Path, n: usize) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Makes room for a new `.1`: `.{keep-1}` → `.{keep}` (replacing it), …, `.1` → `.2`.
fn shift_rotated(spec: &LogSpec) -> io::Result<()> {
    for n in (1..spec.keep).rev() {
        match fs::rename(rotated_path(&spec.path, n), rotated_path(&spec.path, n + 1)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(spec: &LogSpec) -> Vec<Option<u64>> {
        (0..=spec.keep + 1)
            .map(|n| {
                let p = if n == 0 {
                    spec.path.clone()
                } else {
                    rotated_path(&spec.path, n)
                };
                fs::metadata(p).ok().map(|m| m.len())
            })
            .collect()
    }

    #[test]
    fn rotates_by_rename_and_caps_every_file() {
        let dir = tempfile::tempdir().unwrap();
        let spec = LogSpec {
            path: dir.path().join("sub/agent.log"),
            max_bytes: 100,
            keep: 2,
        };
        let mut log = RotatingLog::open(&spec).unwrap();
        for i in 0..50u8 {
            log.write(&[b'a' + (i % 26); 17]).unwrap();
        }
        // 850 bytes: the current file holds the last 50, .1 and .2 are full, .3 never exists.
        assert_eq!(sizes(&spec), [Some(50), Some(100), Some(100), None]);
        let newest = fs::read(&spec.path).unwrap();
        assert!(newest.ends_with(&[b'a' + (49 % 26); 17]));
        // One write larger than the file is split over files.
        log.write(&[b'z'; 250]).unwrap();
        assert_eq!(sizes(&spec), [Some(100), Some(100), Some(100), None]);
    }

    #[test]
    fn keep_zero_truncates_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let spec = LogSpec {
            path: dir.path().join("a.log"),
            max_bytes: 10,
            keep: 0,
        };
        let mut log = RotatingLog::open(&spec).unwrap();
        log.write(b"0123456789abc").unwrap();
        assert_eq!(fs::read(&spec.path).unwrap(), b"abc");
        assert!(!rotated_path(&spec.path, 1).exists());
    }

    #[test]
    fn reopening_continues_the_count() {
        let dir = tempfile::tempdir().unwrap();
        let spec = LogSpec {
            path: dir.path().join("a.log"),
            max_bytes: 10,
            keep: 1,
        };
        RotatingLog::open(&spec)
            .unwrap()
            .write(b"12345678")
            .unwrap();
        RotatingLog::open(&spec).unwrap().write(b"abcd").unwrap();
        assert_eq!(fs::read(&spec.path).unwrap(), b"cd");
        assert_eq!(
            fs::read(rotated_path(&spec.path, 1)).unwrap(),
            b"12345678ab"
        );
    }

    #[test]
    fn copy_truncate_keeps_an_appending_writer_working() {
        let dir = tempfile::tempdir().unwrap();
        let spec = LogSpec {
            path: dir.path().join("pane.log"),
            max_bytes: 10,
            keep: 2,
        };
        let mut outside = open_append(&spec.path).unwrap();
        outside.write_all(b"0123456789").unwrap();
        assert!(!rotate_if_needed(&spec).unwrap(), "not past max_bytes yet");
        outside.write_all(b"AB").unwrap();
        assert!(rotate_if_needed(&spec).unwrap());
        outside.write_all(b"next").unwrap();
        assert_eq!(fs::read(&spec.path).unwrap(), b"next");
        assert_eq!(
            fs::read(rotated_path(&spec.path, 1)).unwrap(),
            b"0123456789AB"
        );
        outside.write_all(b"-more-data").unwrap();
        assert!(rotate_if_needed(&spec).unwrap());
        assert_eq!(
            fs::read(rotated_path(&spec.path, 2)).unwrap(),
            b"0123456789AB"
        );
        assert_eq!(
            fs::read(rotated_path(&spec.path, 1)).unwrap(),
            b"next-more-data"
        );
        assert!(!rotate_if_needed(&LogSpec::new(dir.path().join("missing"))).unwrap());
    }

    #[test]
    fn shared_writers_are_one() {
        let dir = tempfile::tempdir().unwrap();
        let spec = LogSpec::new(dir.path().join("s.log"));
        let a = shared(&spec).unwrap();
        let b = shared(&spec).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        drop((a, b));
        let c = shared(&spec).unwrap();
        c.lock().unwrap().write(b"x").unwrap();
        assert_eq!(fs::read(&spec.path).unwrap(), b"x");
    }
}
