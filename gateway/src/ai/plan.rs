//! Planning: which providers to try for a model, in the route's routing
//! strategy's order.

use loom_providers::{Router, Target};

use super::ApiError;
use crate::runtime::state::Runtime;

/// The router of `route`: its own when it overrides the strategy.
pub(crate) fn router<'a>(rt: &'a Runtime, route: &str) -> &'a Router {
    rt.route_routers
        .get(route)
        .unwrap_or_else(|| rt.providers.router())
}

/// The providers to try for `model`, in the routing strategy's order.
pub(crate) fn plan(
    rt: &Runtime,
    router: &Router,
    model: &str,
    prompt_chars: usize,
    max_tokens: Option<u64>,
) -> Result<Vec<Target>, ApiError> {
    if model.is_empty() {
        return Err(ApiError::invalid(
            "`model` must not be empty",
            Some("model"),
        ));
    }
    let candidates = rt.providers.candidates(model)?;
    Ok(router.plan(model, candidates, prompt_chars, max_tokens)?)
}
