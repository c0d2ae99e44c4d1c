//! The access_token cache: one per corp, refreshed by a single caller while the others wait.
//!
//! A caller whose call was rejected for its token invalidates exactly that token; if another
//! caller already replaced it, nothing happens, so a burst of rejections costs one refresh.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use super::UpstreamError;
use crate::config::Secret;
use crate::domain::CorpId;

/// Bounds on a token's `expires_in`: never refreshed more often than every 30 s (half of 60 s),
/// never kept longer than a day.
const MIN_LIFETIME_S: u64 = 60;
const MAX_LIFETIME_S: u64 = 86_400;

struct Cached {
    token: String,
    refresh_at: Instant,
}

struct CorpTokens {
    secret: Secret,
    // A tokio Mutex: it is held across the gettoken call, which is what makes the refresh single-flight.
    cached: Mutex<Option<Cached>>,
}

pub struct TokenCache {
    corps: HashMap<CorpId, CorpTokens>,
    refresh_margin: Duration,
}

impl TokenCache {
    pub fn new(secrets: HashMap<CorpId, Secret>, refresh_margin: Duration) -> TokenCache {
        let corps = secrets
            .into_iter()
            .map(|(corp_id, secret)| (corp_id, CorpTokens { secret, cached: Mutex::new(None) }))
            .collect();
        TokenCache { corps, refresh_margin }
    }

    /// The current token, or a new one from `fetch(secret) -> (token, expires_in_s)`.
    pub async fn get<F, Fut>(&self, corp_id: &str, fetch: F) -> Result<String, UpstreamError>
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<(String, u64), UpstreamError>>,
    {
        let corp = self.corps.get(corp_id).ok_or_else(|| UpstreamError::UnknownCorp(corp_id.to_owned()))?;
        let mut cached = corp.cached.lock().await;
        if let Some(current) = cached.as_ref().filter(|current| Instant::now() < current.refresh_at) {
            return Ok(current.token.clone());
        }
        let (token, expires_in) = fetch(corp.secret.expose().to_owned()).await?;
        // WeCom issues tokens for 7200 s; an answer far outside that is not trusted as it is.
        let lifetime = Duration::from_secs(expires_in.clamp(MIN_LIFETIME_S, MAX_LIFETIME_S));
        // Refresh `margin` before expiry, but never later than half-way through a short lifetime.
        let refresh_after = lifetime.saturating_sub(self.refresh_margin).max(lifetime / 2);
        *cached = Some(Cached { token: token.clone(), refresh_at: Instant::now() + refresh_after });
        Ok(token)
    }

    /// Forgets `rejected` if it is still the cached token.
    pub async fn invalidate(&self, corp_id: &str, rejected: &str) {
        if let Some(corp) = self.corps.get(corp_id) {
            let mut cached = corp.cached.lock().await;
            if cached.as_ref().is_some_and(|current| current.token == rejected) {
                *cached = None;
            }
        }
    }
}
