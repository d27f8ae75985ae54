//! OpenAI embeddings: `POST /v1/embeddings`. No stream, no output budget,
//! no guardrail texts: the request goes to the provider, the vectors come
//! back as they are.

use std::sync::Arc;

use bytes::Bytes;
use loom_models::embeddings::EmbeddingRequest;
use loom_providers::Adapter as _;
use loom_providers::Target;

use super::{Answer, Attempt, Ingress};
use crate::ai::guard::Applied;
use crate::ai::{ApiError, JsonText, decode};

pub(crate) struct Embeddings {
    req: EmbeddingRequest,
    body: Bytes,
    model: Arc<str>,
}

impl Ingress for Embeddings {
    fn parse(body: JsonText) -> Result<Self, ApiError> {
        let req: EmbeddingRequest = decode(body.text())?;
        let model = Arc::from(req.model.as_str());
        Ok(Embeddings {
            req,
            body: body.bytes().clone(),
            model,
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

    async fn call(
        &mut self,
        target: &Target,
        _how: Attempt,
    ) -> Result<Answer, loom_providers::Error> {
        self.req.model.replace_range(.., &target.model);
        let unchanged = (*target.model == *self.model).then(|| self.body.clone());
        let reply = target
            .provider
            .adapter()
            .embeddings(&self.req, unchanged)
            .await?;
        Ok(Answer::Whole(Box::new(reply)))
    }

    fn whole(&self, body: Bytes, _applied: &Applied) -> Result<Bytes, ApiError> {
        Ok(body)
    }
}
