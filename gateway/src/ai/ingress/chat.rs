//! OpenAI chat completions: `POST /v1/chat/completions`.
//!
//! The request is parsed whole only when a stage reads or rewrites it
//! (guardrails, the cache, a token cap to write in, a stream, a mapped
//! model, or a provider that does not speak OpenAI's format); otherwise the
//! client's bytes go upstream as they are, and the provider checks what
//! Loom did not read.

use std::sync::Arc;

use bytes::Bytes;
use loom_guardrails::Guardrails;
use loom_models::chat::{ChatHead, ChatRequest, Message};
use loom_providers::Adapter as _;
use loom_providers::{Target, Wire};

use super::{Answer, Attempt, Ingress};
use crate::ai::admit::uses_max_completion_tokens;
use crate::ai::guard::{self, Applied};
use crate::ai::relay::Source;
use crate::ai::{ApiError, JsonText, decode};
use crate::runtime::exchange::Exchange;

pub(crate) struct Chat {
    body: JsonText,
    model: Arc<str>,
    /// Characters of the messages' text, read from the head.
    text_len: usize,
    stream: bool,
    wants_usage: bool,
    max_output: Option<u64>,
    /// The whole request, once a stage needed it.
    full: Option<ChatRequest>,
    /// A cap or the guardrails changed the request: the client's bytes no
    /// longer say what to send.
    rewritten: bool,
}

impl Chat {
    fn full(&mut self) -> Result<&mut ChatRequest, ApiError> {
        if self.full.is_none() {
            self.full = Some(decode(self.body.text())?);
        }
        self.full
            .as_mut()
            .ok_or(ApiError::Internal("the request was not parsed"))
    }
}

impl Ingress for Chat {
    const CACHED: bool = true;

    fn parse(body: JsonText) -> Result<Chat, ApiError> {
        let head: ChatHead = decode(body.text())?;
        if head.messages.count == 0 {
            return Err(ApiError::invalid(
                "`messages` must contain at least one message",
                Some("messages"),
            ));
        }
        let model = Arc::from(head.model.as_ref());
        let (text_len, stream) = (head.messages.text_len, head.is_stream());
        let (wants_usage, max_output) = (head.wants_stream_usage(), head.max_output_tokens());
        drop(head);
        Ok(Chat {
            body,
            model,
            text_len,
            stream,
            wants_usage,
            max_output,
            full: None,
            rewritten: false,
        })
    }

    fn body(&self) -> &Bytes {
        self.body.bytes()
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn client_model(&self) -> Arc<str> {
        self.model.clone()
    }

    fn stream(&self) -> bool {
        self.stream
    }

    fn wants_usage(&self) -> bool {
        self.wants_usage
    }

    fn max_output(&self) -> Option<u64> {
        self.max_output
    }

    fn cap(&mut self, cap: u64) -> Result<bool, ApiError> {
        let chat = self.full()?;
        if uses_max_completion_tokens(&chat.model) {
            chat.max_completion_tokens = Some(cap);
        } else {
            chat.max_tokens = Some(cap);
        }
        self.rewritten = true;
        Ok(true)
    }

    async fn guard(
        &mut self,
        policy: Arc<Guardrails>,
        ex: &Exchange,
        cache: bool,
    ) -> Result<Applied, ApiError> {
        if !policy.is_empty() || cache || self.stream {
            self.full()?;
        }
        // Without guardrails the request is not moved through the check's
        // future (a copy of it each way).
        if policy.is_empty() {
            return Ok(Applied::unchecked(policy));
        }
        let chat = self.full.take().unwrap_or_default();
        let (chat, applied) = guard::check(policy, chat, ex).await?;
        self.full = Some(chat);
        self.rewritten |= applied.changed;
        Ok(applied)
    }

    fn cacheable(&self) -> Option<&ChatRequest> {
        self.full.as_ref()
    }

    fn prompt_chars(&self) -> usize {
        // Guardrails may have rewritten the text: measured after them.
        self.full.as_ref().map_or(self.text_len, |c| {
            c.messages.iter().map(Message::text_len).sum()
        })
    }

    fn prepare(&mut self, plan: &[Target], _applied: &Applied) -> Result<(), ApiError> {
        if self.full.is_none()
            && plan
                .iter()
                .any(|t| *t.model != *self.model || t.provider.wire() != Wire::OpenAi)
        {
            self.full()?;
        }
        Ok(())
    }

    async fn call(
        &mut self,
        target: &Target,
        how: Attempt,
    ) -> Result<Answer, loom_providers::Error> {
        let p = target.provider.adapter();
        let openai = p.wire() == Wire::OpenAi;
        // The client's bytes go upstream as they are when nothing changed
        // them and the provider speaks their format.
        if !self.rewritten && !how.stream && *target.model == *self.model && openai {
            let reply = p
                .chat_relayed(&target.model, self.body.bytes().clone())
                .await?;
            return Ok(Answer::Whole(Box::new(reply)));
        }
        let Some(chat) = self.full.as_mut() else {
            // `prepare` parsed it for every target that gets here.
            return Err(loom_providers::Error::Unsupported(
                "the request was not prepared for this provider".to_owned(),
            ));
        };
        chat.model.replace_range(.., &target.model);
        Ok(match (how.stream, how.plain && openai) {
            (true, true) => Answer::Stream(Source::Raw(p.chat_stream_raw(chat).await?)),
            (true, false) => Answer::Stream(Source::Chunks(p.chat_stream(chat).await?)),
            (false, _) => Answer::Whole(Box::new(p.chat(chat).await?)),
        })
    }

    fn whole(&self, body: Bytes, applied: &Applied) -> Result<Bytes, ApiError> {
        Ok(guard::whole_chat(applied, body))
    }
}
