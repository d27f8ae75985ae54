//! Anthropic's Messages API: `POST /v1/messages`, so the Anthropic SDK and
//! Claude Code work unchanged. An Anthropic provider gets the client's
//! request as it is and its answer comes back untranslated, events
//! included; any other provider is reached through the canonical OpenAI
//! shape and its answer translated back. Errors are in Anthropic's format.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use loom_guardrails::Guardrails;
use loom_models::anthropic::MessagesRequest;
use loom_models::chat::{ChatRequest, ChatResponse};
use loom_providers::Adapter as _;
use loom_providers::anthropic::ingress::{self, EventEncoder};
use loom_providers::{Native, Target, Wire};

use super::{Answer, Attempt, Ingress};
use crate::ai::guard::{self, Applied};
use crate::ai::relay::{Encoder, Source, Started};
use crate::ai::{ApiError, JsonText, decode};
use crate::runtime::body::{Body, json_response};
use crate::runtime::exchange::Exchange;

pub(crate) struct Messages {
    msg: MessagesRequest,
    body: Bytes,
    model: Arc<str>,
    /// The canonical request, for guardrails and non-Anthropic providers.
    chat: Option<ChatRequest>,
    /// An Anthropic provider may get the client's request as it is: nothing
    /// was rewritten and no check reads the answer.
    native_ok: bool,
    /// The provider of the last answer, when it was canonical (to
    /// translate back).
    translated: Option<Arc<str>>,
}

impl Messages {
    fn native(&self, target: &Target) -> bool {
        self.native_ok && target.provider.wire() == Wire::Anthropic
    }

    /// Translates the request to the canonical shape, once.
    fn canonical(&mut self) -> Result<&mut ChatRequest, ApiError> {
        if self.chat.is_none() {
            self.chat = Some(ingress::to_chat(&self.msg).map_err(ApiError::from)?);
        }
        self.chat
            .as_mut()
            .ok_or(ApiError::Internal("no canonical request"))
    }
}

impl Ingress for Messages {
    fn parse(body: JsonText) -> Result<Self, ApiError> {
        let msg: MessagesRequest = decode(body.text())?;
        if msg.messages.is_empty() {
            return Err(ApiError::invalid(
                "messages: at least one message is required",
                Some("messages"),
            ));
        }
        let model = Arc::from(msg.model.as_str());
        Ok(Messages {
            msg,
            body: body.bytes().clone(),
            model,
            chat: None,
            native_ok: true,
            translated: None,
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
        self.msg.stream.unwrap_or(false)
    }

    /// Anthropic's streams always end with their usage.
    fn wants_usage(&self) -> bool {
        true
    }

    /// `max_tokens` is required by this format: a cap never needs writing in.
    fn max_output(&self) -> Option<u64> {
        Some(self.msg.max_tokens)
    }

    async fn guard(
        &mut self,
        policy: Arc<Guardrails>,
        ex: &Exchange,
        _cache: bool,
    ) -> Result<Applied, ApiError> {
        // Guardrails read the canonical request.
        if policy.is_empty() {
            return Ok(Applied::unchecked(policy));
        }
        let chat = self.canonical()?;
        let (chat, applied) = guard::check(policy, std::mem::take(chat), ex).await?;
        self.chat = Some(chat);
        self.native_ok = !applied.changed && !applied.policy.checks_answers();
        Ok(applied)
    }

    fn prepare(&mut self, plan: &[Target], _applied: &Applied) -> Result<(), ApiError> {
        if plan.iter().any(|t| !self.native(t)) {
            self.canonical()?;
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
            let body = if *target.model == *self.model {
                self.body.clone()
            } else {
                self.msg.model.replace_range(.., &target.model);
                Bytes::from(
                    serde_json::to_vec(&self.msg)
                        .map_err(|e| loom_providers::Error::Unsupported(e.to_string()))?,
                )
            };
            self.translated = None;
            return Ok(match p.adapter().messages(body, how.stream).await? {
                Native::Stream(events) => Answer::Stream(Source::Native(events)),
                Native::Whole(reply) => Answer::Whole(reply),
            });
        }
        self.translated = Some(p.shared_name().clone());
        let Some(chat) = self.chat.as_mut() else {
            // `prepare` translated it for every target that gets here.
            return Err(loom_providers::Error::Unsupported(
                "the request was not prepared for this provider".to_owned(),
            ));
        };
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
        Ok(Bytes::from(
            serde_json::to_vec(&ingress::from_chat(&parsed)).unwrap_or_default(),
        ))
    }

    fn encoder(&self, target: &Target, started: &Started) -> Encoder {
        if started.is_native() {
            Encoder::Anthropic(None)
        } else {
            Encoder::Anthropic(Some(Box::new(EventEncoder::new(&target.model))))
        }
    }

    fn render(err: ApiError) -> Response<Body> {
        render(&err)
    }

    fn failed(err: ApiError, target: &Target) -> Response<Body> {
        // Anthropic's own error answer goes back as it came, status included.
        if target.provider.wire() == Wire::Anthropic
            && let ApiError::Provider(boxed) = &err
            && let loom_providers::Error::Status {
                status,
                body,
                content_type,
                ..
            } = boxed.as_ref()
            && !body.is_empty()
        {
            let mut resp = json_response(*status, body.clone());
            if let Some(ct) = content_type
                .as_deref()
                .and_then(|c| HeaderValue::try_from(c).ok())
            {
                resp.headers_mut().insert(CONTENT_TYPE, ct);
            }
            return resp;
        }
        render(&err)
    }
}

/// An error in Anthropic's shape, with the same status as the OpenAI one.
fn render(err: &ApiError) -> Response<Body> {
    let status: StatusCode = err.status();
    let message = match err {
        ApiError::Provider(boxed) => match boxed.as_ref() {
            loom_providers::Error::Status { message, .. } => message.clone(),
            _ => err.message(),
        },
        other => other.message(),
    };
    let body = ingress::error_body(status.as_u16(), &message);
    json_response(status, serde_json::to_vec(&body).unwrap_or_default())
}
