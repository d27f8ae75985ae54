//! The route table: host, path (exact, prefix wildcard) and method, matched in
//! configuration order, first match wins.
//!
//! A linear scan: route tables are tens of entries, and a scan over a few
//! string comparisons costs less than building and probing a trie at that size.

use std::collections::HashMap;
use std::sync::Arc;

use http::Method;
use loom_config::Route;
use loom_proxy::Upstream;

/// What a matched route does.
#[derive(Debug)]
pub enum RouteKind {
    /// The OpenAI-compatible API.
    Ai,
    /// Forward to an upstream.
    Proxy(Arc<Upstream>),
    /// Answer with a redirect.
    Redirect(crate::route::traffic::Redirect),
}

#[derive(Debug)]
enum PathMatch {
    Exact(String),
    /// `/v1/*` matches `/v1` and everything under `/v1/`.
    Prefix(String),
    Any,
}

#[derive(Debug)]
enum HostMatch {
    Any,
    Exact(String),
    /// `*.example.com` matches any subdomain of `example.com`.
    Suffix(String),
}

/// One compiled route.
#[derive(Debug)]
pub struct CompiledRoute {
    pub id: Arc<str>,
    pub kind: RouteKind,
    /// Largest request body, if limited.
    pub max_body: Option<u64>,
    /// The route's HTTP metrics, resolved once.
    pub metrics: Arc<crate::admin::metrics::RouteSeries>,
    /// API-key authentication, when the route requires it.
    pub auth: Option<crate::route::auth::KeyAuth>,
    /// Retries of a proxy route, with the route's retry budget.
    pub retry: Option<loom_proxy::RetryPolicy>,
    /// Conditions on headers, query and path.
    conditions: Option<crate::route::traffic::Conditions>,
    /// Path and header rewrites.
    pub rewrite: Option<crate::route::traffic::Rewrite>,
    /// A share of the traffic to another upstream.
    pub canary: Option<crate::route::traffic::Canary>,
    /// Copies of a share of the traffic to another upstream.
    pub shadow: Option<crate::route::traffic::Shadow>,
    /// The route's request rate limit.
    pub rate_limit: Option<crate::route::traffic::RouteLimit>,
    /// The route's Proxy-Wasm plugins, in order.
    pub plugins: loom_plugins::Chain,
    host: HostMatch,
    path: PathMatch,
    methods: Option<Vec<Method>>,
}

/// Result of a lookup.
pub enum Lookup<'a> {
    Found(&'a CompiledRoute),
    /// A route matches host and path but not the method.
    MethodNotAllowed,
    NotFound,
}

/// All routes of one configuration.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<CompiledRoute>,
}

impl RouteTable {
    /// Compiles the configured routes; `upstream` resolves a proxy route's upstream by name.
    pub fn build(
        routes: &[Route],
        ai_max_body: u64,
        metrics: &crate::admin::metrics::Metrics,
        upstream: impl Fn(&str) -> Option<Arc<Upstream>>,
        shared_redis: Option<&loom_config::RedisStore>,
        plugins: &HashMap<String, loom_plugins::Plugin>,
    ) -> anyhow::Result<RouteTable> {
        let mut out = Vec::with_capacity(routes.len());
        for r in routes {
            let resolve = |name: &str| {
                upstream(name)
                    .ok_or_else(|| anyhow::anyhow!("route {}: unknown upstream {name}", r.id))
            };
            let kind = match (&r.upstream, &r.redirect) {
                (_, Some(rd)) if !r.ai_gateway => {
                    RouteKind::Redirect(crate::route::traffic::Redirect::new(rd)?)
                }
                (Some(name), _) if !r.ai_gateway => RouteKind::Proxy(resolve(name)?),
                _ => RouteKind::Ai,
            };
            let max_body = match (&kind, r.max_body_size) {
                (_, Some(size)) => Some(size.0),
                (RouteKind::Ai, None) => Some(ai_max_body),
                (_, None) => None,
            };
            let shadow = match &r.shadow {
                Some(sh) => Some(crate::route::traffic::Shadow::new(
                    sh,
                    resolve(&sh.upstream)?,
                )),
                None => None,
            };
            let canary = match &r.canary {
                Some(c) => Some(crate::route::traffic::Canary::new(
                    c,
                    resolve(&c.upstream)?,
                )?),
                None => None,
            };
            let path = if r.path == "/*" || r.path == "*" {
                PathMatch::Any
            } else if let Some(prefix) = r.path.strip_suffix("/*") {
                PathMatch::Prefix(prefix.to_owned())
            } else if let Some(prefix) = r.path.strip_suffix('*') {
                PathMatch::Prefix(prefix.to_owned())
            } else {
                PathMatch::Exact(r.path.clone())
            };
            let host = match r.host.as_deref() {
                None | Some("*") => HostMatch::Any,
                Some(h) => match h.strip_prefix("*.") {
                    Some(suffix) => HostMatch::Suffix(format!(".{}", suffix.to_ascii_lowercase())),
                    None => HostMatch::Exact(h.to_ascii_lowercase()),
                },
            };
            let methods = match &r.methods {
                None => None,
                Some(list) => Some(
                    list.iter()
                        .map(|m| Method::from_bytes(m.as_bytes()))
                        .collect::<Result<Vec<_>, _>>()?,
                ),
            };
            out.push(CompiledRoute {
                id: Arc::from(r.id.as_str()),
                kind,
                max_body,
                metrics: Arc::new(
                    metrics.route_series(
                        &r.id,
                        r.upstream
                            .as_deref()
                            .filter(|_| !r.ai_gateway)
                            .unwrap_or("-"),
                    ),
                ),
                auth: r
                    .middleware
                    .auth
                    .as_ref()
                    .map(crate::route::auth::KeyAuth::new),
                retry: r.retry.as_ref().map(loom_proxy::RetryPolicy::new),
                conditions: r
                    .matches
                    .as_ref()
                    .map(crate::route::traffic::Conditions::new)
                    .transpose()?,
                rewrite: r
                    .rewrite
                    .as_ref()
                    .map(crate::route::traffic::Rewrite::new)
                    .transpose()?,
                canary,
                shadow,
                rate_limit: r
                    .middleware
                    .rate_limit
                    .as_ref()
                    .map(|rl| crate::route::traffic::RouteLimit::new(&r.id, rl, shared_redis))
                    .transpose()?,
                plugins: loom_plugins::Chain::new(
                    r.middleware
                        .plugins
                        .iter()
                        .map(|name| {
                            plugins.get(name).cloned().ok_or_else(|| {
                                anyhow::anyhow!("route {}: unknown plugin {name}", r.id)
                            })
                        })
                        .collect::<anyhow::Result<_>>()?,
                ),
                host,
                path,
                methods,
            });
        }
        Ok(RouteTable { routes: out })
    }

