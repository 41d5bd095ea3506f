//! What the SQL code needs of a database, so that one body of SQL serves SQLite and PostgreSQL.
//!
//! The row mappings (`rows`), the batch writer (`commit`), the start-up load (`load`) and the
//! reads (`reader`) are written once against [`Db`]: run a statement with [`Param`]s, or run
//! a query and look at each row through [`Cells`]. Each backend implements the two traits
//! (`sqlite::Lite`, `postgres::PgConn`) and caches prepared statements by their text.
//!
//! The SQL is the common subset of the two dialects: `?N` and `?` placeholders (the PostgreSQL
//! backend rewrites them to `$N` once, when it prepares a statement, see [`numbered`]);
//! `INSERT … ON CONFLICT … DO UPDATE/NOTHING`; row-value comparisons; integers, text and
//! doubles only. The few statements that cannot be shared (schemas, a list of ids) are the
//! backend's own.

use std::borrow::Cow;

use crate::error::StoreError;
use crate::rows::IdText;

/// A value bound to a placeholder. Text is borrowed where it can be, ids are bound without
/// allocating.
#[derive(Clone, Debug)]
pub(crate) enum Param<'a> {
    /// SQL NULL.
    Null,
    /// An integer (booleans are 0 and 1).
    Int(i64),
    /// A double.
    Real(f64),
    /// Text.
    Text(Cow<'a, str>),
    /// An id, as its hyphenated text.
    Id(IdText),
}

impl From<i64> for Param<'_> {
    fn from(v: i64) -> Self {
        Param::Int(v)
    }
}

impl From<u32> for Param<'_> {
    fn from(v: u32) -> Self {
        Param::Int(i64::from(v))
    }
}

impl From<u16> for Param<'_> {
    fn from(v: u16) -> Self {
        Param::Int(i64::from(v))
    }
}

impl From<u8> for Param<'_> {
    fn from(v: u8) -> Self {
        Param::Int(i64::from(v))
    }
}

impl From<bool> for Param<'_> {
    fn from(v: bool) -> Self {
        Param::Int(i64::from(v))
    }
}

impl From<f64> for Param<'_> {
    fn from(v: f64) -> Self {
        Param::Real(v)
    }
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(v: &'a str) -> Self {
        Param::Text(Cow::Borrowed(v))
    }
}

impl<'a> From<&'a String> for Param<'a> {
    fn from(v: &'a String) -> Self {
        Param::Text(Cow::Borrowed(v))
    }
}

impl From<String> for Param<'_> {
    fn from(v: String) -> Self {
        Param::Text(Cow::Owned(v))
    }
}

impl<'a> From<Cow<'a, str>> for Param<'a> {
    fn from(v: Cow<'a, str>) -> Self {
        Param::Text(v)
    }
}

impl From<IdText> for Param<'_> {
    fn from(v: IdText) -> Self {
        Param::Id(v)
    }
}

impl<'a> From<&'a Option<String>> for Param<'a> {
    fn from(v: &'a Option<String>) -> Self {
        v.as_deref().into()
    }
}

impl<'a, T: Into<Param<'a>>> From<Option<T>> for Param<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Param::Null, Into::into)
    }
}

/// `[Param; N]` of the values given, each converted with `Param::from`.
macro_rules! params {
    ($($value:expr),* $(,)?) => {
        [$($crate::sql::Param::from($value)),*]
    };
}
pub(crate) use params;

/// One row of a query's answer, column by column (0-based). Errors say what is wrong with the
/// value; [`Cols`](crate::rows::Cols) adds the column's name.
pub(crate) trait Cells {
    /// Text, or `None` for NULL.
    fn text(&self, i: usize) -> Result<Option<&str>, String>;
    /// An integer, or `None` for NULL.
    fn int(&self, i: usize) -> Result<Option<i64>, String>;
}

/// A connection (or a transaction on one) that runs the shared SQL.
pub(crate) trait Db {
    /// Runs a statement; answers the number of rows it changed.
    fn exec(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError>;

    /// Runs a query and hands each row to `row`, in order.
    fn each(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        row: &mut dyn FnMut(&dyn Cells) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;

    /// The query that selects `columns` of `table`'s rows whose `id` is in `ids`, in no
    /// particular order (SQLite reads a JSON array, PostgreSQL an array parameter).
    fn by_ids_sql(&self, columns: &str, table: &str) -> String;
}

/// Runs a query and decodes every row with `decode`.
pub(crate) fn collect<T>(
    db: &mut dyn Db,
    sql: &str,
    params: &[Param<'_>],
    decode: impl Fn(&dyn Cells) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    db.each(sql, params, &mut |row| {
        out.push(decode(row)?);
        Ok(())
    })?;
    Ok(out)
}

/// Runs a query and decodes its first row, if any.
pub(crate) fn first<T>(
    db: &mut dyn Db,
    sql: &str,
    params: &[Param<'_>],
    decode: impl Fn(&dyn Cells) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    let mut out = None;
    db.each(sql, params, &mut |row| {
        if out.is_none() {
            out = Some(decode(row)?);
        }
        Ok(())
    })?;
    Ok(out)
}

/// `sql` with SQLite's `?N` and `?` placeholders written as PostgreSQL's `$N`: `?N` keeps its
/// number, a bare `?` takes one more than the largest number so far (SQLite's rule). Text in
/// single quotes is left alone.
pub(crate) fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut largest = 0u32;
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
            out.push(c);
            continue;
        }
        if c != '?' || quoted {
            out.push(c);
            continue;
        }
        let mut digits = String::new();
        while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
            digits.push(d);
            chars.next();
        }
        let n = match digits.parse::<u32>() {
            Ok(n) => n,
            Err(_) => largest + 1,
        };
        largest = largest.max(n);
        out.push('$');
        out.push_str(&n.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_as_sqlite_numbers_them() {
        assert_eq!(
            numbered("SELECT a FROM t WHERE b = ?1 AND c = ?2 OR d = ?1"),
            "SELECT a FROM t WHERE b = $1 AND c = $2 OR d = $1"
        );
        assert_eq!(
            numbered("WHERE a > ? AND b IN (?, ?) LIMIT ?"),
            "WHERE a > $1 AND b IN ($2, $3) LIMIT $4"
        );
        assert_eq!(
            numbered("WHERE a = ?3 AND b = ? AND c = '?x'"),
            "WHERE a = $3 AND b = $4 AND c = '?x'"
        );
    }

    #[test]
    fn options_bind_null_or_their_value() {
        let none: Option<i64> = None;
        assert!(matches!(Param::from(none), Param::Null));
        assert!(matches!(Param::from(Some(3i64)), Param::Int(3)));
        let s = Some("x".to_owned());
        assert!(matches!(Param::from(&s), Param::Text(t) if t == "x"));
        assert!(matches!(Param::from(true), Param::Int(1)));
    }
}
