//! What the gateway reads of a chat request to route, limit and account for
//! it, without building the whole [`ChatRequest`](super::ChatRequest).
//!
//! A request that goes upstream as the client sent it (no guardrail rewrite,
//! no model mapping, a provider speaking OpenAI's format) never needs more:
//! the model, the stream flags, the completion budget, and how many messages
//! carry how much text. Reading only that borrows the model from the body and
//! allocates nothing else, where the whole request is a tree of strings and
//! maps; every other field is checked for JSON syntax and skipped. What is
//! read is type-checked as strictly as the whole request would be.

mod cursor;

use std::borrow::Cow;
use std::fmt;

use cursor::{Cursor, Num};

/// The fields of a chat request the gateway decides with.
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(test, derive(serde::Deserialize))]
pub struct ChatHead<'a> {
    #[cfg_attr(test, serde(borrow))]
    pub model: Cow<'a, str>,
    pub messages: Messages,
    #[cfg_attr(test, serde(default))]
    pub stream: Option<bool>,
    #[cfg_attr(test, serde(default))]
    pub stream_options: Option<StreamFlags>,
    #[cfg_attr(test, serde(default))]
    pub max_tokens: Option<u64>,
    #[cfg_attr(test, serde(default))]
    pub max_completion_tokens: Option<u64>,
}

/// Why a chat request's head could not be read, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadError {
    message: String,
    missing: Option<&'static str>,
}

impl HeadError {
    fn new(message: String) -> HeadError {
        HeadError {
            message,
            missing: None,
        }
    }

    /// The required field that is absent, when that is the error.
    pub fn missing_field(&self) -> Option<&'static str> {
        self.missing
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HeadError {}

impl<'a> ChatHead<'a> {
    /// Reads the head of a chat request body. The body must be one JSON
    /// object, all of it valid JSON (as `serde_json` reads it); of its
    /// members only those of [`ChatHead`] are typed.
    ///
    /// Written for this one shape rather than derived with serde: serde_json
    /// spent about 3,700 instructions per request on the benchmark's
    /// 228-byte request (`bench/instructions.sh`), two thirds of them in its
    /// per-token machinery; this reader scans strings eight bytes at a time
    /// and walks the rest once.
    pub fn parse(text: &'a str) -> Result<ChatHead<'a>, HeadError> {
        let mut c = Cursor::new(text);
        match c.ws() {
            Some(b'{') => {}
            None => return Err(c.error("EOF while parsing a value")),
            Some(_) => return Err(c.error("invalid type: expected a chat request object")),
        }
        let mut model = None;
        let mut messages = None;
        let (mut stream, mut options, mut max, mut max_completion) = (None, None, None, None);
        if c.open(b'}')? {
            loop {
                let at = c.i;
                let key = c.key()?;
                let name = key.text();
                // As serde does: a repeated field is refused before its value is read.
                let seen = match name.as_ref() {
                    "model" => model.is_some(),
                    "messages" => messages.is_some(),
                    "stream" => stream.is_some(),
                    "stream_options" => options.is_some(),
                    "max_tokens" => max.is_some(),
                    "max_completion_tokens" => max_completion.is_some(),
                    _ => false,
                };
                if seen {
                    c.i = at;
                    return Err(c.error(format_args!("duplicate field `{name}`")));
                }
                match name.as_ref() {
                    "model" => model = Some(read_model(&mut c)?),
                    "messages" => messages = Some(read_messages(&mut c)?),
                    "stream" => stream = Some(read_bool(&mut c, "stream")?),
                    "stream_options" => options = Some(read_flags(&mut c)?),
                    "max_tokens" => max = Some(read_count(&mut c, "max_tokens")?),
                    "max_completion_tokens" => {
                        max_completion = Some(read_count(&mut c, "max_completion_tokens")?);
                    }
                    _ => c.skip(1)?,
                }
                if !c.more(b'}')? {
                    break;
                }
            }
        }
        if c.ws().is_some() {
            return Err(c.error("trailing characters"));
        }
        let missing = |field: &'static str| HeadError {
            missing: Some(field),
            ..c.error(format_args!("missing field `{field}`"))
        };
        Ok(ChatHead {
            model: model.ok_or_else(|| missing("model"))?,
            messages: messages.ok_or_else(|| missing("messages"))?,
            stream: stream.flatten(),
            stream_options: options.flatten(),
            max_tokens: max.flatten(),
            max_completion_tokens: max_completion.flatten(),
        })
    }

