//! Errors of AI routes, always rendered in OpenAI's error envelope.

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use loom_models::error::ErrorEnvelope;

use crate::runtime::body::{Body, full, json_response};

/// An error answered on an AI route.
#[derive(Debug)]
pub enum ApiError {
    Invalid {
        message: String,
        param: Option<String>,
    },
    NotFound {
        message: String,
        code: &'static str,
    },
    MethodNotAllowed,
    TooLarge(u64),
    UnsupportedMediaType,
    /// Boxed: provider errors carry the provider's body and are large.
    Provider(Box<loom_providers::Error>),
    /// A rate limit or a daily/monthly limit of the consumer.
    Limited {
        why: loom_accounting::Refusal,
        message: String,
    },
    /// The limit store is unreachable and limits fail closed.
    LimiterUnavailable,
    /// Refused by a guardrail: `prompt_injection_detected`, `pii_detected`,
    /// `content_filtered`.
    Blocked {
        code: &'static str,
        message: String,
    },
    /// A fault of the gateway itself (a check's thread died).
    Internal(&'static str),
    /// The client's key may not call this model (its allow-list).
    ModelNotAllowed(String),
}

impl ApiError {
    /// A 400 naming the parameter at fault.
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> ApiError {
        ApiError::Invalid {
            message: message.into(),
            param: param.map(str::to_owned),
        }
    }

    /// The message the client reads.
    pub fn message(&self) -> String {
        self.envelope().error.message
    }

    /// The response status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Provider(e) => e.status(),
            ApiError::Limited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::LimiterUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Blocked { .. } => StatusCode::BAD_REQUEST,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::ModelNotAllowed(_) => StatusCode::FORBIDDEN,
        }
    }

    /// A short label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ApiError::Invalid { .. } => "invalid_request",
            ApiError::NotFound { .. } => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::TooLarge(_) => "body_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Provider(e) => e.label(),
            ApiError::Limited { why, .. } if why.is_rate() => "rate_limited",
            ApiError::Limited { .. } => "limit_exceeded",
            ApiError::LimiterUnavailable => "limiter_unavailable",
            ApiError::Blocked { code, .. } => code,
            ApiError::Internal(_) => "internal_error",
            ApiError::ModelNotAllowed(_) => "model_not_allowed",
        }
    }

    /// The envelope (for stream error events too).
    pub fn envelope(&self) -> ErrorEnvelope {
        match self {
            ApiError::Invalid { message, param } => {
                let e = ErrorEnvelope::new(message.clone(), "invalid_request_error", None);
                match param {
                    Some(p) => e.with_param(p.clone()),
                    None => e,
                }
            }
            ApiError::NotFound { message, code } => {
                ErrorEnvelope::new(message.clone(), "invalid_request_error", Some(code))
            }
            ApiError::MethodNotAllowed => ErrorEnvelope::new(
                "Method not allowed on this endpoint",
                "invalid_request_error",
                Some("method_not_allowed"),
            ),
            ApiError::TooLarge(limit) => ErrorEnvelope::new(
                format!("Request body exceeds the limit of {limit} bytes"),
                "invalid_request_error",
                Some("request_too_large"),
            ),
            ApiError::UnsupportedMediaType => ErrorEnvelope::new(
                "Content-Type must be application/json",
                "invalid_request_error",
                Some("unsupported_media_type"),
            ),
            ApiError::Provider(e) => ErrorEnvelope::new(e.to_string(), e.kind(), e.code()),
            // OpenAI's `type` names the limit (`requests`, `tokens`); its code
            // tells a rate limit from a spent quota.
            ApiError::Limited { why, message } => ErrorEnvelope::new(
                message.clone(),
                why.kind(),
                Some(if why.is_rate() {
                    "rate_limit_exceeded"
                } else {
                    "insufficient_quota"
                }),
            ),
            ApiError::LimiterUnavailable => ErrorEnvelope::new(
                "Rate limits cannot be checked right now; please retry shortly",
                "service_unavailable",
                Some("limiter_unavailable"),
            ),
            ApiError::Blocked { code, message } => {
                ErrorEnvelope::new(message.clone(), "invalid_request_error", Some(code))
            }
            ApiError::Internal(what) => {
                ErrorEnvelope::new(*what, "server_error", Some("internal_error"))
            }
            ApiError::ModelNotAllowed(model) => ErrorEnvelope::new(
                format!("This API key may not use the model `{model}`"),
                "permission_error",
                Some("model_not_allowed"),
            )
            .with_param("model".to_owned()),
        }
    }

    /// The response. A provider's 4xx answer passes through unchanged.
    pub fn into_response(self) -> Response<Body> {
        if let ApiError::Provider(boxed) = &self
            && let loom_providers::Error::Status {
                status,
                body,
                content_type,
                ..
            } = boxed.as_ref()
            && status.is_client_error()
            && !body.is_empty()
        {
            let mut resp = Response::new(full(body.clone()));
            *resp.status_mut() = *status;
            let ct = content_type
                .as_deref()
                .and_then(|c| HeaderValue::from_str(c).ok())
                .unwrap_or(HeaderValue::from_static("application/json"));
            resp.headers_mut().insert(CONTENT_TYPE, ct);
            return resp;
        }
        let body = serde_json::to_vec(&self.envelope()).unwrap_or_default();
        json_response(self.status(), body)
    }
}

impl From<loom_providers::Error> for ApiError {
    /// Every provider error reaches a client through here, so this is
    /// where the configured credentials are scrubbed from it.
    fn from(e: loom_providers::Error) -> Self {
        ApiError::Provider(Box::new(crate::runtime::redact::provider_error(e)))
    }
}
