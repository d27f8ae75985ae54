//! Traffic management of routes: extra match conditions (headers, query,
//! path regex), rewrites (path prefix, request and response headers),
//! redirects, and canary splits, compiled once per configuration.

use std::sync::Arc;

use http::header::{HeaderName, HeaderValue, LOCATION};
use http::{HeaderMap, Response, StatusCode, Uri};
use loom_proxy::Upstream;
use regex::Regex;

use crate::runtime::body::Body;

/// What a header or query parameter must be: present, or equal to a value.
#[derive(Debug)]
enum Want<T> {
    Present,
    Equal(T),
}

fn want<T>(v: &str, f: impl FnOnce(&str) -> anyhow::Result<T>) -> anyhow::Result<Want<T>> {
    Ok(if v == "*" {
        Want::Present
    } else {
        Want::Equal(f(v)?)
    })
}

/// `routes[].match`, compiled.
#[derive(Debug)]
pub struct Conditions {
    headers: Vec<(HeaderName, Want<HeaderValue>)>,
    query: Vec<(String, Want<String>)>,
    path: Option<Regex>,
}

fn header_name(n: &str) -> anyhow::Result<HeaderName> {
    HeaderName::try_from(n).map_err(|_| anyhow::anyhow!("invalid header name {n:?}"))
}

fn header_value(v: &str) -> anyhow::Result<HeaderValue> {
    HeaderValue::try_from(v).map_err(|_| anyhow::anyhow!("invalid header value {v:?}"))
}

fn headers_match(want: &[(HeaderName, Want<HeaderValue>)], headers: &HeaderMap) -> bool {
    want.iter().all(|(name, w)| match w {
        Want::Present => headers.contains_key(name),
        Want::Equal(v) => headers.get_all(name).iter().any(|got| got == v),
    })
}

impl Conditions {
    pub fn new(m: &loom_config::RouteMatch) -> anyhow::Result<Conditions> {
        Ok(Conditions {
            headers: m
                .headers
                .iter()
                .map(|(n, v)| Ok((header_name(n)?, want(v, header_value)?)))
                .collect::<anyhow::Result<_>>()?,
            query: m
                .query
                .iter()
                .map(|(k, v)| Ok((k.clone(), want(v, |s| Ok(s.to_owned()))?)))
                .collect::<anyhow::Result<_>>()?,
            path: m.path_regex.as_ref().map(|p| p.regex().clone()),
        })
    }

    /// Whether a request with this path, query and headers satisfies
    /// every condition.
    pub fn hold(&self, path: &str, query: Option<&str>, headers: &HeaderMap) -> bool {
        if !headers_match(&self.headers, headers) {
            return false;
        }
        if let Some(re) = &self.path
            && !re.is_match(path)
        {
            return false;
        }
        self.query.iter().all(|(key, w)| {
            let mut values = query.unwrap_or("").split('&').filter_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (k == key).then_some(v)
            });
            match w {
                Want::Present => values.next().is_some(),
                Want::Equal(v) => values.any(|got| got == v),
            }
        })
    }
}

/// Header edits, compiled.
#[derive(Debug, Default)]
pub struct Edits {
    set: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl Edits {
    fn new(e: &loom_config::HeaderEdits) -> anyhow::Result<Edits> {
        Ok(Edits {
            set: e
                .set
                .iter()
                .map(|(n, v)| Ok((header_name(n)?, header_value(v)?)))
                .collect::<anyhow::Result<_>>()?,
            remove: e
                .remove
                .iter()
                .map(|n| header_name(n))
                .collect::<anyhow::Result<_>>()?,
        })
    }

    /// Applies the edits: removals first, then the values set.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for n in &self.remove {
            headers.remove(n);
        }
        for (n, v) in &self.set {
            headers.insert(n.clone(), v.clone());
        }
    }
}

/// `routes[].rewrite`, compiled.
#[derive(Debug, Default)]
pub struct Rewrite {
    prefix: Option<(String, String)>,
    pub request: Edits,
    pub response: Edits,
}

impl Rewrite {
    pub fn new(r: &loom_config::Rewrite) -> anyhow::Result<Rewrite> {
        Ok(Rewrite {
            prefix: r.prefix_from.clone().zip(r.prefix_to.clone()),
            request: Edits::new(&r.request_headers)?,
            response: Edits::new(&r.response_headers)?,
        })
    }

    /// The request's URI with its path prefix replaced, if it has it.
    pub fn uri(&self, uri: &Uri) -> Option<Uri> {
        let (from, to) = self.prefix.as_ref()?;
        let rest = uri.path().strip_prefix(from.as_str())?;
        let mut path = String::with_capacity(to.len() + rest.len() + 1);
        path.push_str(to.trim_end_matches('/'));
        if !rest.starts_with('/') {
            path.push('/');
        }
        path.push_str(rest);
        if let Some(q) = uri.query() {
            path.push('?');
            path.push_str(q);
        }
        let mut parts = uri.clone().into_parts();
        parts.path_and_query = path.parse().ok();
        Uri::from_parts(parts).ok()
    }
}

