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
///
/// Like [`ChatRequest`](super::ChatRequest), a JSON object only (serde's
/// derive would also take an array), with each field at most once.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatHead<'a> {
    pub model: Cow<'a, str>,
    pub messages: Messages,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamFlags>,
    pub max_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
}

impl<'de: 'a, 'a> Deserialize<'de> for ChatHead<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Map<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Map<'a> {
            type Value = ChatHead<'a>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a chat completion request object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ChatHead<'a>, A::Error> {
                let mut model: Option<Cow<'a, str>> = None;
                let mut messages = None;
                let (mut stream, mut options, mut max, mut max_completion) =
                    (None, None, None, None);
                while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                    match key.as_ref() {
                        "model" => {
                            once(model.is_some(), "model")?;
                            model = Some(map.next_value::<Text<'de>>()?.0);
                        }
                        "messages" => {
                            once(messages.is_some(), "messages")?;
                            messages = Some(map.next_value::<Messages>()?);
                        }
                        "stream" => {
                            once(stream.is_some(), "stream")?;
                            stream = Some(map.next_value::<Option<bool>>()?);
                        }
                        "stream_options" => {
                            once(options.is_some(), "stream_options")?;
                            options = Some(map.next_value::<Option<StreamFlags>>()?);
                        }
                        "max_tokens" => {
                            once(max.is_some(), "max_tokens")?;
                            max = Some(map.next_value::<Option<u64>>()?);
                        }
                        "max_completion_tokens" => {
                            once(max_completion.is_some(), "max_completion_tokens")?;
                            max_completion = Some(map.next_value::<Option<u64>>()?);
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(ChatHead {
                    model: model.ok_or_else(|| de::Error::missing_field("model"))?,
                    messages: messages.ok_or_else(|| de::Error::missing_field("messages"))?,
                    stream: stream.flatten(),
                    stream_options: options.flatten(),
                    max_tokens: max.flatten(),
                    max_completion_tokens: max_completion.flatten(),
                })
            }
        }
        d.deserialize_map(Map(std::marker::PhantomData))
    }
}

/// Refuses a field met a second time (before its value is read, as serde's
/// derive does).
fn once<E: de::Error>(seen: bool, field: &'static str) -> Result<(), E> {
    if seen {
        Err(E::duplicate_field(field))
    } else {
        Ok(())
    }
}

/// A string borrowed from the body when it has no escapes: keys and the
/// model are read without allocating. (serde's own `Cow<str>` always copies.)
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Str;
        impl<'de> Visitor<'de> for Str {
            type Value = Text<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(s)))
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(s.to_owned())))
            }

            fn visit_string<E: de::Error>(self, s: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(s)))
            }
        }
        d.deserialize_str(Str)
    }
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
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StreamFlags {
    pub include_usage: Option<bool>,
}

