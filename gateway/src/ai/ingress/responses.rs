//! OpenAI's Responses API: `POST /v1/responses`, what the OpenAI SDKs'
//! `client.responses.create`, the OpenAI Agents SDK and Codex call.
//!
//! A provider that serves the API itself (OpenAI, Azure OpenAI) gets the
//! client's request as it is and its answer comes back untranslated, events
//! included, while no stage rewrites the request or reads the answer. Every
//! other provider is reached through the canonical chat shape
//! (`loom_providers::responses`): the request translated once, the answer
//! translated back, a stream's chunks written as Responses events. Errors
//! keep OpenAI's envelope, which is this API's too.

use std::sync::Arc;

use bytes::Bytes;
use loom_guardrails::Guardrails;
use loom_models::chat::{ChatRequest, ChatResponse, Message};
use loom_models::responses::{Input, ResponsesRequest};
use loom_providers::Adapter as _;
use loom_providers::responses::{self, Echo, EventEncoder, OnDone};
use loom_providers::{Native, Target};

use super::{Answer, Attempt, Ingress};
use crate::ai::admit::uses_max_completion_tokens;
use crate::ai::guard::{self, Applied};
use crate::ai::relay::{Encoder, Source, Started};
use crate::ai::stored::Kept;
use crate::ai::{ApiError, JsonText, decode};
use crate::runtime::exchange::Exchange;

pub(crate) struct Responses {
    req: ResponsesRequest,
    body: Bytes,
    model: Arc<str>,
    /// The request's settings, repeated in every translated answer.
    echo: Echo,
    /// The canonical request, for guardrails and translating providers.
    chat: Option<ChatRequest>,
    /// Why the request cannot be translated, when a native provider may
    /// still take it (`previous_response_id`, OpenAI's own items).
    untranslatable: Option<String>,
    /// The gateway's output budget, written in where the client set none.
    cap: Option<u64>,
    /// A provider that serves the API may get the client's request as it
    /// is: nothing rewrote it and no check reads the answer.
    native_ok: bool,
    /// The provider of the last answer, when it was translated.
    translated: Option<Arc<str>>,
    /// Where a translated answer is kept (`store`, the default), and for
    /// which consumer.
    keep: Option<(Kept, String)>,
}

/// Sets the output budget under the name `model` accepts.
fn set_budget(chat: &mut ChatRequest, budget: u64) {
    if uses_max_completion_tokens(&chat.model) {
        chat.max_tokens = None;
        chat.max_completion_tokens = Some(budget);
    } else {
        chat.max_tokens = Some(budget);
    }
}

impl Responses {
    fn native(&self, target: &Target) -> bool {
        self.native_ok && target.provider.adapter().serves_responses()
    }

    /// Translates the request to the canonical shape, once.
    fn canonical(&mut self) -> Result<&mut ChatRequest, ApiError> {
        if let Some(id) = &self.req.previous_response_id {
            // Not one Loom kept (nor its consumer's): only a provider that
            // keeps responses itself could know it.
            return Err(ApiError::NotFound {
                message: format!("Previous response with id '{id}' not found."),
                code: "previous_response_not_found",
            });
        }
        if self.chat.is_none() {
            let mut chat = responses::to_chat(&self.req).map_err(ApiError::from)?;
            if let Some(budget) = self.req.max_output_tokens.or(self.cap) {
                set_budget(&mut chat, budget);
            }
            self.chat = Some(chat);
        }
        self.chat
            .as_mut()
            .ok_or(ApiError::Internal("no canonical request"))
    }

    /// The client's body for a native provider: as it came, or with the
    /// mapped model and the gateway's budget written in.
    fn native_body(&self, model: &str) -> Result<Bytes, String> {
        if *model == *self.model && self.cap.is_none() {
            return Ok(self.body.clone());
        }
        let mut fields = vec![("model", serde_json::Value::from(model))];
        fields.extend(self.cap.map(|cap| ("max_output_tokens", cap.into())));
        responses::with_fields(&self.body, &fields)
    }
}

