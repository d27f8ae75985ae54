//! Admin authentication: bearer tokens with scopes (`admin.tokens`).
//!
//! Without tokens the admin API is open, which configuration allows on a
//! loopback address only. With tokens, every request needs one whose scope
//! covers the endpoint (`read`: usage, providers, metrics, health, the
//! configuration; `keys`: consumers, keys, teams and budgets, and what
//! `read` covers; `admin`: everything), except the endpoints `admin.open`
//! names. A presented token is hashed and compared with every configured
//! digest in constant time; refusals are 401 (no token, or an unknown one)
//! or 403 (a token without the scope) in one JSON shape, counted in
//! `loom_admin_auth_failures_total`, and never logged with the token.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use loom_config::{AdminScope, OpenEndpoint};
use serde_json::json;

use crate::runtime::state::Shared;

/// One configured token, by digest.
#[derive(Debug, Clone)]
struct Token {
    name: Arc<str>,
    digest: [u8; 32],
    scopes: Vec<AdminScope>,
}

/// The admin tokens of one configuration.
#[derive(Debug, Clone, Default)]
pub struct AdminAuth {
    tokens: Vec<Token>,
    open: Vec<OpenEndpoint>,
}

impl AdminAuth {
    /// The tokens of `admin` (their format was checked with the
    /// configuration; one that does not parse matches nothing).
    pub fn new(admin: &loom_config::Admin) -> AdminAuth {
        AdminAuth {
            tokens: admin
                .tokens
                .iter()
                .filter_map(|t| {
                    Some(Token {
                        name: Arc::from(t.name.as_str()),
                        digest: loom_accounting::stored_digest(t.token.expose())?,
                        scopes: t.scopes.clone(),
                    })
                })
                .collect(),
            open: admin.open.clone(),
        }
    }

    /// The token `presented` stands for, compared with every configured
    /// digest so that the time taken does not tell which one, if any, is
    /// close.
    fn find(&self, presented: &[u8]) -> Option<&Token> {
        let digest = loom_accounting::sha256(presented);
        let mut found = None;
        for t in &self.tokens {
            let diff = t
                .digest
                .iter()
                .zip(digest.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                found = Some(t);
            }
        }
        found
    }
}

/// The scope `method` on `path` needs, or `None` for an endpoint left open.
fn needed(path: &str, _method: &Method, open: &[OpenEndpoint]) -> Option<AdminScope> {
    let probe = match path {
        "/metrics" => Some(OpenEndpoint::Metrics),
        "/health" => Some(OpenEndpoint::Health),
        "/ready" => Some(OpenEndpoint::Ready),
        _ => None,
    };
    if probe.is_some_and(|p| open.contains(&p)) {
        return None;
    }
    let under = |prefix: &str| {
        path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    Some(if under("/ai/keys") || under("/ai/teams") {
        AdminScope::Keys
    } else if under("/ai/audit") {
        AdminScope::Admin
    } else {
        AdminScope::Read
    })
}

fn grants(scopes: &[AdminScope], needed: AdminScope) -> bool {
    scopes.iter().any(|&s| {
        s == AdminScope::Admin
            || s == needed
            || (s == AdminScope::Keys && needed == AdminScope::Read)
    })
}

fn scope_name(s: AdminScope) -> &'static str {
    match s {
        AdminScope::Read => "read",
        AdminScope::Keys => "keys",
        AdminScope::Admin => "admin",
    }
}

/// A refusal in the admin API's error shape.
fn refuse(status: StatusCode, kind: &str, code: &str, message: String) -> Response {
    let mut resp = (
        status,
        axum::Json(json!({"error": {"message": message, "type": kind, "code": code}})),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"loom-admin\""),
        );
    }
    resp
}

/// Who made an admin request: the token's name, or `anonymous` while the
/// API is open. Named in the audit log.
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<str>);

/// The middleware in front of every admin route.
pub async fn check(State(shared): State<Arc<Shared>>, mut req: Request, next: Next) -> Response {
    let auth = shared.runtime.load().admin_auth.clone();
    if auth.tokens.is_empty() {
        req.extensions_mut().insert(Caller(Arc::from("anonymous")));
        return next.run(req).await;
    }
    let Some(scope) = needed(req.uri().path(), req.method(), &auth.open) else {
        req.extensions_mut().insert(Caller(Arc::from("anonymous")));
        return next.run(req).await;
    };
    let refused = |reason: &str| {
        shared
            .metrics
            .admin_refused
            .with_label_values(&[reason])
            .inc()
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .map(<[u8]>::trim_ascii);
    let Some(presented) = presented.filter(|p| !p.is_empty()) else {
        refused("missing");
        return refuse(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "missing_token",
            "the admin API needs a token: send `Authorization: Bearer <token>`".into(),
        );
    };
    let Some(token) = auth.find(presented) else {
        refused("invalid");
        return refuse(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid_token",
            "the admin token is not valid".into(),
        );
    };
    if !grants(&token.scopes, scope) {
        refused("scope");
        return refuse(
            StatusCode::FORBIDDEN,
            "permission_error",
            "insufficient_scope",
            format!(
                "the admin token {:?} lacks the `{}` scope this endpoint needs",
                token.name,
                scope_name(scope)
            ),
        );
    }
    req.extensions_mut().insert(Caller(token.name.clone()));
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_cover_what_they_name() {
        let open = [OpenEndpoint::Metrics];
        let get = Method::GET;
        assert_eq!(needed("/metrics", &get, &open), None);
        assert_eq!(needed("/health", &get, &open), Some(AdminScope::Read));
        assert_eq!(needed("/ai/usage/web", &get, &open), Some(AdminScope::Read));
        assert_eq!(needed("/ai/keys", &get, &open), Some(AdminScope::Keys));
        assert_eq!(
            needed("/ai/keys/k1/rotate", &get, &open),
            Some(AdminScope::Keys)
        );
        assert_eq!(needed("/ai/keysmith", &get, &open), Some(AdminScope::Read));
        assert_eq!(needed("/ai/audit", &get, &open), Some(AdminScope::Admin));
        assert!(grants(&[AdminScope::Keys], AdminScope::Read));
        assert!(!grants(&[AdminScope::Read], AdminScope::Keys));
        assert!(!grants(&[AdminScope::Keys], AdminScope::Admin));
        assert!(grants(&[AdminScope::Admin], AdminScope::Keys));
    }

    #[test]
    fn tokens_are_found_by_digest_plain_or_hashed() {
        let admin: loom_config::Admin = serde_norway::from_str(&format!(
            "tokens:\n  - {{name: ops, token: ops-token-0123456789, scopes: [admin]}}\n  - {{name: ro, token: \"{}\", scopes: [read]}}\n",
            loom_accounting::hash_key("read-only-token-0123")
        ))
        .unwrap();
        let auth = AdminAuth::new(&admin);
        assert_eq!(&*auth.find(b"ops-token-0123456789").unwrap().name, "ops");
        assert_eq!(&*auth.find(b"read-only-token-0123").unwrap().name, "ro");
        assert!(auth.find(b"ops-token-012345678").is_none());
        assert!(auth.find(b"").is_none());
    }
}
