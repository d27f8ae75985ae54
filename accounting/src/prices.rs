//! What tokens cost: a built-in table of list prices, overridden by
//! configuration. Costs are integers of picodollars (10⁻¹² USD) so that
//! sums are exact: every list price per million tokens with up to six
//! decimals is a whole number of picodollars per token.

use std::collections::HashMap;

use loom_config::settings::Prices;

/// Most (provider, model) answers remembered.
const MEMO_LIMIT: usize = 4096;

/// Picodollars per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Price {
    pub input: u64,
    pub output: u64,
    pub cached_input: u64,
    /// Prompt tokens written to the provider's prompt cache (Anthropic
    /// charges 1.25× the input price for its five-minute cache).
    pub cache_write: u64,
}

impl Price {
    /// From dollars per million tokens.
    fn per_million(input: f64, output: f64, cached_input: f64) -> Price {
        Price {
            input: pico(input / 1e6),
            output: pico(output / 1e6),
            cached_input: pico(cached_input / 1e6),
            cache_write: pico(input / 1e6),
        }
    }

    /// From dollars per thousand tokens; cache reads and writes at the
    /// input price when not given.
    fn per_thousand(
        input: f64,
        output: f64,
        cached_input: Option<f64>,
        cache_write: Option<f64>,
    ) -> Price {
        Price {
            input: pico(input / 1e3),
            output: pico(output / 1e3),
            cached_input: pico(cached_input.unwrap_or(input) / 1e3),
            cache_write: pico(cache_write.unwrap_or(input) / 1e3),
        }
    }

    /// Cost of a request, in picodollars. `cached` is the part of `prompt`
    /// read from the provider's prompt cache, `written` the part written
    /// to it.
    pub fn cost(&self, prompt: u64, completion: u64, cached: u64, written: u64) -> u64 {
        let cached = cached.min(prompt);
        let written = written.min(prompt - cached);
        (prompt - cached - written)
            .saturating_mul(self.input)
            .saturating_add(cached.saturating_mul(self.cached_input))
            .saturating_add(written.saturating_mul(self.cache_write))
            .saturating_add(completion.saturating_mul(self.output))
    }
}

fn pico(dollars: f64) -> u64 {
    (dollars * 1e12).round() as u64
}

/// List prices in dollars per million tokens (input, output, cached input),
/// as the providers published them in 2025. A dated or suffixed model name
/// takes the price of its longest listed prefix. Override in configuration
/// (`ai_gateway.pricing`) when a price changes or a contract differs.
const BUILT_IN: &[(&str, f64, f64, f64)] = &[
    // OpenAI
    ("gpt-5", 1.25, 10.0, 0.125),
    ("gpt-5-mini", 0.25, 2.0, 0.025),
    ("gpt-5-nano", 0.05, 0.40, 0.005),
    ("gpt-4.1", 2.0, 8.0, 0.50),
    ("gpt-4.1-mini", 0.40, 1.60, 0.10),
    ("gpt-4.1-nano", 0.10, 0.40, 0.025),
    ("gpt-4o", 2.50, 10.0, 1.25),
    ("gpt-4o-2024-05-13", 5.0, 15.0, 5.0),
    ("gpt-4o-mini", 0.15, 0.60, 0.075),
    ("gpt-4-turbo", 10.0, 30.0, 10.0),
    ("gpt-4", 30.0, 60.0, 30.0),
    ("gpt-4-32k", 60.0, 120.0, 60.0),
    ("gpt-3.5-turbo", 0.50, 1.50, 0.50),
    ("gpt-3.5-turbo-instruct", 1.50, 2.0, 1.50),
    ("o1", 15.0, 60.0, 7.50),
    ("o1-mini", 1.10, 4.40, 0.55),
    ("o1-pro", 150.0, 600.0, 150.0),
    ("o3", 2.0, 8.0, 0.50),
    ("o3-mini", 1.10, 4.40, 0.55),
    ("o3-pro", 20.0, 80.0, 20.0),
    ("o4-mini", 1.10, 4.40, 0.275),
    ("text-embedding-3-small", 0.02, 0.0, 0.02),
    ("text-embedding-3-large", 0.13, 0.0, 0.13),
    ("text-embedding-ada-002", 0.10, 0.0, 0.10),
    ("babbage-002", 0.40, 0.40, 0.40),
    ("davinci-002", 2.0, 2.0, 2.0),
    // Anthropic (cache reads at a tenth of the input price)
    ("claude-opus-4-5", 5.0, 25.0, 0.50),
    ("claude-opus-4-1", 15.0, 75.0, 1.50),
    ("claude-opus-4", 15.0, 75.0, 1.50),
    ("claude-sonnet-4-5", 3.0, 15.0, 0.30),
    ("claude-sonnet-4", 3.0, 15.0, 0.30),
    ("claude-haiku-4-5", 1.0, 5.0, 0.10),
    ("claude-3-7-sonnet", 3.0, 15.0, 0.30),
    ("claude-3-5-sonnet", 3.0, 15.0, 0.30),
    ("claude-3-5-haiku", 0.80, 4.0, 0.08),
    ("claude-3-opus", 15.0, 75.0, 1.50),
    ("claude-3-sonnet", 3.0, 15.0, 0.30),
    ("claude-3-haiku", 0.25, 1.25, 0.03),
    // Google Gemini (prompts up to 128K/200K tokens)
    ("gemini-2.5-pro", 1.25, 10.0, 0.31),
    ("gemini-2.5-flash", 0.30, 2.50, 0.075),
    ("gemini-2.5-flash-lite", 0.10, 0.40, 0.025),
    ("gemini-2.0-flash", 0.10, 0.40, 0.025),
    ("gemini-2.0-flash-lite", 0.075, 0.30, 0.075),
    ("gemini-1.5-pro", 1.25, 5.0, 0.3125),
    ("gemini-1.5-flash", 0.075, 0.30, 0.01875),
    ("gemini-1.5-flash-8b", 0.0375, 0.15, 0.01),
    ("text-embedding-004", 0.0, 0.0, 0.0),
];

