//! Reading managed agents' logs: the last lines, and following new output as it is written
//! (across rotation: when the file shrinks, it was rotated, and reading restarts at its top).

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::Bytes;
use futures_util::Stream;
use tokio::sync::watch;

/// The last lines of a file and where the file ended.
pub struct Head {
    /// The lines, newline-terminated.
    pub text: String,
    /// The file's length when it was read.
    pub offset: u64,
}

/// The last `n` lines of a log (empty when it does not exist yet).
pub fn tail_lines(path: &Path, n: usize) -> std::io::Result<Head> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Head {
                text: String::new(),
                offset: 0,
            });
        }
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    // Read backwards in blocks until n newlines are found.
    let mut start = len;
    let mut buf: Vec<u8> = Vec::new();
    let block = 64 * 1024;
    while start > 0 && buf.iter().filter(|b| **b == b'\n').count() <= n {
        let from = start.saturating_sub(block);
        let mut chunk = vec![0; (start - from) as usize];
        file.seek(SeekFrom::Start(from))?;
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
        start = from;
    }
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let skip = lines.len().saturating_sub(n);
    Ok(Head {
        text: lines[skip..].concat(),
        offset: len,
    })
}

/// The head, then whatever is appended to the log, until the server shuts down or the client
/// goes away (dropping the stream).
pub fn follow(
    path: PathBuf,
    head: Head,
    mut shutdown: watch::Receiver<bool>,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
    async_stream::stream! {
        yield Ok(Bytes::from(head.text));
        let mut offset = head.offset;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = shutdown.changed() => return,
            }
            let path = path.clone();
            let read = tokio::task::spawn_blocking(move || read_from(&path, offset)).await;
            match read {
                Ok(Ok((bytes, next))) => {
                    offset = next;
                    if !bytes.is_empty() {
                        yield Ok(Bytes::from(bytes));
                    }
                }
                Ok(Err(e)) => {
                    yield Err(e);
                    return;
                }
                Err(_) => return,
            }
        }
    }
}

/// Bytes appended since `offset` (from the top if the file was rotated), and the new offset.
fn read_from(path: &Path, offset: u64) -> std::io::Result<(Vec<u8>, u64)> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let from = if len < offset { 0 } else { offset };
    if len == from {
        return Ok((Vec::new(), from));
    }
    let take = (len - from).min(1024 * 1024);
    file.seek(SeekFrom::Start(from))?;
    let mut buf = vec![0; take as usize];
    file.read_exact(&mut buf)?;
    Ok((buf, from + take))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_returns_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        assert_eq!(tail_lines(&path, 5).unwrap().text, "");
        let text: String = (0..100_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, &text).unwrap();
        let head = tail_lines(&path, 3).unwrap();
        assert_eq!(head.text, "line 99997\nline 99998\nline 99999\n");
        assert_eq!(head.offset, text.len() as u64);
        assert_eq!(tail_lines(&path, 0).unwrap().text, "");
    }

    #[test]
    fn reading_restarts_after_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, "hello world\n").unwrap();
        let (bytes, at) = read_from(&path, 6).unwrap();
        assert_eq!(bytes, b"world\n");
        std::fs::write(&path, "new\n").unwrap();
        let (bytes, _) = read_from(&path, at).unwrap();
        assert_eq!(bytes, b"new\n");
    }
}
