//! [`StoreError`]: why the store could not read or persist, sorted by what the operator must do.
//!
//! SQLite reports hundreds of result codes; the coordinator needs to know only a handful of
//! situations (the disk is full, the file is read-only, another process holds the lock, the file
//! is corrupt, …) to tell the operator what to do. Every rusqlite error is mapped to one of them,
//! and so is every PostgreSQL error (by its SQLSTATE class; a broken connection is
//! [`StoreError::Unavailable`]).

use std::error::Error as _;
use std::path::{Path, PathBuf};

use rusqlite::ErrorCode;
use rusqlite::types::FromSqlError;
use thiserror::Error;

/// Why the store could not read or persist. A failed [`commit`](crate::Store::commit) wrote
/// nothing.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StoreError {
    /// The database file could not be opened or created.
    #[error("cannot open database at {}: {reason}", path.display())]
    Open {
        /// The file asked for.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Another connection held the lock for longer than the busy timeout.
    #[error(
        "the database is locked by another process ({0}); is another flotilla using the same data directory?"
    )]
    Locked(String),
    /// The database server cannot be reached, or closed the connection (it restarted, it is
    /// shutting down, the network failed).
    #[error(
        "the database server is unavailable ({0}); check that PostgreSQL is running and reachable"
    )]
    Unavailable(String),
    /// The disk (or the file system's quota) is full.
    #[error("disk full: the database could not grow ({0}); free some disk space and retry")]
    Full(String),
    /// The file or its directory cannot be written.
    #[error("the database is read-only ({0}); check the permissions of the file and its directory")]
    ReadOnly(String),
    /// The operating system reported an I/O error.
    #[error("I/O error on the database ({0}); check the disk and the file system")]
    Io(String),
    /// The file is not a database, or holds data this version cannot decode.
    #[error(
        "the database is corrupt ({0}); restore it from a backup, or move it aside to start afresh"
    )]
    Corrupt(String),
    /// The database was written by a newer Flotilla.
    #[error(
        "the database has schema version {found}, but this flotilla knows versions up to {supported}; run a newer flotilla"
    )]
    SchemaTooNew {
        /// The version found in the file.
        found: u32,
        /// The newest version this build knows.
        supported: u32,
    },
    /// A row broke a uniqueness rule (a swarm name, an idempotency key, an event seq or a token
    /// hash already stored).
    #[error("the change conflicts with stored data: {0}")]
    Conflict(String),
    /// A coordinator of a cluster wrote about swarms whose leases it no longer holds (they
    /// lapsed, or another coordinator took them): nothing of the batch was written.
    #[error(
        "this coordinator no longer holds the lease of swarm(s) {}: the change was not stored; retry, and another coordinator will serve it",
        swarms.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")
    )]
    Fenced {
        /// The swarms whose leases are gone.
        swarms: Vec<flotilla_core::SwarmId>,
    },
    /// A list cursor that no page of this store produced.
    #[error("invalid cursor {0:?}: pass the next_cursor of a previous page unchanged")]
    InvalidCursor(String),
    /// Anything else SQLite reported.
    #[error("database error: {0}")]
    Other(String),
}

impl StoreError {
    /// The same error, saying which file it concerns; an unclassified error becomes
    /// [`StoreError::Open`].
    pub(crate) fn at(self, path: &Path) -> StoreError {
        let p = path.display();
        match self {
            StoreError::Other(reason) => StoreError::Open {
                path: path.to_path_buf(),
                reason,
            },
            StoreError::Open {
                path: known,
                reason,
            } if known.as_os_str().is_empty() => StoreError::Open {
                path: path.to_path_buf(),
                reason,
            },
            StoreError::Locked(m) => StoreError::Locked(format!("{p}: {m}")),
            StoreError::Full(m) => StoreError::Full(format!("{p}: {m}")),
            StoreError::ReadOnly(m) => StoreError::ReadOnly(format!("{p}: {m}")),
            StoreError::Io(m) => StoreError::Io(format!("{p}: {m}")),
            StoreError::Corrupt(m) => StoreError::Corrupt(format!("{p}: {m}")),
            other => other,
        }
    }

    /// The same error, saying which database server it concerns (`shown` has no password).
    pub(crate) fn on(self, shown: &str) -> StoreError {
        match self {
            StoreError::Open { path, reason } if path.as_os_str().is_empty() => StoreError::Open {
                path: shown.into(),
                reason,
            },
            StoreError::Unavailable(m) if !m.contains(shown) => {
                StoreError::Unavailable(format!("{shown}: {m}"))
            }
            other => other,
        }
    }