/// Prices by provider and model: configuration first, then the built-in table.
#[derive(Debug, Default)]
pub struct PriceTable {
    /// Answers already worked out, by provider then model: a lookup walks
    /// every entry with prefix comparisons, which costs more than a map hit.
    memo: std::sync::RwLock<HashMap<String, HashMap<String, Option<Price>>>>,
    /// `(provider or any, model prefix, price)` from `ai_gateway.pricing`.
    overrides: Vec<(Option<String>, String, Price)>,
    /// Whole-provider prices from `routing.providers[].cost_per_1k_*`.
    per_provider: Vec<(String, Price)>,
    built_in: Vec<(&'static str, Price)>,
}

impl PriceTable {
    /// The built-in table with the configuration's overrides.
    pub fn new(prices: &Prices) -> PriceTable {
        let overrides = prices
            .models
            .iter()
            .map(|p| {
                (
                    p.provider.clone(),
                    p.model.clone(),
                    Price::per_thousand(p.input, p.output, p.cached_input, p.cache_write),
                )
            })
            .collect();
        let per_provider = prices
            .providers
            .iter()
            .map(|p| {
                (
                    p.provider.clone(),
                    Price::per_thousand(p.input, p.output, None, None),
                )
            })
            .collect();
        PriceTable {
            memo: Default::default(),
            overrides,
            per_provider,
            built_in: BUILT_IN
                .iter()
                .map(|&(m, i, o, c)| {
                    let mut price = Price::per_million(i, o, c);
                    // Anthropic bills writes to its (five-minute) prompt
                    // cache at 1.25× the input price; the others, not at all.
                    if m.starts_with("claude") {
                        price.cache_write = pico(i * 1.25 / 1e6);
                    }
                    (m, price)
                })
                .collect(),
        }
    }

    /// The price of `model` at `provider`; `None` for a model nobody priced.
    pub fn lookup(&self, provider: &str, model: &str) -> Option<Price> {
        if let Ok(memo) = self.memo.read()
            && let Some(price) = memo.get(provider).and_then(|m| m.get(model))
        {
            return *price;
        }
        let price = self.find(provider, model);
        if let Ok(mut memo) = self.memo.write() {
            let size: usize = memo.values().map(HashMap::len).sum();
            // Models named by clients (catch-all providers) must not grow it without bound.
            if size < MEMO_LIMIT {
                memo.entry(provider.to_owned())
                    .or_default()
                    .insert(model.to_owned(), price);
            }
        }
        price
    }

    fn find(&self, provider: &str, model: &str) -> Option<Price> {
        let own = longest(
            self.overrides
                .iter()
                .filter(|(p, _, _)| p.as_deref() == Some(provider))
                .map(|(_, m, price)| (m.as_str(), *price)),
            model,
        );
        own.or_else(|| {
            longest(
                self.overrides
                    .iter()
                    .filter(|(p, _, _)| p.is_none())
                    .map(|(_, m, price)| (m.as_str(), *price)),
                model,
            )
        })
        .or_else(|| {
            self.per_provider
                .iter()
                .find(|(p, _)| p == provider)
                .map(|(_, price)| *price)
        })
        .or_else(|| longest(self.built_in.iter().copied(), model))
    }
}

/// The price of the longest name that `model` starts with, at a boundary
/// (`gpt-4o` prices `gpt-4o-2024-08-06` but not `gpt-4omega`).
fn longest<'a>(entries: impl Iterator<Item = (&'a str, Price)>, model: &str) -> Option<Price> {
    // Provider-qualified names (`models/gemini-1.5-pro`, `openai/gpt-4o`) price as the bare model.
    let model = model.rsplit('/').next().unwrap_or(model);
    entries
        .filter(|(name, _)| {
            model.strip_prefix(name).is_some_and(|rest| {
                rest.is_empty()
                    || rest.starts_with('-')
                    || rest.starts_with('@')
                    || rest.starts_with(':')
            })
        })
        .max_by_key(|(name, _)| name.len())
        .map(|(_, price)| price)
}

