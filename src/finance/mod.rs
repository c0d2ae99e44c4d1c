//! The classic chat archive (会话内容存档) through WeCom's official finance SDK.
//!
//! The SDK (`libWeWorkFinanceSdk_C.so`) is closed C++ that aborts its host on bad input, so it
//! only ever runs in a worker process: `ffi.rs` (the C API, loaded at run time) and `worker.rs`
//! (the `finance-worker` command) live there; `supervisor.rs` is the service's side, which
//! spawns, deadlines, kills and replaces workers and pins crashes on records; `protocol.rs` is what
//! the two say over the pipes. `content.rs` validates what DecryptData returns (pure).

pub mod content;
#[allow(unsafe_code)]
mod ffi;
pub mod protocol;
mod supervisor;
#[allow(unsafe_code)]
pub mod worker;

pub use ffi::MediaChunk;
pub use protocol::DecryptItem;
pub use supervisor::{Decrypted, Supervisor, WorkerCorp, WorkerSettings};

#[derive(Debug, thiserror::Error)]
pub enum FinanceError {
    /// The library cannot be loaded or lacks the API: a deployment problem, not a transient one.
    #[error("the finance SDK library cannot be used: {0}")]
    Library(String),
    #[error("the finance worker could not be started: {0}")]
    Spawn(String),
    /// The worker died or hung on this call twice in a row.
    #[error("the finance worker was lost twice during {0}")]
    WorkerLost(&'static str),
    #[error("the finance worker refused the call: {0}")]
    Refused(String),
    /// `Init` returned this code for the corp (10000: bad corp id or Secret).
    #[error("Init returned SDK code {0}")]
    Init(i32),
    #[error("the SDK returned code {0}")]
    Sdk(i32),
}

impl FinanceError {
    /// The SDK's return code, when the SDK gave one.
    pub fn sdk_code(&self) -> Option<i32> {
        match self {
            FinanceError::Init(code) | FinanceError::Sdk(code) => Some(*code),
            _ => None,
        }
    }
}

/// SDK codes worth trying again with the same arguments (network, parse, system: reference §9.4).
pub fn is_transient(code: i32) -> bool {
    matches!(code, 10001..=10003)
}

/// What an operator should fix for an SDK or WeCom code that stops the archive, in plain words
/// (and where in the admin console).
pub fn hint(code: i64) -> Option<&'static str> {
    Some(match code {
        10000 => {
            "WeCom refused the corp id or the 会话内容存档 Secret: check corp_id and archive_secret \
             (管理后台 → 管理工具 → 会话内容存档 → Secret; it is not the app Secret)"
        }
        10001 => "the SDK cannot reach WeCom: check [finance_sdk] proxy and outbound ports 80/443",
        10009 => {
            "this server's outbound IP is not trusted: add it under 管理后台 → 管理工具 → 会话内容存档 → 可信IP地址"
        }
        10010 => "the data is older than 5 days and has expired at WeCom",
        10011 => "the SDK's TLS certificate check failed: check the system CA certificates and any proxy",
        301052 => {
            "会话内容存档 is not enabled or has expired for this corp: open or renew it under \
             管理后台 → 管理工具 → 会话内容存档"
        }
        _ => return None,
    })
}
