//! An event's payload as JSON text, not as a `serde_json::Value` tree.
//!
//! Every reader of the log decodes every event it reads, and the engine
//! appends about fifteen events per order: a tree of maps and strings built
//! per event, then walked again to hash, bind and decode it, was a visible
//! share of the engine's allocations. The text is what a database stores and
//! returns, so the payload stays text from the database to the typed event.
//!
//! A payload made by the engine ([`Payload::from_value`]) is in the canonical
//! form the hash chain covers (object keys sorted at every level, no
//! whitespace), so an append hashes its text as it is. A payload read from a
//! database may not be (PostgreSQL's JSONB returns keys in its own order, with
//! spaces), and is put in canonical form only when hashed again, which only
//! `verify` and `import` do.

use std::fmt;

use serde_json::value::RawValue;
use serde_json::Value;

/// A JSON payload, kept as the text it was read or written as.
#[derive(Clone)]
pub struct Payload {
    raw: Box<RawValue>,
    /// The text is already in canonical form (see [`write_canonical`]).
    canonical: bool,
}

impl Payload {
    /// The canonical text of `value`.
    pub fn from_value(value: &Value) -> Self {
        let mut text = String::with_capacity(128);
        write_canonical(value, &mut text);
        match RawValue::from_string(text) {
            Ok(raw) => Self { raw, canonical: true },
            // Unreachable: a Value always writes valid JSON. Kept total so a
            // serde_json change cannot turn an append into a panic.
            Err(_) => Self::null(),
        }
    }

    /// Text read back from a database or a file: checked to be JSON, kept as it is.
    pub fn parse(text: String) -> Result<Self, serde_json::Error> {
        Ok(Self::stored(RawValue::from_string(text)?))
    }

    /// Raw JSON already checked by its reader (sqlx, serde), kept as it is.
    pub fn stored(raw: Box<RawValue>) -> Self {
        Self { raw, canonical: false }
    }

    fn null() -> Self {
        Self {
            raw: RawValue::NULL.to_owned(),
            canonical: true,
        }
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        self.raw.get()
    }

    pub fn as_raw(&self) -> &RawValue {
        &self.raw
    }

    /// The payload as a tree, for the paths that edit or show it (upcasting,
    /// the audit trail, the operator's tools); never on the engine's hot path.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.raw.get()).unwrap_or(Value::Null)
    }

    /// Appends the canonical form of this payload to `out`: the text itself
    /// when it is canonical already, else after reading it into a tree.
    pub fn write_canonical_to(&self, out: &mut String) {
        if self.canonical {
            out.push_str(self.raw.get());
        } else {
            write_canonical(&self.to_value(), out);
        }
    }
}

impl From<Value> for Payload {
    fn from(value: Value) -> Self {
        Self::from_value(&value)
    }
}

/// Equal when the JSON is: the same text, or the same tree once read (the
/// databases store the same payload with different spacing and key order).
impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.raw.get() == other.raw.get() || self.to_value() == other.to_value()
    }
}

impl PartialEq<Value> for Payload {
    fn eq(&self, other: &Value) -> bool {
        self.to_value() == *other
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.raw.get())
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.raw.get())
    }
}

/// JSON with object keys sorted at every level and no whitespace: the same
/// value always gives the same bytes, whatever order a database returns.
pub fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(key, out);
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::String(text) => write_json_string(text, out),
        Value::Number(number) => out.push_str(&number.to_string()),
        Value::Bool(flag) => out.push_str(if *flag { "true" } else { "false" }),
        Value::Null => out.push_str("null"),
    }
}

/// `text` as a JSON string literal, with serde_json's escaping.
pub fn write_json_string(text: &str, out: &mut String) {
    // serde_json's escaping of a plain string cannot fail.
    out.push_str(&serde_json::to_string(text).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    #[test]
    fn a_payload_made_here_is_canonical_and_one_read_back_is_made_so_when_hashed() {
        let made = Payload::from_value(&json!({"b": 1, "a": {"d": "x", "c": null}}));
        assert_eq!(made.as_str(), r#"{"a":{"c":null,"d":"x"},"b":1}"#);
        // As PostgreSQL's JSONB returns it: its own key order, with spaces.
        let read = Payload::parse(r#"{"b": 1, "a": {"c": null, "d": "x"}}"#.to_owned()).unwrap();
        let (mut one, mut two) = (String::new(), String::new());
        made.write_canonical_to(&mut one);
        read.write_canonical_to(&mut two);
        assert_eq!(one, two);
        assert_eq!(made, read);
        assert_ne!(made, Payload::from_value(&json!({"b": 2})));
    }

    #[test]
    fn numbers_keep_their_exact_text() {
        let made = Payload::from_value(&json!({"amount": serde_json::from_str::<Value>("1502.50").unwrap()}));
        assert_eq!(made.as_str(), r#"{"amount":1502.50}"#);
    }

    #[test]
    fn text_that_is_not_json_is_refused() {
        assert!(Payload::parse("{not json".to_owned()).is_err());
    }
}