    /// Whether the client asked for a server-sent-event stream.
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether the client asked for the final usage chunk of a stream.
    pub fn wants_stream_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }

    /// The completion-length cap the client set, whichever field it used.
    pub fn max_output_tokens(&self) -> Option<u64> {
        self.max_completion_tokens.or(self.max_tokens)
    }
}

/// `stream_options.include_usage`; other options are skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StreamFlags {
    pub include_usage: Option<bool>,
}

/// `model`: a string.
fn read_model<'a>(c: &mut Cursor<'a>) -> Result<Cow<'a, str>, HeadError> {
    match c.ws() {
        Some(b'"') => Ok(c.string(true)?.text()),
        _ => Err(c.error("invalid type: `model` must be a string")),
    }
}

/// A boolean or `null`.
fn read_bool(c: &mut Cursor<'_>, field: &str) -> Result<Option<bool>, HeadError> {
    match c.ws() {
        Some(b't') => c.literal(b"true").map(|()| Some(true)),
        Some(b'f') => c.literal(b"false").map(|()| Some(false)),
        Some(b'n') => c.literal(b"null").map(|()| None),
        _ => Err(c.error(format_args!("invalid type: `{field}` must be a boolean"))),
    }
}

/// A token count (a whole number from 0 to 2^64 - 1) or `null`.
fn read_count(c: &mut Cursor<'_>, field: &str) -> Result<Option<u64>, HeadError> {
    let at = c.i;
    match c.ws() {
        Some(b'n') => c.literal(b"null").map(|()| None),
        Some(b'-' | b'0'..=b'9') => match c.number()? {
            Num::Count(n) => Ok(Some(n)),
            Num::Other => {
                c.i = at;
                c.ws();
                Err(c.error(format_args!(
                    "invalid value: `{field}` must be a whole number of tokens, 0 or more"
                )))
            }
        },
        _ => Err(c.error(format_args!("invalid type: `{field}` must be a number"))),
    }
}

/// `stream_options`: an object (only `include_usage` read) or `null`.
fn read_flags(c: &mut Cursor<'_>) -> Result<Option<StreamFlags>, HeadError> {
    match c.ws() {
        Some(b'n') => return c.literal(b"null").map(|()| None),
        Some(b'{') => {}
        _ => return Err(c.error("invalid type: `stream_options` must be an object")),
    }
    let mut usage = None;
    if c.open(b'}')? {
        loop {
            let at = c.i;
            let key = c.key()?;
            if key.text() == "include_usage" {
                if usage.is_some() {
                    c.i = at;
                    return Err(c.error("duplicate field `include_usage`"));
                }
                usage = Some(read_bool(c, "include_usage")?);
            } else {
                c.skip(2)?;
            }
            if !c.more(b'}')? {
                break;
            }
        }
    }
    Ok(Some(StreamFlags {
        include_usage: usage.flatten(),
    }))
}

/// `messages`: a list of message objects, counted.
fn read_messages(c: &mut Cursor<'_>) -> Result<Messages, HeadError> {
    if c.ws() != Some(b'[') {
        return Err(c.error("invalid type: `messages` must be an array of messages"));
    }
    let mut out = Messages::default();
    if c.open(b']')? {
        loop {
            out.text_len += read_message(c)?;
            out.count += 1;
            if !c.more(b']')? {
                break;
            }
        }
    }
    Ok(out)
}

/// One message: an object with a string `role`; its content's text length.
fn read_message(c: &mut Cursor<'_>) -> Result<usize, HeadError> {
    if c.ws() != Some(b'{') {
        return Err(c.error("invalid type: a message must be an object"));
    }
    let (mut role, mut content) = (false, None);
    if c.open(b'}')? {
        loop {
            let at = c.i;
            let key = c.key()?;
            let name = key.text();
            let seen = match name.as_ref() {
                "role" => role,
                "content" => content.is_some(),
                _ => false,
            };
            if seen {
                c.i = at;
                return Err(c.error(format_args!("duplicate field `{name}`")));
            }
            match name.as_ref() {
                "role" => {
                    if c.ws() != Some(b'"') {
                        return Err(c.error("invalid type: `role` must be a string"));
                    }
                    c.string(true)?;
                    role = true;
                }
                "content" => content = Some(read_content(c)?),
                _ => c.skip(3)?,
            }
            if !c.more(b'}')? {
                break;
            }
        }
    }
    if !role {
        return Err(HeadError {
            missing: Some("role"),
            ..c.error("missing field `role`")
        });
    }
    Ok(content.unwrap_or(0))
}