impl Responses {
    /// Continues a response Loom kept for this consumer: its input and
    /// output items come before this request's input. Notes where to keep
    /// this one.
    async fn continue_kept(&mut self, ex: &Exchange) {
        let kept = ex.shared().runtime.load().kept.clone();
        let consumer = ex.consumer_name();
        if let Some(id) = &self.req.previous_response_id
            && let Some(prev) = kept.get(id, consumer).await
        {
            let mut items: Vec<serde_json::Value> = prev.input;
            items.extend(prev.output);
            items.extend(self.input_items());
            if let Ok(input) = serde_json::from_value(serde_json::Value::Array(items)) {
                self.req.input = Input::Items(input);
                self.req.previous_response_id = None;
                // The id is Loom's: a provider keeping its own would not
                // know it.
                self.native_ok = false;
            }
        }
        if self.req.store != Some(false) {
            self.keep = Some((kept, consumer.to_owned()));
        }
    }

    /// This request's input as items (a string is one user message).
    fn input_items(&self) -> Vec<serde_json::Value> {
        match &self.req.input {
            Input::Text(t) => {
                vec![serde_json::json!({"type": "message", "role": "user", "content": t})]
            }
            Input::Items(items) => items
                .iter()
                .filter_map(|i| serde_json::to_value(i).ok())
                .collect(),
        }
    }
}

impl Responses {
    /// The event encoder of a translated stream, keeping the response when
    /// it completes (when the client asked for it to be kept).
    fn events(&self, model: &str) -> EventEncoder {
        let mut events = EventEncoder::new(model, self.echo.clone());
        if let Some((kept, consumer)) = self.keep.clone() {
            let input = self.input_items();
            events = events.on_done(OnDone(Box::new(move |id, output, json| {
                let response = Bytes::copy_from_slice(json);
                kept.put(id, &consumer, input, output.to_vec(), response);
            })));
        }
        events
    }

    /// Keeps a whole translated answer, when the client asked for that.
    fn keep_whole(&self, answer: &Bytes) {
        if let Some((kept, consumer)) = &self.keep
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(answer)
        {
            let id = v["id"].as_str().unwrap_or_default();
            let output = v["output"].as_array().cloned().unwrap_or_default();
            kept.put(id, consumer, self.input_items(), output, answer.clone());
        }
    }
}

impl Ingress for Responses {
    const CACHED: bool = true;

    fn parse(body: JsonText) -> Result<Responses, ApiError> {
        let req: ResponsesRequest = decode(body.text())?;
        if matches!(&req.input, Input::Items(items) if items.is_empty()) {
            return Err(ApiError::invalid(
                "`input` must contain at least one item",
                Some("input"),
            ));
        }
        Ok(Responses {
            model: Arc::from(req.model.as_str()),
            echo: Echo::of(&req),
            body: body.bytes().clone(),
            req,
            chat: None,
            untranslatable: None,
            cap: None,
            native_ok: true,
            translated: None,
            keep: None,
        })
    }

