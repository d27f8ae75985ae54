//! Value types of the YAML: durations (`30s`), sizes (`10MB`) and secrets.

use std::fmt;
use std::time::Duration as StdDuration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A duration written as `250ms`, `30s`, `5m` or `1h` (a bare number is seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Duration(pub StdDuration);

impl Duration {
    /// A duration of whole seconds.
    pub const fn from_secs(s: u64) -> Self {
        Duration(StdDuration::from_secs(s))
    }
    /// A duration of milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Duration(StdDuration::from_millis(ms))
    }
    /// The standard-library duration.
    pub fn get(self) -> StdDuration {
        self.0
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as 250ms, 30s, 5m or 1h")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Ok(Duration::from_secs(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                u64::try_from(v)
                    .map(Duration::from_secs)
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                humantime::parse_duration(v.trim())
                    .map(Duration)
                    .map_err(|e| E::custom(format!("invalid duration {v:?}: {e}")))
            }
        }
        d.deserialize_any(V)
    }
}

/// A size in bytes written as `512`, `64KB`, `10MB`, `1GB` (powers of 1024; `KiB` etc. also accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `10MB`-style text.
    pub fn parse(text: &str) -> Option<ByteSize> {
        let t = text.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let num: f64 = num.parse().ok()?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            "t" | "tb" | "tib" => 1 << 40,
            _ => return None,
        };
        Some(ByteSize((num * mult as f64) as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        const UNITS: [(&str, u64); 4] =
            [("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10), ("B", 1)];
        for (name, size) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{}", self.0 / size, name);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as 512KB, 10MB or 1GB")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).ok_or_else(|| E::custom(format!("invalid size {v:?}")))
            }
        }
        d.deserialize_any(V)
    }
}

/// A credential. It never prints: `Debug` and `Serialize` (used by the admin
/// API's `/config`) show `[REDACTED]`, so a key cannot reach a log or a response
/// by accident. Call [`Secret::expose`] where the value is really needed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The credential itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Whether no credential was given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "[REDACTED]"
        })
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "[REDACTED]" })
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(ByteSize::parse("1GB"), Some(ByteSize(1 << 30)));
        assert_eq!(ByteSize::parse("10 MB"), Some(ByteSize(10 << 20)));
        assert_eq!(ByteSize::parse("512"), Some(ByteSize(512)));
        assert_eq!(ByteSize::parse("1.5KiB"), Some(ByteSize(1536)));
        assert_eq!(ByteSize::parse("10 parsecs"), None);
        assert_eq!(ByteSize(10 << 20).to_string(), "10MB");
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("sk-live-123");
        assert_eq!(format!("{s:?}"), "[REDACTED]");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"[REDACTED]\"");
        assert_eq!(s.expose(), "sk-live-123");
    }

    #[test]
    fn durations_parse() {
        let d: Duration = serde_norway::from_str("50ms").unwrap();
        assert_eq!(d.get(), StdDuration::from_millis(50));
        let d: Duration = serde_norway::from_str("30").unwrap();
        assert_eq!(d.get(), StdDuration::from_secs(30));
        assert!(serde_norway::from_str::<Duration>("soon").is_err());
    }
}

/// A regular expression, compiled once when the configuration is read: a
/// bad pattern is an error naming its line and field, and whoever uses the
/// setting gets the compiled expression.
#[derive(Clone)]
pub struct Pattern(regex::Regex);

impl Pattern {
    /// The compiled expression.
    pub fn regex(&self) -> &regex::Regex {
        &self.0
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Pattern {}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        // Bounded so that one pattern cannot make every request slow.
        regex::RegexBuilder::new(&text)
            .size_limit(1 << 20)
            .build()
            .map(Pattern)
            .map_err(|e| de::Error::custom(format!("invalid regular expression: {e}")))
    }
}

/// Durations, sizes and credentials are strings in the configuration (a
/// bare number is seconds or bytes): their JSON Schemas say so, for editors.
mod json_schema {
    use std::borrow::Cow;

    use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

    impl JsonSchema for super::Duration {
        fn schema_name() -> Cow<'static, str> {
            "Duration".into()
        }
        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "description": "A duration such as 250ms, 30s, 5m or 1h (a bare number is seconds)",
                "anyOf": [
                    {"type": "string", "pattern": "^\\s*[0-9]+(\\.[0-9]+)?\\s*[a-zA-Z]+(\\s*[0-9]+(\\.[0-9]+)?\\s*[a-zA-Z]+)*\\s*$"},
                    {"type": "integer", "minimum": 0}
                ]
            })
        }
    }

    impl JsonSchema for super::ByteSize {
        fn schema_name() -> Cow<'static, str> {
            "ByteSize".into()
        }
        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "description": "A size such as 512KB, 10MB or 1GB (powers of 1024; a bare number is bytes)",
                "anyOf": [{"type": "string"}, {"type": "integer", "minimum": 0}]
            })
        }
    }

    impl JsonSchema for super::Pattern {
        fn schema_name() -> Cow<'static, str> {
            "Pattern".into()
        }
        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "description": "A regular expression (Rust regex syntax)",
                "type": "string",
                "format": "regex"
            })
        }
    }

    impl JsonSchema for super::Secret {
        fn schema_name() -> Cow<'static, str> {
            "Secret".into()
        }
        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "description": "A credential; write ${ENV_VAR} rather than the value itself",
                "type": "string"
            })
        }
    }
}
