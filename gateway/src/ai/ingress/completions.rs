//! OpenAI's legacy text completions: `POST /v1/completions`. The whole of a
//! wire format: parse, the prompt as the guardrails' text, the provider
//! calls, and the answer checks; the flow does the rest.

use std::sync::Arc;

use bytes::Bytes;
use loom_guardrails::Guardrails;
use loom_models::completions::CompletionRequest;
use loom_providers::Adapter as _;
use loom_providers::{Target, Wire};

use super::{Answer, Attempt, Ingress};
use crate::ai::guard::{self, Applied};
use crate::ai::relay::Source;
use crate::ai::{ApiError, JsonText, decode};
use crate::runtime::exchange::Exchange;

pub(crate) struct Completions {
    req: CompletionRequest,
    body: Bytes,
    model: Arc<str>,
    /// A cap or the guardrails changed the request.
    rewritten: bool,
}

impl Ingress for Completions {
    fn parse(body: JsonText) -> Result<Self, ApiError> {
        let req: CompletionRequest = decode(body.text())?;
        let model = Arc::from(req.model.as_str());
        Ok(Completions {
            req,
            body: body.bytes().clone(),
            model,
            rewritten: false,
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
        self.req.is_stream()
    }

    fn wants_usage(&self) -> bool {
        let options = self.req.stream_options.as_ref();
        options.and_then(|o| o.include_usage).unwrap_or(false)
    }

    fn max_output(&self) -> Option<u64> {
        self.req.max_tokens
    }

    fn cap(&mut self, cap: u64) -> Result<bool, ApiError> {
        self.req.max_tokens = Some(cap);
        self.rewritten = true;
        Ok(true)
    }

    async fn guard(
        &mut self,
        policy: Arc<Guardrails>,
        ex: &Exchange,
        _cache: bool,
    ) -> Result<Applied, ApiError> {
        let prompt = std::mem::take(&mut self.req.prompt);
        let (prompt, applied) = guard::check(policy, prompt, ex).await?;
        self.req.prompt = prompt;
        self.rewritten |= applied.changed;
        Ok(applied)
    }

    fn prompt_chars(&self) -> usize {
        self.req.prompt.to_string().len()
    }

    async fn call(
        &mut self,
        target: &Target,
        how: Attempt,
    ) -> Result<Answer, loom_providers::Error> {
        let p = target.provider.adapter();
        self.req.model.replace_range(.., &target.model);
        if how.stream {
            return Ok(Answer::Stream(if how.plain && p.wire() == Wire::OpenAi {
                Source::Raw(p.completions_stream_raw(&mut self.req).await?)
            } else {
                Source::Completions(p.completions_stream(&mut self.req).await?)
            }));
        }
        let unchanged = *target.model == *self.model && !self.rewritten;
        let reply = p
            .completions(&self.req, unchanged.then(|| self.body.clone()))
            .await?;
        Ok(Answer::Whole(Box::new(reply)))
    }

    fn whole(&self, body: Bytes, applied: &Applied) -> Result<Bytes, ApiError> {
        Ok(guard::whole_completion(applied, body))
    }
}
