//! Mapping between entities and table rows, one table per file.
//!
//! Each submodule holds its table's SQL (the upsert and the column list of its `SELECT`s) next
//! to the code that binds an entity to that upsert and decodes a row back, so the two can be
//! checked against each other at a glance. This file holds what they share: ids bound as text
//! without allocating, and decoding helpers that name the column when a value is wrong.
//!
//! The contract is exactness: an entity written and read back is equal to what was written.
//! Durations are kept in whole milliseconds (the API's unit), so that holds for every value the
//! core produces.

pub(crate) mod agent;
pub(crate) mod checkpoint;
pub(crate) mod event;
pub(crate) mod message;
pub(crate) mod metric;
pub(crate) mod pool;
pub(crate) mod swarm;
pub(crate) mod task;
pub(crate) mod token;

use std::time::Duration;

use flotilla_core::{AgentId, MessageId, SwarmId, TaskId, Timestamp};
use serde::de::DeserializeOwned;
use serde::de::value::{Error as ValueError, StrDeserializer};
use uuid::Uuid;

use crate::error::StoreError;
use crate::sql::Cells;

/// A UUID as 36 bytes of lower-case hyphenated text, bound without allocating.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IdText([u8; 36]);

impl IdText {
    /// The text of `uuid`.
    pub(crate) fn new(uuid: &Uuid) -> Self {
        let mut buf = [0u8; 36];
        uuid.hyphenated().encode_lower(&mut buf);
        IdText(buf)
    }
}

impl IdText {
    /// The text.
    pub(crate) fn as_str(&self) -> &str {
        // Always ASCII: `encode_lower` writes hex digits and hyphens.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// The core's id types, which all wrap a UUID.
pub(crate) trait Ident {
    /// The UUID inside.
    fn uuid(&self) -> &Uuid;
}

impl Ident for SwarmId {
    fn uuid(&self) -> &Uuid {
        self.as_uuid()
    }
}

impl Ident for AgentId {
    fn uuid(&self) -> &Uuid {
        self.as_uuid()
    }
}

impl Ident for TaskId {
    fn uuid(&self) -> &Uuid {
        self.as_uuid()
    }
}

impl Ident for MessageId {
    fn uuid(&self) -> &Uuid {
        self.as_uuid()
    }
}

impl Ident for flotilla_core::CheckpointId {
    fn uuid(&self) -> &Uuid {
        self.as_uuid()
    }
}

/// The text of an id.
pub(crate) fn id<T: Ident>(value: &T) -> IdText {
    IdText::new(value.uuid())
}

/// The text of an optional id.
pub(crate) fn opt_id<T: Ident>(value: &Option<T>) -> Option<IdText> {
    value.as_ref().map(id)
}

/// Milliseconds of a duration, as stored.
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Milliseconds of an optional instant, as stored.
pub(crate) fn opt_ts(t: Option<Timestamp>) -> Option<i64> {
    t.map(Timestamp::as_millis)
}

/// Serializes a value the store itself built (a list of strings or ids, a small struct); this
/// cannot fail, as there are no maps with non-string keys and no I/O.
pub(crate) fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

/// Reads the columns of one row, naming the column in every error.
pub(crate) struct Cols<'a> {
    row: &'a dyn Cells,
    table: &'static str,
}

impl<'a> Cols<'a> {
    /// Reads `row`, a row of `table`.
    pub(crate) fn new(row: &'a dyn Cells, table: &'static str) -> Self {
        Cols { row, table }
    }

    fn bad(&self, name: &str, why: impl std::fmt::Display) -> StoreError {
        StoreError::bad_value(&format!("{}.{name}", self.table), why)
    }

    /// Text, borrowed from the row.
    pub(crate) fn str(&self, i: usize, name: &str) -> Result<&'a str, StoreError> {
        self.opt_str(i, name)?
            .ok_or_else(|| self.bad(name, "is NULL"))
    }

