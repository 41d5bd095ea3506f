//! The position of a page in a list: the `(created_at, id)` of its last row.
//!
//! Lists are newest first, so the next page holds the rows strictly before that pair. Keyset
//! pagination neither skips nor repeats a row when rows are added meanwhile, and costs the
//! same on page 1 and page 10,000. The text is opaque to clients: a prefix naming the list and
//! its format version (`t1.` for tasks, `m1.` for messages), the instant in milliseconds, `.`,
//! and the id without hyphens. A cursor of one list is refused by the other.
//!
//! The list queries share their construction here too: [`Conditions`] gathers a filter's
//! conditions with the cursor's, [`fetch`] and [`page`] ask for one row more than a page and
//! cut it back, which tells whether there is a next page.

use crate::sql::Param;
use flotilla_core::api::Page;
use flotilla_core::{MessageId, TaskId, Timestamp};
use uuid::Uuid;

use super::rows::Ident;
use crate::error::StoreError;

/// An id type whose lists are paged with a [`Cursor`].
pub(crate) trait Listed: Ident + From<Uuid> + Copy {
    /// What a cursor of this list starts with.
    const PREFIX: &'static str;
}

impl Listed for TaskId {
    const PREFIX: &'static str = "t1.";
}

impl Listed for MessageId {
    const PREFIX: &'static str = "m1.";
}

/// Where the next page of a list of `I`-identified rows starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cursor<I> {
    /// The last listed row's creation instant.
    pub(crate) created_at: Timestamp,
    /// The last listed row's id.
    pub(crate) id: I,
}

/// Where the next page of a task list starts.
pub(crate) type TaskCursor = Cursor<TaskId>;

/// Where the next page of a message list starts.
pub(crate) type MessageCursor = Cursor<MessageId>;

impl<I: Listed> Cursor<I> {
    /// The cursor's text.
    pub(crate) fn encode(&self) -> String {
        format!(
            "{}{}.{}",
            I::PREFIX,
            self.created_at.as_millis(),
            self.id.uuid().simple()
        )
    }

    /// Reads a cursor's text; anything this module did not write for this list is
    /// [`StoreError::InvalidCursor`].
    pub(crate) fn decode(text: &str) -> Result<Self, StoreError> {
        let invalid = || StoreError::InvalidCursor(text.to_owned());
        let rest = text.strip_prefix(I::PREFIX).ok_or_else(invalid)?;
        let (ms, id) = rest.split_once('.').ok_or_else(invalid)?;
        let ms: i64 = ms.parse().map_err(|_| invalid())?;
        if id.len() != 32 {
            return Err(invalid());
        }
        let id = Uuid::try_parse(id).map_err(|_| invalid())?;
        Ok(Cursor {
            created_at: Timestamp::from_millis(ms),
            id: I::from(id),
        })
    }
}

/// Where a list query stands: the filters' conditions and the values they bind, in order.
#[derive(Clone, Debug, Default)]
pub(crate) struct Conditions {
    sql: Vec<&'static str>,
    params: Vec<Param<'static>>,
}

impl Conditions {
    /// Adds a condition with one `?`, bound to `value`.
    pub(crate) fn add(&mut self, sql: &'static str, value: Param<'static>) {
        self.sql.push(sql);
        self.params.push(value);
    }

    /// Adds the condition that selects the rows after `cursor`'s (older, or as old with a
    /// smaller id), if there is one.
    pub(crate) fn before<I: Listed>(&mut self, cursor: Option<Cursor<I>>) {
        if let Some(c) = cursor {
            self.sql.push("(created_at, id) < (?, ?)");
            self.params.push(Param::Int(c.created_at.as_millis()));
            self.params.push(Param::from(c.id.uuid().to_string()));
        }
    }

    /// ` WHERE a AND b`, or nothing without conditions.
    pub(crate) fn clause(&self) -> String {
        if self.sql.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.sql.join(" AND "))
        }
    }

    /// The values to bind, in the order of the conditions.
    pub(crate) fn params(&self) -> &[Param<'static>] {
        &self.params
    }
}

/// The `ORDER BY … LIMIT ?` of a newest-first list.
pub(crate) const NEWEST_FIRST: &str = "ORDER BY created_at DESC, id DESC LIMIT ?";

/// The rows a list query fetches for a page of `limit` (0 is taken as 1): one more than the
/// page holds, which tells whether there is a next page.
pub(crate) fn fetch(limit: usize) -> Param<'static> {
    Param::Int(i64::try_from(limit.max(1).saturating_add(1)).unwrap_or(i64::MAX))
}

/// Cuts the rows fetched for a page of `limit` (see [`fetch`]) into the page, with the cursor
/// of the next page if there is one.
pub(crate) fn page<T, I: Listed>(
    mut items: Vec<T>,
    limit: usize,
    key: impl Fn(&T) -> Cursor<I>,
) -> Page<T> {
    let limit = limit.max(1);
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|last| key(last).encode())
    } else {
        None
    };
    Page { items, next_cursor }
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

    #[test]
    fn a_cursor_of_one_list_is_refused_by_the_other() {
        let m = MessageCursor {
            created_at: Timestamp::from_millis(1_700_000_000_000),
            id: MessageId(Uuid::from_u128(0xdef)),
        };
        assert_eq!(MessageCursor::decode(&m.encode()), Ok(m));
        assert!(m.encode().starts_with("m1."));
        assert!(matches!(
            TaskCursor::decode(&m.encode()),
            Err(StoreError::InvalidCursor(_))
        ));
        let t = TaskCursor {
            created_at: m.created_at,
            id: TaskId(Uuid::from_u128(0xdef)),
        };
        assert!(matches!(
            MessageCursor::decode(&t.encode()),
            Err(StoreError::InvalidCursor(_))
        ));
    }
}