/// A message's content: a string, a list of typed parts (their texts
/// joined by newlines), or `null`; its text length.
fn read_content(c: &mut Cursor<'_>) -> Result<usize, HeadError> {
    match c.ws() {
        Some(b'"') => return Ok(c.string(true)?.len),
        Some(b'n') => return c.literal(b"null").map(|()| 0),
        Some(b'[') => {}
        _ => {
            return Err(
                c.error("invalid type: `content` must be a string or an array of content parts")
            );
        }
    }
    let (mut texts, mut len) = (0usize, 0usize);
    if c.open(b']')? {
        loop {
            if let Some(n) = read_part(c)? {
                texts += 1;
                len += n;
            }
            if !c.more(b']')? {
                break;
            }
        }
    }
    Ok(len + texts.saturating_sub(1))
}

/// A content part: an object with a string `type`; the length of its
/// `text`, if it has one.
fn read_part(c: &mut Cursor<'_>) -> Result<Option<usize>, HeadError> {
    if c.ws() != Some(b'{') {
        return Err(c.error("invalid type: a content part must be an object"));
    }
    let (mut kind, mut text) = (false, None);
    if c.open(b'}')? {
        loop {
            let at = c.i;
            let key = c.key()?;
            let name = key.text();
            let seen = match name.as_ref() {
                "type" => kind,
                "text" => text.is_some(),
                _ => false,
            };
            if seen {
                c.i = at;
                return Err(c.error(format_args!("duplicate field `{name}`")));
            }
            match name.as_ref() {
                "type" => {
                    if c.ws() != Some(b'"') {
                        return Err(c.error("invalid type: `type` must be a string"));
                    }
                    c.string(true)?;
                    kind = true;
                }
                "text" => {
                    text = Some(match c.ws() {
                        Some(b'"') => Some(c.string(true)?.len),
                        Some(b'n') => c.literal(b"null").map(|()| None)?,
                        _ => return Err(c.error("invalid type: `text` must be a string")),
                    });
                }
                _ => c.skip(5)?,
            }
            if !c.more(b'}')? {
                break;
            }
        }
    }
    if !kind {
        return Err(HeadError {
            missing: Some("type"),
            ..c.error("missing field `type`")
        });
    }
    Ok(text.flatten())
}

/// The conversation, counted: how many messages, and the length in bytes of
/// their text as [`Message::text_len`](super::Message::text_len) measures it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Messages {
    pub count: usize,
    pub text_len: usize,
}

/// The same reading done with serde: the reference the hand-written reader
/// is tested against.
#[cfg(test)]
mod oracle {
    use std::borrow::Cow;
    use std::fmt;

    use serde::Deserialize;
    use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

    impl<'de> Deserialize<'de> for super::Messages {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct List;
            impl<'de> Visitor<'de> for List {
                type Value = super::Messages;

                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an array of messages")
                }