/// A picodollar amount as the admin API shows it: `$1.73`, with up to six
/// decimals when the cents alone would hide it (`$0.000375`).
pub fn format_dollars(pico: u64) -> String {
    let micro = (pico + 500_000) / 1_000_000;
    let (whole, frac) = (micro / 1_000_000, micro % 1_000_000);
    let mut digits = format!("{frac:06}");
    while digits.len() > 2 && digits.ends_with('0') {
        digits.pop();
    }
    format!("${whole}.{digits}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(yaml: &str) -> PriceTable {
        // A configuration needs a route to be valid; the prices ignore it.
        let yaml = format!(
            "routes: [{{id: p, path: /p, upstream: u}}]\nupstreams: [{{name: u, endpoints: [\"http://127.0.0.1:1\"]}}]\n{yaml}"
        );
        let cfg = loom_config::load_str(&yaml, "t.yaml").expect("config");
        PriceTable::new(&cfg.ai_gateway.prices())
    }

    #[test]
    fn dated_models_take_their_longest_prefix() {
        let t = table("ai_gateway: {}\n");
        let mini = t
            .lookup("openai", "gpt-4o-mini-2024-07-18")
            .expect("priced");
        assert_eq!(mini.input, 150_000); // $0.15 / 1M
        assert_eq!(
            t.lookup("openai", "gpt-4o-2024-08-06").map(|p| p.input),
            Some(2_500_000)
        );
        assert_eq!(
            t.lookup("x", "claude-3-5-sonnet-20241022")
                .map(|p| p.output),
            Some(15_000_000)
        );
        assert_eq!(
            t.lookup("x", "models/gemini-1.5-flash").map(|p| p.input),
            Some(75_000)
        );
        assert!(t.lookup("x", "gpt-4omega").is_none());
        assert!(t.lookup("x", "llama3:8b").is_none());
    }

    #[test]
    fn configuration_overrides_the_table() {
        let t = table(
            "ai_gateway:\n  providers: [{name: azure, type: openai}, {name: cheap, type: openai}]\n  pricing:\n    - {model: gpt-4o, provider: azure, cost_per_1k_input: 0.002, cost_per_1k_output: 0.008}\n    - {model: llama3, cost_per_1k_input: 0.0001, cost_per_1k_output: 0.0002}\n  routing:\n    providers: [{name: cheap, cost_per_1k_input: 0.001, cost_per_1k_output: 0.002}]\n",
        );
        assert_eq!(
            t.lookup("azure", "gpt-4o").map(|p| p.input),
            Some(2_000_000)
        );
        assert_eq!(
            t.lookup("openai", "gpt-4o").map(|p| p.input),
            Some(2_500_000)
        );
        assert_eq!(
            t.lookup("any", "llama3:8b").map(|p| p.output),
            Some(200_000)
        );
        assert_eq!(
            t.lookup("cheap", "gpt-4o").map(|p| p.output),
            Some(2_000_000)
        );
    }

    #[test]
    fn costs_are_exact_and_cached_tokens_are_cheaper() {
        let p = Price::per_million(2.5, 10.0, 1.25);
        // 1000 prompt tokens of which 400 cached, 500 completion tokens.
        assert_eq!(
            p.cost(1000, 500, 400, 0),
            600 * 2_500_000 + 400 * 1_250_000 + 500 * 10_000_000
        );
        assert_eq!(format_dollars(p.cost(1000, 500, 400, 0)), "$0.007");
        assert_eq!(format_dollars(p.cost(1000, 550, 400, 0)), "$0.0075");
        assert_eq!(format_dollars(1_730_000_000_000), "$1.73");
        assert_eq!(format_dollars(375_000_000), "$0.000375");
        assert_eq!(format_dollars(0), "$0.00");
    }

    #[test]
    fn cache_writes_are_priced_apart() {
        let t = table("ai_gateway: {}\n");
        let sonnet = t
            .lookup("anthropic", "claude-sonnet-4-5-20250929")
            .expect("priced");
        // $3/M input, $0.30/M cache reads, $3.75/M cache writes, $15/M output.
        assert_eq!(sonnet.cache_write, 3_750_000);
        assert_eq!(
            sonnet.cost(3010, 50, 2000, 1000),
            10 * 3_000_000 + 2000 * 300_000 + 1000 * 3_750_000 + 50 * 15_000_000
        );
        // OpenAI charges nothing extra to write its cache.
        let gpt = t.lookup("openai", "gpt-4o").expect("priced");
        assert_eq!(gpt.cache_write, gpt.input);
        let own = table(
            "ai_gateway:\n  pricing: [{model: m1, cost_per_1k_input: 1.0, cost_per_1k_output: 2.0, cost_per_1k_cache_write: 1.5}]\n",
        );
        assert_eq!(
            own.lookup("p", "m1").expect("priced").cache_write,
            1_500_000_000
        );
    }
}
