//! The front door: everything a callback meets before behaviour is involved.
//!
//! Order of checks for a POST: parse the envelope, pick the corp, verify the signature, check the
//! clock skew, decrypt, check the ReceiveId, decode the plaintext, drop duplicates, dispatch.
//! Nothing is stored and nothing is dispatched until every check has passed. This module knows
//! no HTTP framework: it takes the raw query and body and returns a [`Reply`] or an
//! [`InboundError`], which `http::error` maps to statuses.

mod decode;
mod dedup;
mod query;

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, CorpConfig};
use crate::crypto::{CryptoError, Envelope, EnvelopeFormat, SealedReply, WxBizMsgCrypt};
use crate::domain::{AbilityCall, Clock, CorpId, DeliveryKey, DispatchError, Dispatcher, Event};
use crate::metrics::Metrics;

pub use decode::{DecodeError, Inbound, decode};
pub use dedup::{Acknowledgement, DeliveryLog};
pub use query::CallbackQuery;

/// How many deliveries the duplicate filter remembers at most.
const DELIVERY_LOG_CAPACITY: usize = 100_000;
/// How many bytes of synchronous calls' sealed answers it keeps for their duplicates.
const ANSWER_CACHE_BYTES: usize = 32 << 20;

/// Why a callback was refused. Messages carry no secret, ciphertext or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    #[error("{0}")]
    Crypto(#[from] CryptoError),
    #[error("missing query parameter {0}")]
    MissingParameter(&'static str),
    #[error("timestamp is outside the allowed clock skew")]
    StaleTimestamp,
    /// The path or `ToUserName` names no configured corp. Which name is not said: a refusal
    /// echoes nothing the caller sent.
    #[error("unknown corp")]
    UnknownCorp,
    #[error("the request names a corp other than the one it was addressed to")]
    CorpMismatch,
    /// URL verification decrypted something that is not an echostr: a captured event, call or
    /// reply sent as one. Its plaintext is not answered.
    #[error("echostr is not a verification string")]
    NotAnEchostr,
    #[error("{0}")]
    Decode(#[from] DecodeError),
    #[error("{0}")]
    Dispatch(#[from] DispatchError),
}

/// What to answer an accepted callback with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A plain-text body: the decrypted echostr, or `success` for classic events.
    Text(Vec<u8>),
    /// An encrypted, signed envelope in the request's format.
    Sealed { format: EnvelopeFormat, reply: SealedReply },
}

struct CorpEndpoint {
    config: CorpConfig,
    crypto: WxBizMsgCrypt,
}

pub struct FrontDoor {
    corps: Vec<Arc<CorpEndpoint>>,
    max_clock_skew: Option<Duration>,
    deliveries: Arc<DeliveryLog>,
    dispatcher: Arc<dyn Dispatcher>,
    metrics: Arc<Metrics>,
    clock: Clock,
}

impl FrontDoor {
    pub fn new(
        config: &Config,
        dispatcher: Arc<dyn Dispatcher>,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Result<Self, CryptoError> {
        let corps = config
            .corps
            .iter()
            .map(|corp| Ok(Arc::new(CorpEndpoint { crypto: corp.callback_crypto()?, config: corp.clone() })))
            .collect::<Result<Vec<_>, CryptoError>>()?;
        Ok(FrontDoor {
            corps,
            max_clock_skew: config.server.max_clock_skew,
            deliveries: Arc::new(DeliveryLog::new(
                config.server.duplicate_window,
                DELIVERY_LOG_CAPACITY,
                ANSWER_CACHE_BYTES,
            )),
            dispatcher,
            metrics,
            clock,
        })
    }

    /// GET: URL verification. Answers the decrypted `echostr`.
    pub fn verify_url(&self, corp_hint: Option<&str>, raw_query: Option<&str>) -> Result<Reply, InboundError> {
        let query = CallbackQuery::parse(raw_query);
        let echostr = query.echostr.as_deref().ok_or(InboundError::MissingParameter("echostr"))?;
        let signed = query.signed()?;
        let corp = self.resolve_corp(corp_hint, None, &signed, echostr)?;
        self.authenticate(corp, &signed, echostr)?;
        let msg = self.decrypt(corp, echostr)?;
        if !looks_like_echostr(&msg) {
            self.metrics.decrypt_failure("not_an_echostr");
            return Err(InboundError::NotAnEchostr);
        }
        Ok(Reply::Text(msg))
    }

    /// POST: an event or a call in an XML or JSON envelope.
    pub async fn receive(
        &self,
        corp_hint: Option<&str>,
        raw_query: Option<&str>,
        body: &[u8],
    ) -> Result<Reply, InboundError> {
        let envelope = Envelope::parse(body).inspect_err(|error| self.metrics.decrypt_failure(error.reason()))?;
        let query = CallbackQuery::parse(raw_query);
        let signed = query.signed()?;
        let corp = self.resolve_corp(corp_hint, envelope.to_user_name.as_deref(), &signed, &envelope.encrypt)?;
        self.authenticate(corp, &signed, &envelope.encrypt)?;
        // An authenticated retry of a delivery accepted before is answered as it was, unopened:
        // same corp, same ciphertext, so decryption and decoding would repeat what passed then.
        let delivery = DeliveryLog::key(&corp.config.corp_id, &envelope.encrypt);
        if let Some(acknowledgement) = self.deliveries.acknowledgement(&delivery) {
            self.count_duplicate();
            return Ok(self.acknowledge(corp, acknowledgement, envelope.format));
        }
        let plaintext = self.decrypt(corp, &envelope.encrypt)?;
        let inbound = decode(&plaintext)?;
        self.handle(corp, inbound, delivery, envelope.format).await
    }

    async fn handle(
        &self,
        corp: &Arc<CorpEndpoint>,
        inbound: Inbound,
        delivery: DeliveryKey,
        format: EnvelopeFormat,
    ) -> Result<Reply, InboundError> {
        let label = inbound.label();
        let event = match inbound {
            Inbound::Ability(call) => return self.handle_call(corp, call, delivery, format, label).await,
            Inbound::Classic(event) => Event::Classic { corp_id: corp.config.corp_id.clone(), event },
            Inbound::ZoneEvent(mut event) => {
                claim_corp(&corp.config, &mut event.corp_id)?;
                Event::Zone(event)
            }
        };
        let acknowledgement = match &event {
            Event::Classic { .. } => Acknowledgement::Success,
            Event::Zone(_) => Acknowledgement::SealedOk,
        };
        if let Some(accepted) = self.first_delivery(delivery, label, acknowledgement.clone()) {
            let dispatcher = Arc::clone(&self.dispatcher);
            detached(async move { accepted.finish(dispatcher.accept_event(event, delivery).await) }).await??;
        }
        Ok(self.acknowledge(corp, acknowledgement, format))
    }

    async fn handle_call(
        &self,
        corp: &Arc<CorpEndpoint>,
        mut call: AbilityCall,
        delivery: DeliveryKey,
        format: EnvelopeFormat,
        label: &'static str,
    ) -> Result<Reply, InboundError> {
        claim_corp(&corp.config, &mut call.corp_id)?;
        if !call.is_async {
            return self.handle_sync_call(corp, call, delivery, format, label).await;
        }
        if let Some(accepted) = self.first_delivery(delivery, label, Acknowledgement::SealedOk) {
            let dispatcher = Arc::clone(&self.dispatcher);
            detached(async move { accepted.finish(dispatcher.accept_async_call(call, delivery).await) }).await??;
        }
        Ok(self.acknowledge(corp, Acknowledgement::SealedOk, format))
    }

    /// A synchronous call runs once per delivery: its sealed answer is kept, and a duplicate
    /// (a retry, or a captured request replayed) gets that answer without running again. The
    /// call runs detached from the request, so a caller that gives up cannot stop a pass-through
    /// call half-way; its answer is still kept for the retry.
    async fn handle_sync_call(
        &self,
        corp: &Arc<CorpEndpoint>,
        call: AbilityCall,
        delivery: DeliveryKey,
        format: EnvelopeFormat,
        label: &'static str,
    ) -> Result<Reply, InboundError> {
        let Some(accepted) = self.first_delivery(delivery, label, Acknowledgement::Running) else {
            let acknowledgement = self.deliveries.acknowledgement(&delivery).unwrap_or(Acknowledgement::Running);
            return Ok(self.acknowledge(corp, acknowledgement, format));
        };
        let (dispatcher, corp, clock) = (Arc::clone(&self.dispatcher), Arc::clone(corp), self.clock.clone());
        let reply = detached(async move {
            let output = dispatcher.call_ability(call).await;
            let reply = corp.seal(&output, &clock);
            accepted.answer(reply.clone());
            reply
        })
        .await?;
        Ok(Reply::Sealed { format, reply })
    }

    /// Marks `delivery` seen. `None` for a duplicate, acknowledged without processing; otherwise a
    /// guard that forgets the mark unless the delivery's work finishes, so WeCom's retry of a
    /// delivery that failed (or whose request was cancelled) is processed.
    fn first_delivery(
        &self,
        delivery: DeliveryKey,
        label: &'static str,
        acknowledgement: Acknowledgement,
    ) -> Option<Accepted> {
        if !self.deliveries.first_delivery(delivery, acknowledgement) {
            self.count_duplicate();
            return None;
        }
        self.metrics.inbound(label);
        Some(Accepted { deliveries: Arc::clone(&self.deliveries), delivery, finished: false })
    }

    /// The corp named by the path, else by `ToUserName` (a corp id or an extra ReceiveId), else
    /// the only corp, else the one whose Token verifies the signature.
    fn resolve_corp(
        &self,
        corp_hint: Option<&str>,
        to_user_name: Option<&str>,
        signed: &query::SignedQuery<'_>,
        encrypted: &str,
    ) -> Result<&Arc<CorpEndpoint>, InboundError> {
        if let Some(corp_id) = corp_hint {
            return self.corps.iter().find(|corp| corp.config.corp_id == corp_id).ok_or(InboundError::UnknownCorp);
        }
        if let Some(name) = to_user_name {
            return self
                .corps
                .iter()
                .find(|corp| corp.config.corp_id == name)
                .or_else(|| self.corps.iter().find(|corp| corp.config.accepts_receive_id(name.as_bytes())))
                .ok_or(InboundError::UnknownCorp);
        }
        if let [only] = self.corps.as_slice() {
            return Ok(only);
        }
        self.corps
            .iter()
            .find(|corp| {
                corp.crypto.verify_signature(signed.msg_signature, signed.timestamp, signed.nonce, encrypted).is_ok()
            })
            .ok_or_else(|| {
                self.metrics.decrypt_failure(CryptoError::ValidateSignature.reason());
                InboundError::Crypto(CryptoError::ValidateSignature)
            })
    }

    fn count_duplicate(&self) {
        self.metrics.duplicate_delivery();
        tracing::debug!("duplicate delivery acknowledged, not processed again");
    }

    fn acknowledge(&self, corp: &CorpEndpoint, acknowledgement: Acknowledgement, format: EnvelopeFormat) -> Reply {
        let reply = match acknowledgement {
            Acknowledgement::Success => return Reply::Text(b"success".to_vec()),
            Acknowledgement::SealedOk => corp.seal(&ok_output(), &self.clock),
            Acknowledgement::Running => corp.seal(&busy_output(), &self.clock),
            Acknowledgement::Answered(reply) => SealedReply::clone(&reply),
        };
        Reply::Sealed { format, reply }
    }

    /// The signature (so nothing unauthenticated reaches the CBC decryptor), then the clock.
    fn authenticate(
        &self,
        corp: &CorpEndpoint,
        signed: &query::SignedQuery<'_>,
        encrypted: &str,
    ) -> Result<(), InboundError> {
        corp.crypto
            .verify_signature(signed.msg_signature, signed.timestamp, signed.nonce, encrypted)
            .inspect_err(|error| self.metrics.decrypt_failure(error.reason()))?;
        self.check_clock_skew(signed.timestamp)
    }

    /// Decryption and the ReceiveId; call only after [`FrontDoor::authenticate`].
    fn decrypt(&self, corp: &CorpEndpoint, encrypted: &str) -> Result<Vec<u8>, InboundError> {
        corp.crypto
            .decrypt_for(encrypted, |receive_id| corp.config.accepts_receive_id(receive_id))
            .inspect_err(|error| self.metrics.decrypt_failure(error.reason()))
            .map_err(InboundError::from)
    }

    fn check_clock_skew(&self, timestamp: &str) -> Result<(), InboundError> {
        let Some(max_skew) = self.max_clock_skew else { return Ok(()) };
        let sent: i64 = timestamp.trim().parse().map_err(|_| InboundError::StaleTimestamp)?;
        let skew = self.clock.now().abs_diff(sent);
        if skew > max_skew.as_secs() {
            self.metrics.decrypt_failure("stale_timestamp");
            return Err(InboundError::StaleTimestamp);
        }
        Ok(())
    }
}

impl CorpEndpoint {
    fn seal(&self, output: &serde_json::Value, clock: &Clock) -> SealedReply {
        let timestamp = clock.now().to_string();
        let nonce = rand::random::<u32>().to_string();
        self.crypto.seal(
            rand::random(),
            output.to_string().as_bytes(),
            self.config.corp_id.as_bytes(),
            &timestamp,
            &nonce,
        )
    }
}

/// Runs an accepted delivery's work on its own task and waits for it. If the request is dropped
/// (a timeout, a disconnect) the work still finishes; its [`Accepted`] guard then records the
/// outcome, so nothing is left marked seen but never done.
async fn detached<T: Send + 'static>(work: impl Future<Output = T> + Send + 'static) -> Result<T, InboundError> {
    tokio::spawn(work).await.map_err(|_| InboundError::Dispatch(DispatchError("the delivery's work failed".into())))
}

/// The mark of a delivery being processed; dropped unfinished (an error, or its task ended by a
/// panic or the runtime shutting down), it forgets the delivery so that WeCom's retry is processed.
struct Accepted {
    deliveries: Arc<DeliveryLog>,
    delivery: DeliveryKey,
    finished: bool,
}

impl Accepted {
    fn finish(mut self, outcome: Result<(), DispatchError>) -> Result<(), InboundError> {
        outcome?;
        self.finished = true;
        Ok(())
    }

    /// A synchronous call finished: its duplicates get `reply`.
    fn answer(mut self, reply: SealedReply) {
        self.deliveries.answer(&self.delivery, reply);
        self.finished = true;
    }
}

impl Drop for Accepted {
    fn drop(&mut self) {
        if !self.finished {
            self.deliveries.forget(&self.delivery);
        }
    }
}

/// The longest decrypted echostr answered. WeCom's are short random strings (19 digits in the
/// official sample).
const MAX_ECHOSTR_LEN: usize = 128;

/// Whether a decrypted GET `echostr` may be answered. Anything the service ever encrypts or
/// receives encrypted (events, calls, replies) is XML or JSON, so refusing those and anything
/// long or binary keeps URL verification from decrypting a captured POST body or reply.
fn looks_like_echostr(plaintext: &[u8]) -> bool {
    !plaintext.is_empty()
        && plaintext.len() <= MAX_ECHOSTR_LEN
        && plaintext.iter().all(|byte| (0x20..0x7f).contains(byte))
        && !matches!(plaintext[0], b'{' | b'<')
}

fn ok_output() -> serde_json::Value {
    serde_json::json!({"errcode": 0, "errmsg": "ok"})
}

/// For a duplicate of a call that is still running: WeCom's "system busy, retry".
fn busy_output() -> serde_json::Value {
    serde_json::json!({"errcode": -1, "errmsg": "the same request is still being processed; retry"})
}

/// A zone request names its corp; it must be the corp the envelope was addressed to (or left
/// empty). Afterwards it names that corp's id, whatever alias the sender used.
fn claim_corp(corp: &CorpConfig, named: &mut CorpId) -> Result<(), InboundError> {
    if named.is_empty() || *named == corp.corp_id || corp.accepts_receive_id(named.as_bytes()) {
        named.clone_from(&corp.corp_id);
        Ok(())
    } else {
        Err(InboundError::CorpMismatch)
    }
}
