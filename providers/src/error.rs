//! Provider errors: what failed, the HTTP status the client should see, and
//! whether another attempt (on another provider) could succeed.

use bytes::Bytes;
use http::StatusCode;

/// The crate's error type.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// No configured provider serves the requested model.
    #[error(
        "The model `{model}` does not exist or is not served by this gateway; available models: {available}"
    )]
    UnknownModel { model: String, available: String },
    /// Every provider that serves the model is unavailable (open circuit, back-off).
    #[error("{0}")]
    Unavailable(String),
    /// The request asks for something this provider cannot do.
    #[error("{0}")]
    Unsupported(String),
    /// The provider could not be reached.
    #[error("could not connect to provider {provider}: {detail}")]
    Connect { provider: String, detail: String },
    /// The provider did not answer in time.
    #[error("provider {provider} timed out")]
    Timeout { provider: String },
    /// The provider answered with an HTTP error. `body` is its response body,
    /// passed through unchanged to the client for 4xx answers.
    #[error("provider {provider} returned HTTP {status}: {message}")]
    Status {
        provider: String,
        status: StatusCode,
        message: String,
        body: Bytes,
        content_type: Option<String>,
        /// The provider's `Retry-After`, when it sent one.
        retry_after: Option<std::time::Duration>,
    },
    /// The provider's answer could not be understood.
    #[error("provider {provider} sent an invalid response: {detail}")]
    InvalidResponse { provider: String, detail: String },
    /// The provider's stream broke after it had started.
    #[error("provider {provider} stream failed: {detail}")]
    Stream { provider: String, detail: String },
}

impl Error {
    /// The status code the client sees.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::UnknownModel { .. } => StatusCode::NOT_FOUND,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Unsupported(_) => StatusCode::BAD_REQUEST,
            Error::Connect { .. } | Error::InvalidResponse { .. } | Error::Stream { .. } => {
                StatusCode::BAD_GATEWAY
            }
            Error::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Error::Status { status, .. } if status.is_client_error() => *status,
            Error::Status { status, .. } => match *status {
                StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT => *status,
                _ => StatusCode::BAD_GATEWAY,
            },
        }
    }

    /// OpenAI's `error.type` for this error.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::UnknownModel { .. } | Error::Unsupported(_) => "invalid_request_error",
            Error::Status { status, .. } if status.as_u16() == 429 => "rate_limit_error",
            Error::Status { status, .. } if status.is_client_error() => "invalid_request_error",
            _ => "upstream_error",
        }
    }

    /// OpenAI's `error.code` for this error.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            Error::UnknownModel { .. } => Some("model_not_found"),
            Error::Timeout { .. } => Some("upstream_timeout"),
            Error::Connect { .. } => Some("upstream_unreachable"),
            Error::Unavailable(_) => Some("providers_unavailable"),
            _ => None,
        }
    }

    /// How long the provider asked to be left alone.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Error::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The provider's HTTP status, when it answered with one.
    pub fn upstream_status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } => Some(status.as_u16()),
            _ => None,
        }
    }

    /// Whether another provider might succeed where this one failed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Connect { .. } | Error::Timeout { .. } => true,
            Error::Status { status, .. } => status.as_u16() == 429 || status.is_server_error(),
            _ => false,
        }
    }

    /// A low-cardinality label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Error::UnknownModel { .. } => "unknown_model",
            Error::Unavailable(_) => "unavailable",
            Error::Unsupported(_) => "unsupported",
            Error::Connect { .. } => "connect",
            Error::Timeout { .. } => "timeout",
            Error::Status { .. } => "status",
            Error::InvalidResponse { .. } => "invalid_response",
            Error::Stream { .. } => "stream",
        }
    }

    /// Classifies a transport error of the HTTP client.
    pub(crate) fn from_transport(provider: &str, err: loom_http::Error) -> Error {
        match err {
            loom_http::Error::Connect { detail, .. } => Error::Connect {
                provider: provider.to_owned(),
                detail,
            },
            loom_http::Error::Failed { detail, .. } => Error::Stream {
                provider: provider.to_owned(),
                detail,
            },
            other => Error::Stream {
                provider: provider.to_owned(),
                detail: other.to_string(),
            },
        }
    }
}