    /// Text or NULL, borrowed from the row.
    pub(crate) fn opt_str(&self, i: usize, name: &str) -> Result<Option<&'a str>, StoreError> {
        self.row.text(i).map_err(|e| self.bad(name, e))
    }

    /// An owned string.
    pub(crate) fn string(&self, i: usize, name: &str) -> Result<String, StoreError> {
        self.str(i, name).map(str::to_owned)
    }

    /// An integer.
    pub(crate) fn i64(&self, i: usize, name: &str) -> Result<i64, StoreError> {
        self.opt_i64(i, name)?
            .ok_or_else(|| self.bad(name, "is NULL"))
    }

    /// An integer or NULL.
    pub(crate) fn opt_i64(&self, i: usize, name: &str) -> Result<Option<i64>, StoreError> {
        self.row.int(i).map_err(|e| self.bad(name, e))
    }

    /// An integer that must fit `T` (a count, a priority, an attempt number).
    pub(crate) fn int<T: TryFrom<i64>>(&self, i: usize, name: &str) -> Result<T, StoreError> {
        let v = self.i64(i, name)?;
        T::try_from(v).map_err(|_| self.bad(name, format!("{v} is out of range")))
    }

    /// An integer or NULL that must fit `T`.
    pub(crate) fn opt_int<T: TryFrom<i64>>(
        &self,
        i: usize,
        name: &str,
    ) -> Result<Option<T>, StoreError> {
        match self.opt_i64(i, name)? {
            None => Ok(None),
            Some(v) => T::try_from(v)
                .map(Some)
                .map_err(|_| self.bad(name, format!("{v} is out of range"))),
        }
    }

    /// A `u64` stored as its two's-complement `i64` (counters that could exceed `i64::MAX`).
    pub(crate) fn u64(&self, i: usize, name: &str) -> Result<u64, StoreError> {
        Ok(self.i64(i, name)? as u64)
    }

    /// An instant.
    pub(crate) fn ts(&self, i: usize, name: &str) -> Result<Timestamp, StoreError> {
        self.i64(i, name).map(Timestamp::from_millis)
    }

    /// An instant or NULL.
    pub(crate) fn opt_ts(&self, i: usize, name: &str) -> Result<Option<Timestamp>, StoreError> {
        Ok(self.opt_i64(i, name)?.map(Timestamp::from_millis))
    }

    /// A duration in milliseconds.
    pub(crate) fn duration(&self, i: usize, name: &str) -> Result<Duration, StoreError> {
        self.int::<u64>(i, name).map(Duration::from_millis)
    }

    /// An id.
    pub(crate) fn id<T: From<Uuid>>(&self, i: usize, name: &str) -> Result<T, StoreError> {
        let text = self.str(i, name)?;
        parse_uuid(text).ok_or_else(|| self.bad(name, format!("{text:?} is not a UUID")))
    }

    /// An id or NULL.
    pub(crate) fn opt_id<T: From<Uuid>>(
        &self,
        i: usize,
        name: &str,
    ) -> Result<Option<T>, StoreError> {
        match self.opt_str(i, name)? {
            None => Ok(None),
            Some(text) => parse_uuid(text)
                .map(Some)
                .ok_or_else(|| self.bad(name, format!("{text:?} is not a UUID"))),
        }
    }

    /// A unit enum stored as its serde name (`idle`, `star`, …).
    pub(crate) fn enumeration<T: DeserializeOwned>(
        &self,
        i: usize,
        name: &str,
    ) -> Result<T, StoreError> {
        let text = self.str(i, name)?;
        T::deserialize(StrDeserializer::<ValueError>::new(text))
            .map_err(|_| self.bad(name, format!("unknown value {text:?}")))
    }

    /// A unit enum stored as its serde name, or `None` for NULL.
    pub(crate) fn opt_enumeration<T: DeserializeOwned>(
        &self,
        i: usize,
        name: &str,
    ) -> Result<Option<T>, StoreError> {
        self.opt_str(i, name)?
            .map(|text| {
                T::deserialize(StrDeserializer::<ValueError>::new(text))
                    .map_err(|_| self.bad(name, format!("unknown value {text:?}")))
            })
            .transpose()
    }

    /// A JSON document kept as text.
    pub(crate) fn json(&self, i: usize, name: &str) -> Result<flotilla_core::Json, StoreError> {
        let text = self.str(i, name)?;
        flotilla_core::Json::parse_stored(text).map_err(|e| self.bad(name, e))
    }

    /// A JSON document kept as text, or `None` for NULL.
    pub(crate) fn opt_json(
        &self,
        i: usize,
        name: &str,
    ) -> Result<Option<flotilla_core::Json>, StoreError> {
        match self.opt_str(i, name)? {
            None => Ok(None),
            Some(text) => flotilla_core::Json::parse_stored(text)
                .map(Some)
                .map_err(|e| self.bad(name, e)),
        }
    }

    /// A string or NULL.
    pub(crate) fn opt_string(&self, i: usize, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self.opt_str(i, name)?.map(str::to_owned))
    }

    /// A JSON document decoded into `T`.
    pub(crate) fn decode<T: DeserializeOwned>(
        &self,
        i: usize,
        name: &str,
    ) -> Result<T, StoreError> {
        let text = self.str(i, name)?;
        serde_json::from_str(text).map_err(|e| self.bad(name, e))
    }

    /// A JSON document decoded into `T`, or `None` for NULL.
    pub(crate) fn opt_decode<T: DeserializeOwned>(
        &self,
        i: usize,
        name: &str,
    ) -> Result<Option<T>, StoreError> {
        match self.opt_str(i, name)? {
            None => Ok(None),
            Some(text) => serde_json::from_str(text)
                .map(Some)
                .map_err(|e| self.bad(name, e)),
        }
    }

    /// A JSON list of strings; `[]` is read without the parser, as it is by far the most common.
    pub(crate) fn strings(&self, i: usize, name: &str) -> Result<Vec<String>, StoreError> {
        let text = self.str(i, name)?;
        if text == "[]" {
            return Ok(Vec::new());
        }
        serde_json::from_str(text).map_err(|e| self.bad(name, e))
    }
}

fn parse_uuid<T: From<Uuid>>(text: &str) -> Option<T> {
    Uuid::try_parse(text).ok().map(T::from)
}

/// The JSON text of a list of strings, without the serializer for the common empty list.
pub(crate) fn strings_json(list: &[String]) -> std::borrow::Cow<'static, str> {
    if list.is_empty() {
        std::borrow::Cow::Borrowed("[]")
    } else {
        std::borrow::Cow::Owned(to_json(list))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_text_is_the_hyphenated_lower_case_uuid() {
        let u = Uuid::from_u128(0x0190_b6e4_0000_7000_8000_0000_0000_00ab);
        let text = IdText::new(&u);
        assert_eq!(text.as_str(), u.to_string());
    }
}
