//! The position of a page in a task list: the `(created_at, id)` of its last task.
//!
//! Lists are newest first, so the next page holds the tasks strictly before that pair. Keyset
//! pagination neither skips nor repeats a task when tasks are added meanwhile, and costs the
//! same on page 1 and page 10,000. The text is opaque to clients: `t1.` (a format version), the
//! instant in milliseconds, `.`, and the id without hyphens.

use flotilla_core::{TaskId, Timestamp};
use uuid::Uuid;

use crate::error::StoreError;

const PREFIX: &str = "t1.";

/// Where the next page of a task list starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TaskCursor {
    /// The last listed task's creation instant.
    pub(crate) created_at: Timestamp,
    /// The last listed task's id.
    pub(crate) id: TaskId,
}

impl TaskCursor {
    /// The cursor's text.
    pub(crate) fn encode(&self) -> String {
        format!(
            "{PREFIX}{}.{}",
            self.created_at.as_millis(),
            self.id.as_uuid().simple()
        )
    }

    /// Reads a cursor's text; anything this module did not write is
    /// [`StoreError::InvalidCursor`].
    pub(crate) fn decode(text: &str) -> Result<Self, StoreError> {
        let invalid = || StoreError::InvalidCursor(text.to_owned());
        let rest = text.strip_prefix(PREFIX).ok_or_else(invalid)?;
        let (ms, id) = rest.split_once('.').ok_or_else(invalid)?;
        let ms: i64 = ms.parse().map_err(|_| invalid())?;
        if id.len() != 32 {
            return Err(invalid());
        }
        let id = Uuid::try_parse(id).map_err(|_| invalid())?;
        Ok(TaskCursor {
            created_at: Timestamp::from_millis(ms),
            id: TaskId(id),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_anything_else() {
        let c = TaskCursor {
            created_at: Timestamp::from_millis(-5),
            id: TaskId(Uuid::from_u128(0xabc)),
        };
        assert_eq!(TaskCursor::decode(&c.encode()), Ok(c));
        for bad in [
            "",
            "t1.",
            "t1.12",
            "t1.x.00000000000000000000000000000abc",
            "t2.1.abc",
        ] {
            assert!(
                matches!(TaskCursor::decode(bad), Err(StoreError::InvalidCursor(_))),
                "{bad}"
            );
        }
        let hyphenated = format!("t1.1.{}", Uuid::from_u128(1));
        assert!(TaskCursor::decode(&hyphenated).is_err());
    }
}
