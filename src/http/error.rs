//! The one place where errors become HTTP answers.
//!
//! Every refusal is `{"errcode": N, "errmsg": ".."}` with the WXBizMsgCrypt code where one fits.
//! Messages come from the error types, which carry no secret, ciphertext or plaintext.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::crypto::CryptoError;
use crate::inbound::InboundError;

/// WXBizMsgCrypt's ParseXml/ParseJson error, for bodies and plaintexts that cannot be read.
const PARSE_ERROR: i32 = -40002;
/// WeCom's global errcode for an invalid CorpID.
const INVALID_CORP_ID: i32 = 40013;
/// WeCom's global errcode for content over the size limit.
const CONTENT_TOO_LARGE: i32 = 45002;
/// WeCom's "system busy, retry".
const SYSTEM_BUSY: i32 = -1;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Inbound(#[from] InboundError),
    #[error("request body exceeds {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("request body could not be read")]
    BodyUnreadable,
    #[error("no such route")]
    NotFound,
    #[error("the request took too long")]
    Timeout,
    #[error("storage is not available")]
    NotReady,
    /// The request bodies being read already hold `server.body_buffer_bytes`.
    #[error("the server is busy, retry later")]
    Busy,
}

impl ApiError {
    pub fn status_and_code(&self) -> (StatusCode, i32) {
        match self {
            ApiError::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, CONTENT_TOO_LARGE),
            ApiError::BodyUnreadable => (StatusCode::BAD_REQUEST, PARSE_ERROR),
            ApiError::NotFound => (StatusCode::NOT_FOUND, 404),
            ApiError::Timeout => (StatusCode::REQUEST_TIMEOUT, SYSTEM_BUSY),
            ApiError::NotReady | ApiError::Busy => (StatusCode::SERVICE_UNAVAILABLE, SYSTEM_BUSY),
            ApiError::Inbound(error) => inbound_status(error),
        }
    }
}

fn inbound_status(error: &InboundError) -> (StatusCode, i32) {
    match error {
        InboundError::Crypto(crypto) => {
            let status = match crypto {
                CryptoError::ValidateSignature => StatusCode::UNAUTHORIZED,
                CryptoError::ValidateReceiveId => StatusCode::FORBIDDEN,
                CryptoError::IllegalAesKey(_) => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_REQUEST,
            };
            (status, crypto.code())
        }
        InboundError::MissingParameter(_) | InboundError::StaleTimestamp => {
            (StatusCode::UNAUTHORIZED, CryptoError::ValidateSignature.code())
        }
        InboundError::UnknownCorp => (StatusCode::NOT_FOUND, INVALID_CORP_ID),
        InboundError::CorpMismatch => (StatusCode::FORBIDDEN, CryptoError::ValidateReceiveId.code()),
        InboundError::Decode(_) | InboundError::NotAnEchostr => (StatusCode::BAD_REQUEST, PARSE_ERROR),
        InboundError::Dispatch(_) => (StatusCode::INTERNAL_SERVER_ERROR, SYSTEM_BUSY),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, errcode) = self.status_and_code();
        // 5xx details are for the log, not for the caller.
        let errmsg = if status.is_server_error() {
            if status == StatusCode::INTERNAL_SERVER_ERROR {
                tracing::error!(error = %self, "request failed");
            }
            "internal error, retry later".to_owned()
        } else {
            tracing::debug!(error = %self, status = status.as_u16(), "request refused");
            self.to_string()
        };
        (status, Json(json!({"errcode": errcode, "errmsg": errmsg}))).into_response()
    }
}