/// `routes[].redirect`, compiled.
#[derive(Debug)]
pub struct Redirect {
    to: String,
    status: StatusCode,
    keep_path: bool,
}

impl Redirect {
    pub fn new(r: &loom_config::Redirect) -> anyhow::Result<Redirect> {
        Ok(Redirect {
            to: r.to.clone(),
            status: StatusCode::from_u16(r.status)?,
            keep_path: r.keep_path,
        })
    }

    /// The redirect answer for a request to `uri`.
    pub fn response(&self, uri: &Uri) -> Response<Body> {
        let mut location = self.to.trim_end_matches('/').to_owned();
        if self.keep_path {
            location.push_str(uri.path_and_query().map_or("/", |p| p.as_str()));
        } else if location.is_empty() {
            location.push('/');
        }
        let mut resp = Response::new(crate::runtime::body::full(bytes::Bytes::new()));
        *resp.status_mut() = self.status;
        if let Ok(v) = HeaderValue::try_from(location) {
            resp.headers_mut().insert(LOCATION, v);
        }
        resp
    }
}

/// `routes[].canary`, compiled.
#[derive(Debug)]
pub struct Canary {
    pub upstream: Arc<Upstream>,
    /// Out of 10,000, for a cheap draw.
    weight: u32,
    headers: Vec<(HeaderName, Want<HeaderValue>)>,
    cookies: Vec<(String, String)>,
}

/// A draw out of 10,000.
fn draw() -> u32 {
    (loom_proxy::random() % 10_000) as u32
}

