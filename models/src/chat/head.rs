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

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The fields of a chat request the gateway decides with.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ChatHead<'a> {
    #[serde(borrow)]
    pub model: Cow<'a, str>,
    pub messages: Messages,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamFlags>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    pub max_completion_tokens: Option<u64>,
}

impl ChatHead<'_> {
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
pub struct StreamFlags {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// The conversation, counted: how many messages, and the length in bytes of
/// their text as [`Message::text_len`](super::Message::text_len) measures it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Messages {
    pub count: usize,
    pub text_len: usize,
}

impl<'de> Deserialize<'de> for Messages {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct List;
        impl<'de> Visitor<'de> for List {
            type Value = Messages;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of messages")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Messages, A::Error> {
                let mut out = Messages::default();
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

/// One message: its content's text length; its `role` must be a string;
/// every other member is skipped.
#[derive(Deserialize)]
struct MessageText {
    #[allow(dead_code)] // read to check that it is there and a string
    role: Len,
    #[serde(default)]
    content: Option<ContentLen>,
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
                            map.next_value::<Len>()?;
                            kind = true;
                        }
                        "text" => text = map.next_value::<Option<Len>>()?.map(|l| l.0),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                if !kind {
                    return Err(de::Error::missing_field("type"));
                }
                Ok(PartText(text))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{ChatRequest, Message};

    fn head(json: &str) -> Result<ChatHead<'_>, serde_json::Error> {
        serde_json::from_str(json)
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
               {"role":"user","content":"Hi \"there\" \u00e9"}],"temperature":0.2,"max_tokens":200}"#,
        );
        agrees(
            r#"{"messages":[{"role":"user","content":[{"type":"text","text":"a"},
               {"type":"image_url","image_url":{"url":"https://x/y.png"}},{"type":"text","text":"bcd"}]},
               {"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function",
               "function":{"name":"f","arguments":"{}"}}]}],
               "model":"o3","stream":true,"stream_options":{"include_usage":true,"x":1},
               "max_completion_tokens":5,"max_tokens":9,"tools":[{"type":"function"}],"modalities":["text"]}"#,
        );
        agrees(r#"{"model":"m","messages":[{"role":"user"}],"stream":false}"#);
    }

    #[test]
    fn borrows_the_model_unless_it_is_escaped() {
        let plain = r#"{"model":"gpt-4o","messages":[]}"#;
        assert!(matches!(
            head(plain).unwrap().model,
            Cow::Borrowed("gpt-4o")
        ));
        let escaped = r#"{"model":"gpt\u002d4o","messages":[]}"#;
        assert_eq!(head(escaped).unwrap().model, "gpt-4o");
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
                r#"{"model":"m","messages":[],"model":"n"}"#,
                "duplicate field `model`",
            ),
            (
                r#"{"model":"m","messages":[],"seed":[1,}"#,
                "expected value",
            ),
            (r#"{"model":"m","messages":[]} x"#, "trailing characters"),
        ] {
            let err = head(json).unwrap_err().to_string();
            assert!(err.contains(why), "{json}: {err}");
        }
    }
}