    /// A value read back that this version cannot decode.
    pub(crate) fn bad_value(column: &str, why: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt(format!("column {column}: {why}"))
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        let message = err.to_string();
        match &err {
            rusqlite::Error::SqliteFailure(e, _) => match e.code {
                ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => StoreError::Locked(message),
                ErrorCode::DiskFull => StoreError::Full(message),
                ErrorCode::ReadOnly | ErrorCode::PermissionDenied => StoreError::ReadOnly(message),
                ErrorCode::SystemIoFailure | ErrorCode::NoLargeFileSupport => {
                    StoreError::Io(message)
                }
                ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => {
                    StoreError::Corrupt(message)
                }
                ErrorCode::CannotOpen => StoreError::Open {
                    path: PathBuf::new(),
                    reason: message,
                },
                ErrorCode::ConstraintViolation => StoreError::Conflict(message),
                _ => StoreError::Other(message),
            },
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::InvalidColumnType(..) => StoreError::Corrupt(message),
            _ => StoreError::Other(message),
        }
    }
}

impl From<postgres::Error> for StoreError {
    fn from(err: postgres::Error) -> Self {
        use postgres::error::SqlState;
        let message = match err.as_db_error() {
            Some(db) => db.message().to_owned(),
            None => err.to_string(),
        };
        let Some(code) = err.code() else {
            // No SQLSTATE: the connection failed or broke, or a value could not be converted.
            let broken = err.is_closed()
                || err.source().is_some_and(|s| s.is::<std::io::Error>())
                || message.contains("error connecting")
                || message.contains("timed out");
            return if broken {
                StoreError::Unavailable(message)
            } else {
                StoreError::Other(message)
            };
        };
        let class = &code.code()[..2];
        match code {
            c if *c == SqlState::UNIQUE_VIOLATION => StoreError::Conflict(message),
            c if *c == SqlState::DISK_FULL => StoreError::Full(message),
            c if *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::LOCK_NOT_AVAILABLE =>
            {
                StoreError::Locked(message)
            }
            c if *c == SqlState::INVALID_CATALOG_NAME
                || *c == SqlState::INVALID_PASSWORD
                || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
            {
                StoreError::Open {
                    path: PathBuf::new(),
                    reason: message,
                }
            }
            c if *c == SqlState::DATA_CORRUPTED || *c == SqlState::INDEX_CORRUPTED => {
                StoreError::Corrupt(message)
            }
            // 08: connection exception; 57: operator intervention (shutdown, restart);
            // 53: insufficient resources (too many connections, out of memory).
            _ if matches!(class, "08" | "57" | "53") => StoreError::Unavailable(message),
            _ if class == "58" => StoreError::Io(message),
            _ => StoreError::Other(message),
        }
    }
}

impl From<FromSqlError> for StoreError {
    fn from(err: FromSqlError) -> Self {
        StoreError::Corrupt(err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn sqlite_codes_map_to_what_the_operator_must_do() {
        use rusqlite::ffi;
        assert!(matches!(
            sqlite(ffi::SQLITE_BUSY).into(),
            StoreError::Locked(_)
        ));
        assert!(matches!(
            sqlite(ffi::SQLITE_FULL).into(),
            StoreError::Full(_)
        ));
        assert!(matches!(
            sqlite(ffi::SQLITE_READONLY).into(),
            StoreError::ReadOnly(_)
        ));
        assert!(matches!(
            sqlite(ffi::SQLITE_IOERR).into(),
            StoreError::Io(_)
        ));
        assert!(matches!(
            sqlite(ffi::SQLITE_CORRUPT).into(),
            StoreError::Corrupt(_)
        ));
        assert!(matches!(
            sqlite(ffi::SQLITE_NOTADB).into(),
            StoreError::Corrupt(_)
        ));
        assert!(matches!(
            sqlite(ffi::SQLITE_CONSTRAINT).into(),
            StoreError::Conflict(_)
        ));
        assert!(matches!(
            sqlite(ffi::SQLITE_MISUSE).into(),
            StoreError::Other(_)
        ));
    }

    #[test]
    fn messages_name_the_file_and_the_remedy() {
        let e = StoreError::from(sqlite(rusqlite::ffi::SQLITE_FULL)).at(Path::new("/d/f.db"));
        let text = e.to_string();
        assert!(
            text.contains("/d/f.db") && text.contains("free some disk space"),
            "{text}"
        );
        let e = StoreError::Other("boom".into()).at(Path::new("/d/f.db"));
        assert_eq!(e.to_string(), "cannot open database at /d/f.db: boom");
    }
}
