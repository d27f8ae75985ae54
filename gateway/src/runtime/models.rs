//! Models and caches kept across reloads: the local sentence embedder and
//! its worker (one per models folder), an operator's classifier, and the
//! semantic cache's indexes, each loaded once.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use loom_config::Config;
use loom_inference::batch::Batcher;
use loom_inference::classify::SequenceClassifier;
use loom_inference::embed::{DIMENSIONS, LocalEmbedder, ModelFiles};
use loom_providers::Adapter as _;
use loom_providers::Registry;
use loom_semantic_cache::memory::MemoryIndex;
use loom_semantic_cache::{Answer, BoxFuture, Embedder, SemanticCache};

use super::stores::StoreCache;

pub(super) struct CacheSlot {
    identity: String,
    index: Arc<MemoryIndex<Answer>>,
    snapshot: Option<PathBuf>,
}

/// A configured provider as the cache's embedder.
struct ProviderEmbedder {
    provider: Arc<loom_providers::Provider>,
    model: String,
}

impl Embedder for ProviderEmbedder {
    fn embed<'a>(&'a self, text: &'a str) -> BoxFuture<'a, Result<Vec<f32>, String>> {
        Box::pin(async move {
            let req = loom_models::embeddings::EmbeddingRequest {
                model: self.model.clone(),
                input: serde_json::Value::String(text.to_owned()),
                ..Default::default()
            };
            let reply = self
                .provider
                .adapter()
                .embeddings(&req, None)
                .await
                .map_err(|e| e.to_string())?;
            let body: loom_models::embeddings::EmbeddingResponse =
                serde_json::from_slice(&reply.body).map_err(|e| e.to_string())?;
            let first = body
                .data
                .into_iter()
                .next()
                .ok_or("no embedding returned")?;
            let mut v: Vec<f32> =
                serde_json::from_value(first.embedding).map_err(|e| e.to_string())?;
            // Providers' vectors are usually unit length already; make sure,
            // so that a dot product is the cosine.
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            if norm > 0.0 {
                v.iter_mut().for_each(|x| *x /= norm);
            }
            Ok(v)
        })
    }
}

/// The local sentence embedder as the guardrails see it.
struct Local(Arc<LocalEmbedder>);

impl loom_guardrails::classifier::Embedder for Local {
    fn embed(&self, text: &str) -> Result<Vec<f32>, String> {
        self.0.embed(text).map_err(|e| e.to_string())
    }
}

/// An injection classifier of the operator's own, as the guardrails see it.
struct Own(SequenceClassifier);

impl loom_guardrails::classifier::TextClassifier for Own {
    fn probability(&self, text: &str) -> Result<f32, String> {
        self.0.probability(text).map_err(|e| e.to_string())
    }
}

/// The models folder a configuration names, or `$LOOM_MODELS`, or
/// `~/.cache/loom/models`.
fn models_dir(named: Option<&str>) -> PathBuf {
    named
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("LOOM_MODELS").map(PathBuf::from))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/loom/models")))
        .unwrap_or_else(|| PathBuf::from("models"))
}

impl StoreCache {
    /// The models `config`'s classifiers use, each loaded once per folder
    /// and kept across reloads: the sentence embedder (one models folder per
    /// gateway) and any injection classifier of the operator's own.
    pub fn models(
        &self,
        policies: &loom_config::settings::Guardrails,
    ) -> anyhow::Result<loom_guardrails::Models> {
        let wanted = policies.classifiers();
        let mut out = loom_guardrails::Models::default();
        if wanted.is_empty() {
            return Ok(out);
        }
        let mut folders: Vec<Option<String>> = Vec::new();
        for c in &wanted {
            if !folders.contains(&c.models) {
                folders.push(c.models.clone());
            }
        }
        let [one] = folders.as_slice() else {
            anyhow::bail!(
                "classifier.models: every policy must name the same models folder (one embedder per gateway)"
            );
        };
        let dir = models_dir(one.as_deref());
        let files = ModelFiles::in_dir(&dir);
        if wanted.iter().any(|c| c.model.is_none()) {
            let e = self.local_embedder(&dir).context(
                "classifier: loading the sentence embedder (scripts/fetch-models fetches it)",
            )?;
            out.embedder = Some(Arc::new(Local(e)));
        }
        for c in &wanted {
            let Some(own) = &c.model else { continue };
            if out.injection.iter().any(|(d, _)| d == own) {
                continue;
            }
            let labels = if c.labels.is_empty() {
                vec!["INJECTION".to_owned(), "JAILBREAK".to_owned()]
            } else {
                c.labels.clone()
            };
            let m = SequenceClassifier::load(std::path::Path::new(own), &files.runtime, &labels)
                .with_context(|| format!("prompt_injection.classifier.model: loading {own}"))?;
            out.injection.push((own.clone(), Arc::new(Own(m))));
        }
        Ok(out)
    }

