//! The seam between the front door and the behaviour behind it.
//!
//! The front door authenticates and decodes; a [`Dispatcher`] decides what an event or a call
//! means. Accepting an event must make it durable before returning, because the answer to WeCom
//! is sent only afterwards; the work an event starts (a pull, a notification) runs later.

use std::future::Future;
use std::pin::Pin;

use serde_json::Value;

use super::ability::AbilityCall;
use super::event::Event;
use super::ids::DeliveryKey;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why an event or an async call could not be accepted. The front door answers 500 and forgets
/// the delivery, so WeCom's retry is processed.
#[derive(Debug, thiserror::Error)]
#[error("event could not be accepted: {0}")]
pub struct DispatchError(pub String);

pub trait Dispatcher: Send + Sync + 'static {
    /// Makes the event durable and schedules its follow-up work. A durable dispatcher uses
    /// `delivery` to recognise a retry delivered after a restart.
    fn accept_event(&self, event: Event, delivery: DeliveryKey) -> BoxFuture<'_, Result<(), DispatchError>>;

    /// Runs a synchronous ability call and returns its output JSON (or `{errcode, errmsg}`).
    fn call_ability(&self, call: AbilityCall) -> BoxFuture<'_, Value>;

    /// Makes an asynchronous call durable; its result goes to `program_async_job_call_back` later.
    fn accept_async_call(&self, call: AbilityCall, delivery: DeliveryKey) -> BoxFuture<'_, Result<(), DispatchError>>;
}
