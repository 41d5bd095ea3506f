//! [`Json`]: a JSON document kept as validated text and shared by reference count.
//!
//! Task payloads and results pass through the core, the store and the API many times; keeping
//! them as raw text behind an `Arc` makes every copy a pointer copy and avoids re-parsing.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// How deep arrays and objects may nest in a [`Json`] document. serde_json reads a `Value`
/// at most 127 levels deep; half that leaves room for the documents that carry a payload (a
/// task, in a page, in an event…), so whatever is accepted can be read back as a `Value`.
/// Raw text is validated without any limit, so it is checked here.
pub const MAX_DEPTH: usize = 64;

/// Validated JSON text, cheap to clone.
#[derive(Clone)]
pub struct Json(Arc<RawValue>);

impl Json {
    /// Parses and validates JSON text, nested at most [`MAX_DEPTH`] levels.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        let raw: Box<RawValue> = RawValue::from_string(text.to_owned())?;
        check_depth(raw.get()).map_err(serde::de::Error::custom)?;
        Ok(Json(Arc::from(raw)))
    }

    /// Parses JSON text without the depth limit: for documents the coordinator stored itself,
    /// which an older version may have accepted deeper.
    pub fn parse_stored(text: &str) -> Result<Self, serde_json::Error> {
        let raw: Box<RawValue> = RawValue::from_string(text.to_owned())?;
        Ok(Json(Arc::from(raw)))
    }

    /// Serializes a value into JSON.
    pub fn from_value<T: Serialize + ?Sized>(value: &T) -> Self {
        // Serializing our own `Serialize` types into a string cannot fail (no I/O, string keys).
        let raw = serde_json::value::to_raw_value(value).expect("serializable value");
        Json(Arc::from(raw))
    }

    /// `null`.
    pub fn null() -> Self {
        Json::from_value(&serde_json::Value::Null)
    }

    /// `{}`.
    pub fn empty_object() -> Self {
        Json::from_value(&serde_json::Map::new())
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// Length of the JSON text in bytes.
    pub fn len(&self) -> usize {
        self.0.get().len()
    }

    /// Whether the text is empty (never true for a valid document).
    pub fn is_empty(&self) -> bool {
        self.0.get().is_empty()
    }

    /// Whether the document is a JSON object.
    pub fn is_object(&self) -> bool {
        self.get().trim_start().starts_with('{')
    }

    /// Parses the text into a `serde_json::Value`.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(self.get()).unwrap_or(serde_json::Value::Null)
    }
}

impl PartialEq for Json {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl fmt::Debug for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl Default for Json {
    fn default() -> Self {
        Json::null()
    }
}

impl From<serde_json::Value> for Json {
    fn from(v: serde_json::Value) -> Self {
        Json::from_value(&v)
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw: Box<RawValue> = Box::deserialize(d)?;
        check_depth(raw.get()).map_err(serde::de::Error::custom)?;
        Ok(Json(Arc::from(raw)))
    }
}

/// Refuses valid JSON text nested deeper than [`MAX_DEPTH`]; one pass, no recursion.
fn check_depth(text: &str) -> Result<(), String> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(format!(
                        "JSON nested more than {MAX_DEPTH} levels deep; flatten the document"
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// In the API's description (OpenAPI): any JSON value.
impl utoipa::PartialSchema for Json {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <serde_json::Value as utoipa::PartialSchema>::schema()
    }
}

impl utoipa::ToSchema for Json {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_raw_text() {
        let j = Json::parse(r#"{"a": [1, 2]}"#).unwrap();
        assert_eq!(serde_json::to_string(&j).unwrap(), r#"{"a": [1, 2]}"#);
        let back: Json = serde_json::from_str(r#"{"x":1}"#).unwrap();
        assert!(back.is_object());
        assert!(Json::parse("{nope").is_err());
    }

    #[test]
    fn depth_is_limited_without_recursion() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(Json::parse(&nested(MAX_DEPTH)).is_ok());
        // Whatever is accepted reads as a `Value` too, even carried a few levels down.
        let carried = format!("{{\"items\": [{{\"payload\": {}}}]}}", nested(MAX_DEPTH));
        assert!(serde_json::from_str::<serde_json::Value>(&carried).is_ok());
        assert!(Json::parse(&nested(MAX_DEPTH + 1)).is_err());
        assert!(serde_json::from_str::<Json>(&nested(100_000)).is_err());
        assert!(Json::parse_stored(&nested(MAX_DEPTH + 1)).is_ok());
        // Brackets inside strings, escaped quotes included, do not count.
        let text = format!("[\"{}\\\"{}\"]", "[".repeat(500), "{".repeat(500));
        assert!(Json::parse(&text).is_ok(), "{text}");
    }
}