    /// The local embedder of `dir`, loaded once.
    fn local_embedder(&self, dir: &std::path::Path) -> anyhow::Result<Arc<LocalEmbedder>> {
        let mut cache = self.embedders.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, e)) = cache.iter().find(|(d, _)| d == dir) {
            return Ok(e.clone());
        }
        let e = Arc::new(LocalEmbedder::load(&ModelFiles::in_dir(dir))?);
        cache.push((dir.to_owned(), e.clone()));
        Ok(e)
    }

    /// The semantic cache `config` asks for: its index kept across reloads
    /// while the embedder is the same (and loaded from the snapshot file
    /// when first made), with this configuration's embedder.
    pub fn semantic_cache(
        &self,
        config: &Config,
        providers: &Registry,
    ) -> anyhow::Result<Option<SemanticCache>> {
        let c = &config.ai_gateway.semantic_cache;
        if !c.enabled {
            return Ok(None);
        }
        let (identity, dims, embedder): (String, usize, Option<Arc<dyn Embedder>>) = match &c
            .embedding
        {
            Some(e) if e.provider != "local" => {
                let provider = providers
                    .providers()
                    .iter()
                    .find(|p| p.name() == e.provider)
                    .with_context(|| {
                        format!("semantic_cache.embedding: no provider {:?}", e.provider)
                    })?
                    .clone();
                let model = e
                    .model
                    .clone()
                    .unwrap_or_else(|| "text-embedding-3-small".to_owned());
                (
                    format!("provider:{}:{model}", e.provider),
                    0,
                    Some(Arc::new(ProviderEmbedder { provider, model })),
                )
            }
            named => {
                let dir = models_dir(named.as_ref().and_then(|e| e.models.as_deref()));
                match self.batcher(&dir) {
                    Ok(b) => (
                        format!("local:{}", dir.display()),
                        DIMENSIONS,
                        Some(Arc::new(b) as Arc<dyn Embedder>),
                    ),
                    // Named explicitly: the operator expects similarity.
                    Err(e) if named.is_some() => {
                        return Err(e.context(
                                "semantic_cache.embedding: loading the local model (scripts/fetch-models fetches it)",
                            ));
                    }
                    Err(e) => {
                        tracing::warn!(
                            error = %format!("{e:#}"),
                            "semantic_cache: the local embedding model is not available; only identical requests hit (scripts/fetch-models fetches it)"
                        );
                        ("exact".to_owned(), 0, None)
                    }
                }
            }
        };
        let max = c.max_size.map_or(256 << 20, |m| m.0 as usize);
        let ttl = c.ttl.map_or(3600, |t| t.get().as_secs().max(1));
        let snapshot = c.snapshot.as_ref().map(PathBuf::from);
        let mut slots = self.caches.lock().unwrap_or_else(|e| e.into_inner());
        let index = match slots.iter_mut().find(|s| s.identity == identity) {
            Some(slot) => {
                slot.index.set_limits(max, ttl);
                slot.snapshot.clone_from(&snapshot);
                slot.index.clone()
            }
            None => {
                let index = Arc::new(MemoryIndex::new(max, ttl, dims));
                if let Some(path) = &snapshot {
                    match loom_semantic_cache::snapshot::load(&index, path, self.clock.now_unix()) {
                        Ok(n) => {
                            tracing::info!(entries = n, file = %path.display(), "semantic cache loaded")
                        }
                        Err(e) => tracing::warn!(error = %e, "semantic cache snapshot not loaded"),
                    }
                }
                slots.push(CacheSlot {
                    identity,
                    index: index.clone(),
                    snapshot,
                });
                index
            }
        };
        let mut cache = SemanticCache::new(index, embedder);
        if c.backend == loom_config::CacheBackend::Redis {
            let redis = config
                .ai_gateway
                .cache_redis()
                .context("semantic_cache.backend: redis needs semantic_cache.redis")?;
            let conn = loom_accounting::redis_connection(redis)
                .context("semantic_cache.redis: connecting")?;
            cache = cache.with_shared(Arc::new(loom_semantic_cache::shared::SharedExact::new(
                conn,
                &redis.key_prefix,
                redis.timeout.get(),
            )));
        }
        if c.backend == loom_config::CacheBackend::Qdrant {
            let q = c
                .qdrant
                .as_ref()
                .context("semantic_cache.backend: qdrant needs semantic_cache.qdrant")?;
            let api_key = q.api_key.expose();
            let index = loom_semantic_cache::qdrant::QdrantIndex::connect(
                &loom_semantic_cache::qdrant::QdrantSettings {
                    url: q.url.clone(),
                    api_key: (!api_key.is_empty()).then(|| api_key.to_owned()),
                    collection: q.collection.clone(),
                    timeout: q.timeout.get(),
                },
            )
            .map_err(|e| anyhow::anyhow!("semantic_cache.qdrant: {e}"))?;
            cache = cache.with_qdrant(Arc::new(index));
        }
        Ok(Some(cache))
    }

    /// The embedding worker of `dir`, started once.
    fn batcher(&self, dir: &std::path::Path) -> anyhow::Result<Batcher> {
        let mut batchers = self.batchers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, b)) = batchers.iter().find(|(d, _)| d == dir) {
            return Ok(b.clone());
        }
        let b = Batcher::start(self.local_embedder(dir)?)?;
        batchers.push((dir.to_owned(), b.clone()));
        Ok(b)
    }

    /// Writes every cache with a snapshot file (at shutdown).
    pub fn save_caches(&self) {
        let slots = self.caches.lock().unwrap_or_else(|e| e.into_inner());
        for slot in slots.iter() {
            let Some(path) = &slot.snapshot else { continue };
            match loom_semantic_cache::snapshot::save(&slot.index, path) {
                Ok(n) => {
                    tracing::info!(entries = n, file = %path.display(), "semantic cache saved")
                }
                Err(e) => tracing::warn!(error = %e, "semantic cache snapshot not saved"),
            }
        }
    }
}