    fn body(&self) -> &Bytes {
        &self.body
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn client_model(&self) -> Arc<str> {
        self.model.clone()
    }

    fn stream(&self) -> bool {
        self.req.stream == Some(true)
    }

    /// A Responses stream always ends with its usage (`response.completed`).
    fn wants_usage(&self) -> bool {
        true
    }

    fn max_output(&self) -> Option<u64> {
        self.req.max_output_tokens
    }

    fn cap(&mut self, cap: u64) -> Result<bool, ApiError> {
        self.cap = Some(cap);
        if let Some(chat) = self.chat.as_mut() {
            set_budget(chat, cap);
        }
        Ok(true)
    }

    async fn guard(
        &mut self,
        policy: Arc<Guardrails>,
        ex: &Exchange,
        cache: bool,
    ) -> Result<Applied, ApiError> {
        self.continue_kept(ex).await;
        // Guardrails read the canonical request.
        if policy.is_empty() {
            // The cache keys on it too; a request chat cannot carry (hosted
            // tools, a provider's own previous response) is not cached.
            if cache {
                let _ = self.canonical();
            }
            return Ok(Applied::unchecked(policy));
        }
        let chat = std::mem::take(self.canonical()?);
        let (chat, applied) = guard::check(policy, chat, ex).await?;
        self.chat = Some(chat);
        self.native_ok = !applied.changed && !applied.policy.checks_answers();
        Ok(applied)
    }

    fn cacheable(&self) -> Option<&ChatRequest> {
        self.chat.as_ref()
    }

    fn cache_answer(&self, body: &Bytes) -> Option<ChatResponse> {
        responses::chat_of(body)
    }

    fn cached_body(&self, answer: &ChatResponse, stream: bool, _wants_usage: bool) -> Bytes {
        // Each answer gets an id of its own (`from_chat`, the encoder), so
        // that a hit is kept and continued apart from the answer it copies.
        if stream {
            let mut out = bytes::BytesMut::with_capacity(1024);
            let mut events = self.events(&answer.model);
            for chunk in crate::ai::cache::replay_chunks(answer, true) {
                events.on_chunk(&chunk, &mut out);
            }
            events.finish(&mut out);
            out.freeze()
        } else {
            let body = Bytes::from(responses::from_chat(answer, &self.echo));
            self.keep_whole(&body);
            body
        }
    }

    fn prompt_chars(&self) -> usize {
        match (&self.chat, &self.req.input) {
            (Some(chat), _) => chat.messages.iter().map(Message::text_len).sum(),
            (None, Input::Text(t)) => t.len(),
            // Not translated (a native provider takes it): its size.
            (None, Input::Items(_)) => self.body.len(),
        }
    }

    fn prepare(&mut self, plan: &[Target], _applied: &Applied) -> Result<(), ApiError> {
        if plan.iter().all(|t| self.native(t)) {
            return Ok(());
        }
        if let Err(e) = self.canonical() {
            // A native provider in the plan may still take it.
            if !plan.iter().any(|t| self.native(t)) {
                return Err(e);
            }
            self.untranslatable = Some(e.message());
        }
        Ok(())
    }

    async fn call(
        &mut self,
        target: &Target,
        how: Attempt,
    ) -> Result<Answer, loom_providers::Error> {
        let p = &target.provider;
        if self.native(target) {
            let body = self
                .native_body(&target.model)
                .map_err(loom_providers::Error::Unsupported)?;
            self.translated = None;
            return Ok(
                match p
                    .adapter()
                    .responses(&target.model, body, how.stream)
                    .await?
                {
                    Native::Stream(events) => Answer::Stream(Source::Native(events)),
                    Native::Whole(reply) => Answer::Whole(reply),
                },
            );
        }
        let Some(chat) = self.chat.as_mut() else {
            return Err(loom_providers::Error::Unsupported(
                self.untranslatable
                    .clone()
                    .unwrap_or_else(|| "the request was not prepared for this provider".into()),
            ));
        };
        self.translated = Some(p.shared_name().clone());
        chat.model.replace_range(.., &target.model);
        Ok(if how.stream {
            Answer::Stream(Source::Chunks(p.adapter().chat_stream(chat).await?))
        } else {
            Answer::Whole(Box::new(p.adapter().chat(chat).await?))
        })
    }

    fn whole(&self, body: Bytes, applied: &Applied) -> Result<Bytes, ApiError> {
        let Some(provider) = &self.translated else {
            return Ok(body);
        };
        let body = guard::whole_chat(applied, body);
        let parsed: ChatResponse = serde_json::from_slice(&body).map_err(|e| {
            ApiError::from(loom_providers::Error::InvalidResponse {
                provider: provider.to_string(),
                detail: e.to_string(),
            })
        })?;
        let answer = Bytes::from(responses::from_chat(&parsed, &self.echo));
        self.keep_whole(&answer);
        Ok(answer)
    }

    fn encoder(&self, target: &Target, started: &Started) -> Encoder {
        if started.is_native() {
            Encoder::Responses(None)
        } else {
            Encoder::Responses(Some(Box::new(self.events(&target.model))))
        }
    }
}
