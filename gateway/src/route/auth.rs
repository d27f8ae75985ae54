//! API-key authentication of consumers: the route's key header (`X-API-Key`
//! by default, which the Anthropic SDK also sends as `x-api-key`) or
//! `Authorization: Bearer`, which the OpenAI SDK sends with its `api_key`.

use std::sync::Arc;

use http::header::{AUTHORIZATION, HeaderName};
use http::{HeaderMap, StatusCode};
use loom_accounting::{Consumer, Consumers};

/// How one route authenticates.
#[derive(Debug, Clone)]
pub struct KeyAuth {
    header: HeaderName,
    /// Keep the key headers on requests forwarded by a proxy route.
    forward_key: bool,
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    Missing,
    Invalid,
}

impl Denied {
    /// Status, message and OpenAI-style code.
    pub fn parts(self, header: &HeaderName) -> (StatusCode, String, &'static str) {
        match self {
            Denied::Missing => (
                StatusCode::UNAUTHORIZED,
                format!(
                    "Missing API key. Send it in the {header} header or as Authorization: Bearer <key>."
                ),
                "missing_api_key",
            ),
            // The message never repeats the key.
            Denied::Invalid => (
                StatusCode::UNAUTHORIZED,
                "Incorrect API key provided.".to_owned(),
                "invalid_api_key",
            ),
        }
    }
}

impl KeyAuth {
    /// From a route's `middleware.auth` (validated: the header name parses).
    pub fn new(cfg: &loom_config::Auth) -> KeyAuth {
        let header = cfg
            .header
            .as_deref()
            .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok())
            .unwrap_or(HeaderName::from_static("x-api-key"));
        KeyAuth {
            header,
            forward_key: cfg.forward_key,
        }
    }

    /// The key header's name.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// The consumer that owns the request's key: a configured one, else a
    /// run-time key of `keys` (with the key). On success the key headers
    /// are removed unless the route forwards them. A revoked or expired
    /// run-time key is refused as an unknown one is.
    pub fn authenticate(
        &self,
        headers: &mut HeaderMap,
        consumers: &Consumers,
        keys: Option<&loom_control::KeyTable>,
    ) -> Result<(Arc<Consumer>, Option<Arc<loom_control::KeyRecord>>), Denied> {
        let from_header = headers.get(&self.header).map(|v| v.as_bytes());
        let bearer = || {
            let v = headers.get(AUTHORIZATION)?.as_bytes();
            let scheme = v.get(..7)?;
            scheme
                .eq_ignore_ascii_case(b"bearer ")
                .then(|| v[7..].trim_ascii())
        };
        let Some(key) = from_header.map(<[u8]>::trim_ascii).or_else(bearer) else {
            return Err(Denied::Missing);
        };
        if key.is_empty() {
            return Err(Denied::Missing);
        }
        let found = match consumers.authenticate(key) {
            Some(c) => (c, None),
            None => {
                let record = keys
                    .and_then(|k| k.authenticate(key, loom_control::now()))
                    .ok_or(Denied::Invalid)?;
                (record.consumer.clone(), Some(record))
            }
        };
        if !self.forward_key {
            headers.remove(&self.header);
            headers.remove(AUTHORIZATION);
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use loom_config::{ConsumerEntry, Secret};

    fn consumers() -> Consumers {
        Consumers::from_config(&[ConsumerEntry {
            name: "web".into(),
            tier: None,
            keys: vec![Secret::new("sk-web-key-1")],
            metadata: Default::default(),
        }])
    }

    fn auth() -> KeyAuth {
        KeyAuth::new(&loom_config::Auth {
            kind: "api_key".into(),
            header: Some("X-API-Key".into()),
            forward_key: false,
        })
    }

    #[test]
    fn the_key_header_or_a_bearer_token_authenticates() {
        let c = consumers();
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("sk-web-key-1"));
        assert_eq!(
            auth()
                .authenticate(&mut h, &c, None)
                .map(|(c, _)| c.name.clone()),
            Ok("web".into())
        );
        assert!(h.get("x-api-key").is_none(), "the key is not passed on");
        let mut h = HeaderMap::new();
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Bearer sk-web-key-1"),
        );
        assert!(auth().authenticate(&mut h, &c, None).is_ok());
        let mut h = HeaderMap::new();
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_static("bearer  sk-web-key-1 "),
        );
        assert!(auth().authenticate(&mut h, &c, None).is_ok());
    }

    #[test]
    fn missing_and_wrong_keys_are_told_apart() {
        let c = consumers();
        assert_eq!(
            auth().authenticate(&mut HeaderMap::new(), &c, None).err(),
            Some(Denied::Missing)
        );
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic d2ViOnB3"));
        assert_eq!(
            auth().authenticate(&mut h, &c, None).err(),
            Some(Denied::Missing)
        );
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("sk-web-key-2"));
        assert_eq!(
            auth().authenticate(&mut h, &c, None).err(),
            Some(Denied::Invalid)
        );
    }
}
