//! Typed states of stored things. Each is stored as its `as_str()` text and read back with
//! `FromStr`; a text this build does not know is an error, never a silent default.

use std::fmt;
use std::str::FromStr;

/// A stored text that names no state of this build (a newer build wrote it, or the file was edited).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{text}`")]
pub struct UnknownState {
    pub kind: &'static str,
    pub text: String,
}

macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident, $kind:literal { $($(#[$variant_doc:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$variant_doc])* $variant,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownState;

            fn from_str(text: &str) -> Result<Self, UnknownState> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownState { kind: $kind, text: text.to_owned() }),
                }
            }
        }
    };
}

text_enum!(
    /// Whether a record's secret key was decrypted, and if not, why.
    DecryptStatus, "decrypt status" {
        Ok => "ok",
        /// No private key of the record's version is configured (yet).
        UnknownKeyVersion => "unknown_key_version",
        /// The record carries no `encrypted_secret_key`.
        Missing => "missing",
        BadBase64 => "bad_base64",
        /// RSA decryption failed: wrong key or bad padding.
        BadCiphertext => "bad_ciphertext",
        NotUtf8 => "not_utf8",
        /// The item was not a message object at all; it is kept raw.
        Malformed => "malformed",
    }
);

text_enum!(
    /// Where a mailbox entry stands.
    MailboxState, "mailbox state" {
        /// Waiting for the pull its event started; not yet announced.
        AwaitingPull => "awaiting_pull",
        /// Waiting for `spec_notify_app` to succeed.
        PendingNotify => "pending_notify",
        /// Announced; fetchable until it expires.
        Notified => "notified",
        /// `spec_notify_app` failed `delivery.max_attempts` times; kept (and fetchable) but no
        /// longer retried.
        DeadLetter => "dead_letter",
    }
);

text_enum!(
    /// Where an asynchronous ability call stands.
    JobState, "job state" {
        /// Waiting to run.
        Pending => "pending",
        /// Result kept, not yet accepted by `program_async_job_call_back`.
        Done => "done",
        Delivered => "delivered",
        /// `program_async_job_call_back` failed `delivery.max_attempts` times; no longer retried.
        DeadLetter => "dead_letter",
    }
);

text_enum!(
    /// Where a media file of a classic archive message stands (`get_media`'s `status`).
    MediaStatus, "media status" {
        /// Queued or being downloaded.
        Pending => "pending",
        /// Downloaded, md5 verified, kept under `[media] path`.
        Stored => "stored",
        /// Given up on (expired at WeCom, a bad sdkfileid, or md5 mismatches and errors past the
        /// retry limit).
        Failed => "failed",
        /// Larger than `media.max_file_bytes`: metadata only.
        TooLarge => "too_large",
    }
);

/// A media file a classic message refers to (reference §7.2): what GetMediaData needs and what
/// WeCom says the file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRef {
    pub sdkfileid: String,
    /// Lower-case hex as WeCom gives it; empty when WeCom gives none (meeting_voice_call).
    pub md5sum: String,
    /// As WeCom gives it (`filesize`, `voice_size`, `imagesize`); 0 when not given.
    pub size: u64,
    pub filename: Option<String>,
}

/// Where a classic archive record's content stands (`content_status` of the contract).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentStatus {
    /// Decrypted and validated.
    Ok,
    /// Not decrypted yet: no private key of the record's version (it is when the key appears).
    Pending,
    /// DecryptData returned this code.
    SdkError(i32),
    /// DecryptData killed the worker twice; parked.
    Crashed,
    /// Decrypted to something that is not the record's message (not JSON, or another msgid).
    Invalid,
}

impl ContentStatus {
    pub fn as_string(self) -> String {
        match self {
            ContentStatus::Ok => "ok".into(),
            ContentStatus::Pending => "pending".into(),
            ContentStatus::SdkError(code) => format!("sdk_error_{code}"),
            ContentStatus::Crashed => "crashed".into(),
            ContentStatus::Invalid => "invalid".into(),
        }
    }

    /// Whether trying again later may succeed: transient SDK codes (network, parse, system; and
    /// 10008, which the FAQ says to retry) and records waiting for their key.
    pub fn is_retryable(self) -> bool {
        matches!(self, ContentStatus::Pending | ContentStatus::SdkError(10001..=10003 | 10008))
    }
}

impl fmt::Display for ContentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_string())
    }
}

impl FromStr for ContentStatus {
    type Err = UnknownState;

    fn from_str(text: &str) -> Result<Self, UnknownState> {
        let unknown = || UnknownState { kind: "content status", text: text.to_owned() };
        Ok(match text {
            "ok" => ContentStatus::Ok,
            "pending" => ContentStatus::Pending,
            "crashed" => ContentStatus::Crashed,
            "invalid" => ContentStatus::Invalid,
            _ => ContentStatus::SdkError(
                text.strip_prefix("sdk_error_").and_then(|code| code.parse().ok()).ok_or_else(unknown)?,
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_text_and_refuse_strangers() {
        for status in DecryptStatus::ALL {
            assert_eq!(status.as_str().parse::<DecryptStatus>(), Ok(*status));
        }
        for state in MailboxState::ALL {
            assert_eq!(state.as_str().parse::<MailboxState>(), Ok(*state));
        }
        for state in JobState::ALL {
            assert_eq!(state.to_string().parse::<JobState>(), Ok(*state));
        }
        assert!("sent".parse::<JobState>().is_err());
        for status in [
            ContentStatus::Ok,
            ContentStatus::Pending,
            ContentStatus::SdkError(10006),
            ContentStatus::Crashed,
            ContentStatus::Invalid,
        ] {
            assert_eq!(status.as_string().parse::<ContentStatus>(), Ok(status));
        }
        assert!("sdk_error_x".parse::<ContentStatus>().is_err());
    }
}