    /// The first route matching host, path, method and its conditions.
    pub fn find(
        &self,
        host: Option<&str>,
        path: &str,
        method: &Method,
        query: Option<&str>,
        headers: &http::HeaderMap,
    ) -> Lookup<'_> {
        let host = host.map(|h| {
            h.rsplit_once(':').map_or(h, |(name, port)| {
                if port.bytes().all(|b| b.is_ascii_digit()) {
                    name
                } else {
                    h
                }
            })
        });
        let mut method_mismatch = false;
        for r in &self.routes {
            if !r.host_matches(host) || !r.path_matches(path) {
                continue;
            }
            if let Some(c) = &r.conditions
                && !c.hold(path, query, headers)
            {
                continue;
            }
            match &r.methods {
                Some(ms) if !ms.contains(method) => method_mismatch = true,
                _ => return Lookup::Found(r),
            }
        }
        if method_mismatch {
            Lookup::MethodNotAllowed
        } else {
            Lookup::NotFound
        }
    }
}

impl CompiledRoute {
    fn path_matches(&self, path: &str) -> bool {
        match &self.path {
            PathMatch::Any => true,
            PathMatch::Exact(p) => path == p,
            PathMatch::Prefix(p) => {
                path.starts_with(p.as_str())
                    && (p.ends_with('/')
                        || path.len() == p.len()
                        || path.as_bytes()[p.len()] == b'/')
            }
        }
    }

    fn host_matches(&self, host: Option<&str>) -> bool {
        match (&self.host, host) {
            (HostMatch::Any, _) => true,
            (_, None) => false,
            (HostMatch::Exact(h), Some(got)) => got.eq_ignore_ascii_case(h),
            (HostMatch::Suffix(s), Some(got)) => {
                got.len() > s.len() && got[got.len() - s.len()..].eq_ignore_ascii_case(s)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(yaml: &str) -> RouteTable {
        let routes: Vec<Route> = serde_norway::from_str(yaml).unwrap();
        RouteTable::build(
            &routes,
            1024,
            &crate::admin::metrics::Metrics::new().unwrap(),
            |_| None,
            None,
            &HashMap::new(),
        )
        .unwrap()
    }

    fn id(t: &RouteTable, host: Option<&str>, path: &str, m: Method) -> String {
        match t.find(host, path, &m, None, &http::HeaderMap::new()) {
            Lookup::Found(r) => r.id.to_string(),
            Lookup::MethodNotAllowed => "405".into(),
            Lookup::NotFound => "404".into(),
        }
    }

    #[test]
    fn matches_in_order_by_host_path_and_method() {
        let t = table(
            r#"
- {id: chat, path: /v1/chat/completions, ai_gateway: true, methods: [POST]}
- {id: api, path: /v1/*, ai_gateway: true, host: "*.example.com"}
- {id: v1, path: /v1/*, ai_gateway: true}
- {id: exact, path: /health-x, ai_gateway: true}
"#,
        );
        assert_eq!(id(&t, None, "/v1/chat/completions", Method::POST), "chat");
        assert_eq!(
            id(&t, Some("a.example.com:8080"), "/v1/models", Method::GET),
            "api"
        );
        assert_eq!(id(&t, Some("example.com"), "/v1/models", Method::GET), "v1");
        assert_eq!(id(&t, None, "/v1", Method::GET), "v1");
        assert_eq!(id(&t, None, "/v10", Method::GET), "404");
        assert_eq!(id(&t, None, "/health-x", Method::GET), "exact");
        assert_eq!(id(&t, None, "/health-x/y", Method::GET), "404");
        // A method mismatch on the exact route falls through to the wildcard.
        assert_eq!(id(&t, None, "/v1/chat/completions", Method::GET), "v1");
    }

    #[test]
    fn method_not_allowed_when_only_the_method_differs() {
        let t = table("- {id: a, path: /x, ai_gateway: true, methods: [POST]}");
        assert_eq!(id(&t, None, "/x", Method::GET), "405");
    }
}