                fn visit_seq<A: SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> Result<super::Messages, A::Error> {
                    let mut out = super::Messages::default();
                    while let Some(m) = seq.next_element::<MessageText>()? {
                        out.count += 1;
                        out.text_len += m.content.map_or(0, |c| c.0);
                    }
                    Ok(out)
                }
            }
            d.deserialize_seq(List)
        }
    }

    /// `stream_options`: a map only, as `StreamOptions` is.
    impl<'de> Deserialize<'de> for super::StreamFlags {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Map;
            impl<'de> Visitor<'de> for Map {
                type Value = super::StreamFlags;

                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("stream options")
                }

                fn visit_map<A: MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<super::StreamFlags, A::Error> {
                    let mut usage = None;
                    while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                        if key == "include_usage" {
                            if usage.is_some() {
                                return Err(de::Error::duplicate_field("include_usage"));
                            }
                            usage = Some(map.next_value::<Option<bool>>()?);
                        } else {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                    Ok(super::StreamFlags {
                        include_usage: usage.flatten(),
                    })
                }
            }
            d.deserialize_map(Map)
        }
    }

    /// One message: its content's text length; its `role` must be a string;
    /// every other member is skipped. A map only, as `Message` is.
    struct MessageText {
        content: Option<ContentLen>,
    }

    impl<'de> Deserialize<'de> for MessageText {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Map;
            impl<'de> Visitor<'de> for Map {
                type Value = MessageText;

                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a message")
                }

                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MessageText, A::Error> {
                    let (mut role, mut content) = (false, None);
                    while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                        match key.as_ref() {
                            "role" => {
                                if std::mem::replace(&mut role, true) {
                                    return Err(de::Error::duplicate_field("role"));
                                }
                                map.next_value::<Len>()?;
                            }
                            "content" => {
                                if content.is_some() {
                                    return Err(de::Error::duplicate_field("content"));
                                }
                                content = Some(map.next_value::<Option<ContentLen>>()?);
                            }
                            _ => {
                                map.next_value::<IgnoredAny>()?;
                            }
                        }
                    }
                    if !role {
                        return Err(de::Error::missing_field("role"));
                    }
                    Ok(MessageText {
                        content: content.flatten(),
                    })
                }
            }
            d.deserialize_map(Map)
        }
    }

    /// Text length of a message's content: a string, or the text parts of an
    /// array joined by newlines.
    struct ContentLen(usize);

    impl<'de> Deserialize<'de> for ContentLen {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Shape;
            impl<'de> Visitor<'de> for Shape {
                type Value = ContentLen;

                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a string or an array of content parts")
                }

                fn visit_str<E: de::Error>(self, s: &str) -> Result<ContentLen, E> {
                    Ok(ContentLen(s.len()))
                }

                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ContentLen, A::Error> {
                    let (mut n, mut len) = (0usize, 0usize);
                    while let Some(part) = seq.next_element::<PartText>()? {
                        if let Some(t) = part.0 {
                            n += 1;
                            len += t;
                        }
                    }
                    Ok(ContentLen(len + n.saturating_sub(1)))
                }
            }
            d.deserialize_any(Shape)
        }
    }

    /// A content part: the length of its `text`, if it has one. Like
    /// [`ContentPart`](super::ContentPart), a part must say its `type`.
    struct PartText(Option<usize>);

    impl<'de> Deserialize<'de> for PartText {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Part;
            impl<'de> Visitor<'de> for Part {
                type Value = PartText;

                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a content part")
                }

                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PartText, A::Error> {
                    let (mut kind, mut text) = (false, None);
                    while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                        match key.as_ref() {
                            "type" => {
                                if std::mem::replace(&mut kind, true) {
                                    return Err(de::Error::duplicate_field("type"));
                                }
                                map.next_value::<Len>()?;
                            }
                            "text" => {
                                if text.is_some() {
                                    return Err(de::Error::duplicate_field("text"));
                                }
                                text = Some(map.next_value::<Option<Len>>()?.map(|l| l.0));
                            }
                            _ => {
                                map.next_value::<IgnoredAny>()?;
                            }
                        }
                    }
                    if !kind {
                        return Err(de::Error::missing_field("type"));
                    }
                    Ok(PartText(text.flatten()))
                }
            }
            d.deserialize_map(Part)
        }
    }

    /// The length of a string, which is not kept.
    struct Len(usize);

    impl<'de> Deserialize<'de> for Len {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Text;
            impl Visitor<'_> for Text {
                type Value = Len;

                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a string")
                }

                fn visit_str<E: de::Error>(self, s: &str) -> Result<Len, E> {
                    Ok(Len(s.len()))
                }
            }
            d.deserialize_str(Text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{ChatRequest, Message};
    use proptest::prelude::*;

    fn head(json: &str) -> Result<ChatHead<'_>, HeadError> {
        ChatHead::parse(json)
    }

    /// The head agrees with the whole request on everything it reads.
    fn agrees(json: &str) {
        let h = head(json).unwrap();
        let full: ChatRequest = serde_json::from_str(json).unwrap();
        assert_eq!(h.model, full.model);
        assert_eq!(h.messages.count, full.messages.len());
        let text: usize = full.messages.iter().map(Message::text_len).sum();
        assert_eq!(h.messages.text_len, text, "{json}");
        assert_eq!(h.is_stream(), full.is_stream());
        assert_eq!(h.wants_stream_usage(), full.wants_stream_usage());
        assert_eq!(h.max_output_tokens(), full.max_output_tokens());
    }

    #[test]
    fn reads_what_the_whole_request_reads() {
        agrees(
            r#"{"model":"gpt-4o","messages":[{"role":"system","content":"Be brief."},
               {"role":"user","content":"Hi \"there\" \u00e9 \ud83d\ude00 \n\t/ \/"}],"temperature":0.2,"max_tokens":200}"#,
        );
        agrees(
            r#"{"messages":[{"role":"user","content":[{"type":"text","text":"a"},
               {"type":"image_url","image_url":{"url":"https://x/y.png"}},{"type":"text","text":"bcd"}]},
               {"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function",
               "function":{"name":"f","arguments":"{}"}}]}],
               "model":"o3","stream":true,"stream_options":{"include_usage":true,"x":1},
               "max_completion_tokens":5,"max_tokens":9,"tools":[{"type":"function"}],"modalities":["text"]}"#,
        );
        agrees(r#" {"model":"m","messages":[{"role":"user"}],"stream":false,"x":-12.5e-3} "#);
    }

    #[test]
    fn borrows_the_model_unless_it_is_escaped() {
        let plain = r#"{"model":"gpt-4o","messages":[]}"#;
        assert!(matches!(
            head(plain).unwrap().model,
            Cow::Borrowed("gpt-4o")
        ));
        let escaped = r#"{"model":"gpt\u002d4o \ud83d\ude00","messages":[]}"#;
        assert_eq!(head(escaped).unwrap().model, "gpt-4o \u{1f600}");
        let key = r#"{"mod\u0065l":"m","messages":[]}"#;
        assert_eq!(head(key).unwrap().model, "m");
    }

    #[test]
    fn refuses_what_it_reads_when_mistyped() {
        for (json, why) in [
            (r#"{"messages":[]}"#, "missing field `model`"),
            (r#"{"model":"m"}"#, "missing field `messages`"),
            (r#"{"model":1,"messages":[]}"#, "invalid type"),
            (r#"{"model":"m","messages":{}}"#, "invalid type"),
            (
                r#"{"model":"m","messages":[{"role":"user","content":7}]}"#,
                "a string or an array of content parts",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":[{"text":"x"}]}]}"#,
                "missing field `type`",
            ),
            (
                r#"{"model":"m","messages":[{"content":"x"}]}"#,
                "missing field `role`",
            ),
            (r#"{"model":"m","messages":[{"role":1}]}"#, "invalid type"),
            (
                r#"{"model":"m","messages":[],"stream":"yes"}"#,
                "invalid type",
            ),
            (
                r#"{"model":"m","messages":[],"max_tokens":-1}"#,
                "invalid value",
            ),
            (
                r#"{"model":"m","messages":[],"max_tokens":2.0}"#,
                "invalid value",
            ),
            (
                r#"{"model":"m","messages":[],"model":"n"}"#,
                "duplicate field `model`",
            ),
            (
                r#"{"model":"m","messages":[],"seed":[1,}"#,
                "expected value",
            ),
            (r#"{"model":"m","messages":[],"seed":01}"#, "invalid number"),
            (
                r#"{"model":"m","messages":[],"x":"\u12"}"#,
                "invalid escape",
            ),
            (r#"{"model":"\ud800","messages":[]}"#, "surrogate"),
            (
                "{\"model\":\"a\u{1}\",\"messages\":[]}",
                "control character",
            ),
            (r#"{"model":"m","messages":[],}"#, "trailing comma"),
            (r#"{"model":"m","messages":[]} x"#, "trailing characters"),
            (
                r#"{"model":"m","messages":[]"#,
                "EOF while parsing an object",
            ),
            (r#"{"model":"m","messages":[],"x":tru}"#, "expected ident"),
            (r#"["m"]"#, "invalid type"),
            ("", "EOF"),
        ] {
            let err = head(json).unwrap_err().to_string();
            assert!(err.contains(why), "{json}: {err}");
            assert!(err.contains(" at line "), "{err}");
        }
        let deep = format!(
            r#"{{"model":"m","messages":[],"x":{}{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert!(
            head(&deep)
                .unwrap_err()
                .to_string()
                .contains("recursion limit")
        );
        let err = head(r#"{"model":"m"}"#).unwrap_err();
        assert_eq!(err.missing_field(), Some("messages"));
    }

    fn scalar() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "null",
            "true",
            "false",
            "0",
            "7",
            "200",
            "-1",
            "1.5",
            "1e2",
            "-0",
            "2.0",
            "18446744073709551615",
            "18446744073709551616",
            "01",
            "1.",
            "\"x\"",
            "\"\"",
            "\"a\\nb\"",
            "\"\\u00e9\"",
            "\"\\ud83d\\ude00\"",
            "\"\\ud800\"",
            "\"\\udc00x\"",
            "\"é✓ long enough to be scanned eight bytes at a time\"",
            "\"user\"",
            "\"text\"",
        ])
        .prop_map(str::to_owned)
    }

    fn key() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "\"model\"",
            "\"messages\"",
            "\"role\"",
            "\"content\"",
            "\"type\"",
            "\"text\"",
            "\"stream\"",
            "\"stream_options\"",
            "\"include_usage\"",
            "\"max_tokens\"",
            "\"max_completion_tokens\"",
            "\"temperature\"",
            "\"x\"",
            "\"mod\\u0065l\"",
        ])
        .prop_map(str::to_owned)
    }

    fn value() -> impl Strategy<Value = String> {
        scalar().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec((key(), inner), 0..4).prop_map(|v| {
                    let members: Vec<String> = v.iter().map(|(k, x)| format!("{k}:{x}")).collect();
                    format!("{{{}}}", members.join(","))
                }),
            ]
        })
    }

    fn content() -> impl Strategy<Value = String> {
        let part = prop_oneof![
            Just(r#"{"type":"text","text":"hi \u00e9"}"#.to_owned()),
            Just(r#"{"type":"image_url","image_url":{"url":"u"},"text":null}"#.to_owned()),
            prop::collection::vec((key(), scalar()), 0..3).prop_map(|v| {
                let members: Vec<String> = v.iter().map(|(k, x)| format!("{k}:{x}")).collect();
                format!("{{{}}}", members.join(","))
            }),
            scalar(),
        ];
        prop_oneof![
            scalar(),
            prop::collection::vec(part, 0..3).prop_map(|v| format!("[{}]", v.join(" , "))),
        ]
    }

    fn message() -> impl Strategy<Value = String> {
        prop_oneof![
            content().prop_map(|c| format!(r#"{{"role":"user","content":{c}}}"#)),
            (key(), content()).prop_map(|(k, c)| format!(r#"{{ "role" : "tool", {k}: {c} }}"#)),
            Just(r#"{"role":"assistant","content":null,"tool_calls":[{"id":"1"}]}"#.to_owned()),
            scalar(),
        ]
    }

    fn request() -> impl Strategy<Value = String> {
        let messages = prop_oneof![
            prop::collection::vec(message(), 0..3).prop_map(|v| format!("[{}]", v.join(","))),
            scalar(),
        ];
        let options = prop::sample::select(vec![
            "null",
            r#"{"include_usage":true}"#,
            r#"{"x":[1],"include_usage":null}"#,
            "true",
        ]);
        (
            prop_oneof![Just("\"gpt-4o\"".to_owned()), scalar()],
            messages,
            options,
            prop::collection::vec((key(), value()), 0..3),
            any::<u8>(),
        )
            .prop_map(|(model, messages, options, extra, order)| {
                let mut members = vec![
                    format!("\"model\":{model}"),
                    format!("\"messages\" :\n{messages}"),
                    format!("\"stream_options\":{options}"),
                ];
                members.extend(extra.iter().map(|(k, v)| format!("{k}:{v}")));
                let n = members.len();
                members.rotate_left(usize::from(order) % n);
                format!("{{{}}}", members.join(", "))
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// The hand-written reader accepts exactly what serde_json accepts
        /// for the same fields, reads the same values, and names the same
        /// missing field; also after one byte of a request is changed.
        #[test]
        fn reads_like_serde(
            text in request(),
            edit in prop::option::of((any::<prop::sample::Index>(), 0u8..3, prop::sample::select(
                vec![b'"', b'{', b'}', b'[', b']', b',', b':', b'\\', b' ', b'0', b'n', b'-', b'e', 1u8],
            ))),
        ) {
            let mut bytes = text.into_bytes();
            if let Some((at, op, byte)) = edit {
                let i = at.index(bytes.len() + 1);
                match op {
                    0 => bytes.insert(i, byte),
                    1 if i < bytes.len() => { bytes.remove(i); }
                    _ if i < bytes.len() => bytes[i] = byte,
                    _ => {}
                }
            }
            let Ok(text) = String::from_utf8(bytes) else { return Ok(()) };
            let ours = ChatHead::parse(&text);
            let serde = serde_json::from_str::<ChatHead>(&text);
            match (&ours, &serde) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(a), Err(b)) => {
                    if let Some(field) = a.missing_field() {
                        let expected = format!("missing field `{field}`");
                        prop_assert!(b.to_string().contains(&expected), "{}: {} / {}", text, a, b);
                    }
                }
                _ => prop_assert!(false, "{}: ours {:?}, serde {:?}", text, ours, serde),
            }
        }
    }
}
