//! Reading request bodies within two bounds: one body's size (`server.body_limit_bytes`, 413
//! beyond) and the bytes all bodies being read hold together (`server.body_buffer_bytes`, 503
//! beyond), so many clients sending large bodies slowly cannot exhaust memory.

use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::{Body, Bytes};
use http_body_util::BodyExt;

use super::ApiError;

pub struct BodyBudget {
    limit: usize,
    used: AtomicUsize,
}

/// A body read whole; its bytes count against the budget until it is dropped.
pub struct BufferedBody<'a> {
    bytes: Bytes,
    budget: &'a BodyBudget,
    reserved: usize,
}

impl BodyBudget {
    pub fn new(limit: usize) -> BodyBudget {
        BodyBudget { limit, used: AtomicUsize::new(0) }
    }

    /// Reads `body` whole: 413 past `max_body` bytes (counted as they arrive, whatever the headers
    /// say), 503 when the budget cannot take the next chunk.
    pub async fn read(&self, mut body: Body, max_body: usize) -> Result<BufferedBody<'_>, ApiError> {
        let mut buffered = BufferedBody { bytes: Bytes::new(), budget: self, reserved: 0 };
        let mut collected = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| ApiError::BodyUnreadable)?;
            let Ok(data) = frame.into_data() else { continue };
            if collected.len() + data.len() > max_body {
                return Err(ApiError::BodyTooLarge { limit: max_body });
            }
            buffered.reserve(data.len())?;
            collected.extend_from_slice(&data);
        }
        buffered.bytes = Bytes::from(collected);
        Ok(buffered)
    }

    fn try_take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    /// Bytes currently held by bodies being read or handled.
    #[cfg(test)]
    fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

impl BufferedBody<'_> {
    fn reserve(&mut self, bytes: usize) -> Result<(), ApiError> {
        if !self.budget.try_take(bytes) {
            return Err(ApiError::Busy);
        }
        self.reserved += bytes;
        Ok(())
    }
}

impl Deref for BufferedBody<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for BufferedBody<'_> {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.reserved, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bodies_count_against_the_budget_until_dropped() {
        let budget = BodyBudget::new(100);
        let first = budget.read(Body::from(vec![1u8; 60]), 1000).await.ok().unwrap();
        assert_eq!((first.len(), budget.used()), (60, 60));
        assert!(matches!(budget.read(Body::from(vec![1u8; 60]), 1000).await, Err(ApiError::Busy)));
        assert_eq!(budget.used(), 60, "a refused body gives back what it took");
        assert!(matches!(budget.read(Body::from(vec![1u8; 61]), 50).await, Err(ApiError::BodyTooLarge { limit: 50 })));
        drop(first);
        assert_eq!(budget.used(), 0);
        assert!(budget.read(Body::from(vec![1u8; 100]), 1000).await.is_ok());
    }
}
