//! Cache keys: what must match exactly for a stored answer to serve a
//! request, and what may merely be similar.
//!
//! Everything that changes the answer goes into the **context digest**: the
//! scope (the consumer, unless the cache is global), the model after
//! mapping, every message but the last user turn's text (system prompt and
//! earlier turns included), tools and tool choice, `response_format`,
//! sampling parameters (`temperature`, `top_p`, `seed`, `n`, `stop`,
//! penalties, `logit_bias`, `logprobs`), the output budget, and any
//! parameter Loom does not know (it may change the answer too). Only the
//! final user turn is left out: it is what the embedding compares. The
//! **exact digest** adds that turn's text, for the lookup that needs no
//! embedding. Fields that only shape the transport (`stream`,
//! `stream_options`, `user`, `metadata`, `store`, `service_tier`) do not
//! count: a streamed request can be served from a whole answer and back.
//!
//! Digests are SHA-256, so that two different requests cannot share a key by
//! accident or by design.

use aws_lc_rs::digest::{Context, SHA256};
use loom_models::chat::{ChatRequest, Content, Role};

/// A SHA-256 digest: the key of a cache entry.
pub type Digest = [u8; 32];

/// A digest in lowercase hex, appended to `out` (shared backends name
/// entries by it).
pub fn push_hex(out: &mut String, d: &Digest) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in d {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
}

/// A request's cache identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// Everything but the final user turn's text.
    pub context: [u8; 32],
    /// The context and that text: equal for identical requests.
    pub exact: [u8; 32],
    /// The final user turn's text, for the embedding and the structural
    /// guards of a similarity lookup.
    pub prompt: String,
}

/// Why a request is not cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotCacheable {
    /// The last message is not a user turn with text (a tool result, say).
    NoUserTurn,
    /// `temperature` is above the configured limit: the client asked for variety.
    Sampled,
    /// `temperature` is absent and the configuration does not treat that as 0.
    DefaultTemperature,
    /// More than one choice (`n` > 1).
    SeveralChoices,
}

/// Builds cache keys; `absent_temperature_is_zero` is the configuration's
/// choice for requests that leave `temperature` out (providers default to 1).
#[derive(Debug, Clone, Copy)]
pub struct KeyBuilder {
    pub absent_temperature_is_zero: bool,
    /// An explicit `temperature` above this is not cached.
    pub max_temperature: f64,
}