impl Canary {
    pub fn new(c: &loom_config::Canary, upstream: Arc<Upstream>) -> anyhow::Result<Canary> {
        Ok(Canary {
            upstream,
            weight: c.weight.min(100) * 100,
            headers: c
                .headers
                .iter()
                .map(|(n, v)| Ok((header_name(n)?, want(v, header_value)?)))
                .collect::<anyhow::Result<_>>()?,
            cookies: c
                .cookies
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }

    /// Whether this request goes to the canary: it asks for it by header or
    /// cookie, or falls in the canary's share.
    pub fn takes(&self, headers: &HeaderMap) -> bool {
        let by_header = !self.headers.is_empty() && headers_match(&self.headers, headers);
        let by_cookie = !self.cookies.is_empty()
            && self
                .cookies
                .iter()
                .all(|(name, value)| loom_proxy::cookie(headers, name) == Some(value.as_bytes()));
        by_header || by_cookie || (self.weight > 0 && draw() < self.weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn conditions_on_headers_query_and_path() {
        let m: loom_config::RouteMatch = serde_norway::from_str(
            "headers: {x-tenant: acme, x-debug: '*'}\nquery: {v: '2'}\npath_regex: '^/api/v[0-9]+/users$'",
        )
        .expect("match");
        let c = Conditions::new(&m).expect("compiles");
        let ok = headers(&[("x-tenant", "acme"), ("x-debug", "1")]);
        assert!(c.hold("/api/v2/users", Some("a=1&v=2"), &ok));
        assert!(!c.hold("/api/v2/users", Some("v=3"), &ok));
        assert!(!c.hold("/api/v2/users", None, &ok));
        assert!(!c.hold("/api/x/users", Some("v=2"), &ok));
        assert!(!c.hold(
            "/api/v2/users",
            Some("v=2"),
            &headers(&[("x-tenant", "acme")])
        ));
    }

    #[test]
    fn prefixes_are_rewritten_with_the_query_kept() {
        let r: loom_config::Rewrite =
            serde_norway::from_str("prefix_from: /api\nprefix_to: /v2").expect("rewrite");
        let r = Rewrite::new(&r).expect("compiles");
        let uri: Uri = "/api/users?x=1".parse().expect("uri");
        assert_eq!(r.uri(&uri).expect("rewritten"), "/v2/users?x=1");
        let uri: Uri = "/api".parse().expect("uri");
        assert_eq!(r.uri(&uri).expect("rewritten"), "/v2/");
        assert!(r.uri(&"/other".parse().expect("uri")).is_none());
    }

    #[test]
    fn canary_by_header_cookie_and_share() {
        let c: loom_config::Canary = serde_norway::from_str(
            "upstream: v2\nweight: 25\nheaders: {x-canary: '1'}\ncookies: {beta: 'yes'}",
        )
        .expect("canary");
        let up = Arc::new(
            Upstream::new(
                &serde_norway::from_str("name: v2\nendpoints: [http://127.0.0.1:1]")
                    .expect("upstream"),
            )
            .expect("builds"),
        );
        let c = Canary::new(&c, up).expect("compiles");
        assert!(c.takes(&headers(&[("x-canary", "1")])));
        assert!(c.takes(&headers(&[("cookie", "a=b; beta=yes")])));
        let share = (0..40_000).filter(|_| c.takes(&HeaderMap::new())).count();
        assert!((share as f64 / 40_000.0 - 0.25).abs() < 0.02, "{share}");
    }
}

/// `routes[].shadow`, compiled.
#[derive(Debug)]
pub struct Shadow {
    pub upstream: Arc<Upstream>,
    /// Out of 10,000.
    share: u32,
}

impl Shadow {
    pub fn new(s: &loom_config::Shadow, upstream: Arc<Upstream>) -> Shadow {
        Shadow {
            upstream,
            share: s.percent.min(100) * 100,
        }
    }

    /// Whether this request is copied.
    pub fn takes(&self) -> bool {
        self.share >= 10_000 || (self.share > 0 && draw() < self.share)
    }
}

/// What a route's rate limit counts by.
#[derive(Debug)]
enum LimitKey {
    ClientIp,
    Consumer,
    Header(HeaderName),
}

/// `routes[].middleware.rate_limit`, compiled.
#[derive(Debug)]
pub struct RouteLimit {
    limiter: loom_accounting::KeyedLimiter,
    key: LimitKey,
    /// The key's namespace in a shared store: the route.
    route: String,
}

impl RouteLimit {
    /// The limit of route `route`; `shared_redis` is the usage store's
    /// Redis, used when the limit names none.
    pub fn new(
        route: &str,
        cfg: &loom_config::RouteRateLimit,
        shared_redis: Option<&loom_config::RedisStore>,
    ) -> anyhow::Result<RouteLimit> {
        let rate = loom_accounting::Rate {
            limit: cfg.limit.max(1),
            window: cfg.window.get(),
        };
        let limiter = match cfg.store {
            loom_config::StoreKind::Memory => loom_accounting::KeyedLimiter::local(rate),
            loom_config::StoreKind::Redis => {
                let redis = cfg.redis.as_ref().or(shared_redis).ok_or_else(|| {
                    anyhow::anyhow!("route {route}: rate_limit store: redis needs redis settings")
                })?;
                loom_accounting::KeyedLimiter::redis(
                    rate,
                    loom_accounting::redis_connection(redis)?,
                    &redis.key_prefix,
                    redis.timeout.get(),
                    cfg.failure_mode == loom_config::FailureMode::Open,
                )
            }
        };
        let key = match cfg.key.as_str() {
            "consumer" => LimitKey::Consumer,
            k => match k.strip_prefix("header:") {
                Some(h) => LimitKey::Header(header_name(h)?),
                None => LimitKey::ClientIp,
            },
        };
        Ok(RouteLimit {
            limiter,
            key,
            route: route.to_owned(),
        })
    }

    /// Takes one request; the refusal to send when over the limit.
    pub async fn admit(
        &self,
        headers: &HeaderMap,
        client_ip: &HeaderValue,
        consumer: Option<&str>,
    ) -> Option<Response<Body>> {
        let who: &[u8] = match &self.key {
            LimitKey::ClientIp => client_ip.as_bytes(),
            LimitKey::Consumer => consumer.map_or(client_ip.as_bytes(), str::as_bytes),
            LimitKey::Header(h) => headers
                .get(h)
                .map_or(client_ip.as_bytes(), |v| v.as_bytes()),
        };
        let mut key = String::with_capacity(self.route.len() + 1 + who.len());
        key.push_str(&self.route);
        key.push(':');
        key.push_str(&String::from_utf8_lossy(who));
        let s = self.limiter.take(&key).await;
        if s.allowed {
            return None;
        }
        let rate = self.limiter.rate();
        let body = serde_json::json!({"error": {
            "message": format!("Rate limit reached: {} requests per {:?}", rate.limit, rate.window),
            "type": "rate_limit_error", "param": null, "code": "rate_limit_exceeded"}});
        let mut resp = crate::runtime::body::json_response(
            StatusCode::TOO_MANY_REQUESTS,
            serde_json::to_vec(&body).unwrap_or_default(),
        );
        let h = resp.headers_mut();
        let secs = s.retry_after.as_secs() + u64::from(s.retry_after.subsec_nanos() > 0);
        h.insert(http::header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        h.insert("x-ratelimit-limit", HeaderValue::from(rate.limit));
        h.insert("x-ratelimit-remaining", HeaderValue::from(s.remaining));
        Some(resp)
    }
}