/// An object only, as `StreamOptions` is.
impl<'de> Deserialize<'de> for StreamFlags {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Map;
        impl<'de> Visitor<'de> for Map {
            type Value = StreamFlags;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("stream options")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StreamFlags, A::Error> {
                let mut usage = None;
                while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                    if key == "include_usage" {
                        once(usage.is_some(), "include_usage")?;
                        usage = Some(map.next_value::<Option<bool>>()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(StreamFlags {
                    include_usage: usage.flatten(),
                })
            }
        }
        d.deserialize_map(Map)
    }
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
                while let Some(Measured(len, _)) = seq.next_element::<Measured<MessageShape>>()? {
                    out.count += 1;
                    out.text_len += len.unwrap_or(0);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(List)
    }
}

/// An object with a required string member and an optional member whose
/// text is measured: a message (`role`, `content`) or a content part
/// (`type`, `text`). Objects only, each member at most once, as `Message`
/// and `ContentPart` read them; other members are skipped.
trait Shape {
    const WHAT: &'static str;
    const REQUIRED: &'static str;
    const MEASURED: &'static str;
    /// The measured member's value, read for its length.
    type Measure: for<'de> Deserialize<'de> + Into<usize>;
}

/// A message: its `role` must be a string; its content's text length.
struct MessageShape;

impl Shape for MessageShape {
    const WHAT: &'static str = "a message";
    const REQUIRED: &'static str = "role";
    const MEASURED: &'static str = "content";
    type Measure = ContentLen;
}

/// A content part: it must say its `type`; the length of its `text`.
struct PartShape;

impl Shape for PartShape {
    const WHAT: &'static str = "a content part";
    const REQUIRED: &'static str = "type";
    const MEASURED: &'static str = "text";
    type Measure = Len;
}

/// The measured member's length, if the object has it (and it is not null).
struct Measured<S>(Option<usize>, std::marker::PhantomData<S>);

impl<'de, S: Shape> Deserialize<'de> for Measured<S> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Map<S>(std::marker::PhantomData<S>);
        impl<'de, S: Shape> Visitor<'de> for Map<S> {
            type Value = Measured<S>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(S::WHAT)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Measured<S>, A::Error> {
                let (mut required, mut measured) = (false, None);
                while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                    if key == S::REQUIRED {
                        once(required, S::REQUIRED)?;
                        map.next_value::<Len>()?;
                        required = true;
                    } else if key == S::MEASURED {
                        once(measured.is_some(), S::MEASURED)?;
                        measured = Some(map.next_value::<Option<S::Measure>>()?.map(Into::into));
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                if !required {
                    return Err(de::Error::missing_field(S::REQUIRED));
                }
                Ok(Measured(measured.flatten(), std::marker::PhantomData))
            }
        }
        d.deserialize_map(Map(std::marker::PhantomData))
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
                while let Some(Measured(text, _)) = seq.next_element::<Measured<PartShape>>()? {
                    if let Some(t) = text {
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

/// The length of a string, which is not kept.
struct Len(usize);

impl From<Len> for usize {
    fn from(l: Len) -> usize {
        l.0
    }
}

impl From<ContentLen> for usize {
    fn from(c: ContentLen) -> usize {
        c.0
    }
}

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
    use proptest::prelude::*;

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
        assert_eq!(h.is_stream(), full.stream.unwrap_or(false));
        let usage = full.stream_options.as_ref().and_then(|o| o.include_usage);
        assert_eq!(h.wants_stream_usage(), usage.unwrap_or(false));
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
            (r#"["m",[]]"#, "invalid type"),
            (r#"{"model":"m","messages":[["user","x"]]}"#, "invalid type"),
            (
                r#"{"model":"m","messages":[],"stream_options":[true]}"#,
                "invalid type",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","role":"x"}]}"#,
                "duplicate field `role`",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a","text":"b"}]}]}"#,
                "duplicate field `text`",
            ),
        ] {
            let err = head(json).unwrap_err().to_string();
            assert!(err.contains(why), "{json}: {err}");
        }
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

    /// Mostly keys the whole request keeps as they are (any value goes).
    fn benign_key() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => prop::sample::select(vec!["\"x\"", "\"metadata_x\"", "\"mod\\u0065lity\""])
                .prop_map(str::to_owned),
            1 => key(),
        ]
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
            1 => scalar(),
            2 => prop::collection::vec(part, 0..3).prop_map(|v| format!("[{}]", v.join(" , "))),
        ]
    }

    fn message() -> impl Strategy<Value = String> {
        prop_oneof![
            content().prop_map(|c| format!(r#"{{"role":"user","content":{c}}}"#)),
            (key(), content()).prop_map(|(k, c)| format!(r#"{{ "role" : "tool", {k}: {c} }}"#)),
            Just(r#"{"role":"assistant","content":null,"tool_calls":[{"id":"1","type":"function","function":{"name":"f","arguments":"{}"}}]}"#.to_owned()),
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
            prop::collection::vec((benign_key(), value()), 0..3),
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
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever the whole request accepts, the head accepts too, and
        /// reads the same values from it; also after one byte is changed.
        #[test]
        fn agrees_with_the_whole_request(
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
            let head = serde_json::from_str::<ChatHead>(&text);
            if let Ok(full) = serde_json::from_str::<ChatRequest>(&text) {
                let head = head.map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
                prop_assert_eq!(&head.model, &full.model);
                prop_assert_eq!(head.messages.count, full.messages.len());
                let len: usize = full.messages.iter().map(Message::text_len).sum();
                prop_assert_eq!(head.messages.text_len, len);
                prop_assert_eq!(head.stream, full.stream);
                let usage = full.stream_options.as_ref().and_then(|o| o.include_usage);
                prop_assert_eq!(head.stream_options.and_then(|o| o.include_usage), usage);
                prop_assert_eq!(head.max_output_tokens(), full.max_output_tokens());
            }
        }
    }
}