impl KeyBuilder {
    /// The key of `req` in `scope` (a consumer name, or `""` for a global
    /// cache), or why it is not cacheable.
    pub fn key(&self, scope: &str, req: &ChatRequest) -> Result<CacheKey, NotCacheable> {
        match req.temperature {
            Some(t) if t > self.max_temperature => return Err(NotCacheable::Sampled),
            None if !self.absent_temperature_is_zero => {
                return Err(NotCacheable::DefaultTemperature);
            }
            _ => {}
        }
        if req.n.is_some_and(|n| n > 1) {
            return Err(NotCacheable::SeveralChoices);
        }
        let (last, earlier) = req.messages.split_last().ok_or(NotCacheable::NoUserTurn)?;
        if last.role != Role::User {
            return Err(NotCacheable::NoUserTurn);
        }
        let prompt = match &last.content {
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) if parts.iter().all(|p| p.text.is_some()) => parts
                .iter()
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join("\n"),
            // Images or audio in the final turn: not comparable by text.
            _ => return Err(NotCacheable::NoUserTurn),
        };
        let mut ctx = Context::new(&SHA256);
        let mut field = |name: &str, value: &[u8]| {
            // Length-prefixed, so no two field sequences hash alike.
            ctx.update(&(name.len() as u64).to_le_bytes());
            ctx.update(name.as_bytes());
            ctx.update(&(value.len() as u64).to_le_bytes());
            ctx.update(value);
        };
        field("scope", scope.as_bytes());
        field("model", req.model.as_bytes());
        for m in earlier {
            field("message", &serde_json::to_vec(m).unwrap_or_default());
        }
        // The last turn's other fields (a name, say) are context too.
        let mut last_rest = last.clone();
        last_rest.content = None;
        field("last", &serde_json::to_vec(&last_rest).unwrap_or_default());
        let mut params = req.clone();
        params.messages.clear();
        params.model.clear();
        params.stream = None;
        params.stream_options = None;
        params.user = None;
        params.metadata = None;
        params.store = None;
        params.service_tier = None;
        // An absent temperature counts as the zero it is treated as.
        params.temperature = Some(params.temperature.unwrap_or(0.0));
        field("params", &serde_json::to_vec(&params).unwrap_or_default());
        let context: [u8; 32] = ctx.finish().as_ref().try_into().unwrap_or([0; 32]);
        let mut ex = Context::new(&SHA256);
        ex.update(&context);
        ex.update(prompt.as_bytes());
        let exact: [u8; 32] = ex.finish().as_ref().try_into().unwrap_or([0; 32]);
        Ok(CacheKey {
            context,
            exact,
            prompt,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: serde_json::Value) -> ChatRequest {
        serde_json::from_value(v).expect("request")
    }

    fn base() -> serde_json::Value {
        serde_json::json!({
            "model": "gpt-4o",
            "temperature": 0,
            "messages": [
                {"role": "system", "content": "You are a travel agent."},
                {"role": "user", "content": "Best time to visit Lisbon?"}
            ]
        })
    }

    const KEYS: KeyBuilder = KeyBuilder {
        absent_temperature_is_zero: false,
        max_temperature: 0.0,
    };

    #[test]
    fn identical_requests_share_every_digest_and_transport_fields_do_not_count() {
        let a = KEYS.key("app", &req(base())).expect("cacheable");
        let mut v = base();
        v["stream"] = true.into();
        v["stream_options"] = serde_json::json!({"include_usage": true});
        v["user"] = "u-42".into();
        let b = KEYS.key("app", &req(v)).expect("cacheable");
        assert_eq!(a, b);
        assert_eq!(a.prompt, "Best time to visit Lisbon?");
    }

    #[test]
    fn what_changes_the_answer_changes_the_context() {
        let a = KEYS.key("app", &req(base())).expect("cacheable");
        let mut changes: Vec<(&str, serde_json::Value)> = Vec::new();
        let mut v = base();
        v["messages"][0]["content"] = "You are a pirate.".into();
        changes.push(("system prompt", v));
        let mut v = base();
        v["model"] = "gpt-4o-mini".into();
        changes.push(("model", v));
        let mut v = base();
        v["max_tokens"] = 10.into();
        changes.push(("max_tokens", v));
        let mut v = base();
        v["response_format"] = serde_json::json!({"type": "json_object"});
        changes.push(("response_format", v));
        let mut v = base();
        v["tools"] =
            serde_json::json!([{"type": "function", "function": {"name": "f", "parameters": {}}}]);
        changes.push(("tools", v));
        let mut v = base();
        v["seed"] = 7.into();
        changes.push(("seed", v));
        let mut v = base();
        v["some_future_knob"] = 1.into();
        changes.push(("unknown parameter", v));
        let mut v = base();
        v["messages"].as_array_mut().expect("array").insert(
            1,
            serde_json::json!({"role": "user", "content": "I hate crowds."}),
        );
        changes.push(("earlier turn", v));
        for (what, v) in changes {
            let b = KEYS.key("app", &req(v)).expect("cacheable");
            assert_ne!(a.context, b.context, "{what}");
            assert_ne!(a.exact, b.exact, "{what}");
        }
        // Another consumer never shares a key.
        assert_ne!(
            a.exact,
            KEYS.key("other", &req(base())).expect("cacheable").exact
        );
        // A paraphrase of the last turn keeps the context and changes the exact key.
        let mut v = base();
        v["messages"][1]["content"] = "When should I go to Lisbon?".into();
        let b = KEYS.key("app", &req(v)).expect("cacheable");
        assert_eq!(a.context, b.context);
        assert_ne!(a.exact, b.exact);
    }

    #[test]
    fn sampled_and_multi_choice_requests_are_not_cached() {
        let mut v = base();
        v["temperature"] = serde_json::json!(0.7);
        assert_eq!(KEYS.key("app", &req(v)), Err(NotCacheable::Sampled));
        let mut v = base();
        v.as_object_mut().expect("object").remove("temperature");
        assert_eq!(
            KEYS.key("app", &req(v.clone())),
            Err(NotCacheable::DefaultTemperature)
        );
        let lenient = KeyBuilder {
            absent_temperature_is_zero: true,
            max_temperature: 0.0,
        };
        assert_eq!(
            lenient.key("app", &req(v)).expect("cacheable").exact,
            KEYS.key("app", &req(base())).expect("cacheable").exact
        );
        let mut v = base();
        v["n"] = 2.into();
        assert_eq!(KEYS.key("app", &req(v)), Err(NotCacheable::SeveralChoices));
        let mut v = base();
        v["messages"]
            .as_array_mut()
            .expect("array")
            .push(serde_json::json!({"role": "tool", "tool_call_id": "c1", "content": "42"}));
        assert_eq!(KEYS.key("app", &req(v)), Err(NotCacheable::NoUserTurn));
    }
}
