//! One `sync_msg` item → one stored record, with its secret key decrypted (or why not).
//! Pure CPU work, run on the RSA pool.

use serde_json::value::RawValue;
use sha1::{Digest, Sha1};

use crate::crypto::{KeyRing, SecretKeyError};
use crate::domain::{DecryptStatus, MsgId};
use crate::store::NewRecord;
use crate::upstream::SyncMsgItem;

/// The record and, when the key could not be decrypted, why.
pub fn to_record(raw: &RawValue, ring: &KeyRing) -> (NewRecord, Option<SecretKeyError>) {
    let Ok(item) = serde_json::from_str::<SyncMsgItem>(raw.get()) else {
        return (malformed(raw.get()), None);
    };
    let version = item.service_encrypt_info.as_ref().map(|info| info.public_key_ver);
    let encrypted = item.service_encrypt_info.as_ref().map(|info| info.encrypted_secret_key.clone());
    let outcome = match (&version, &encrypted) {
        (Some(version), Some(encrypted)) => ring.decrypt_secret_key(*version, encrypted),
        _ => Err(SecretKeyError::Missing),
    };
    let (secret_key, decrypt_status, failure) = match outcome {
        Ok(secret_key) => (Some(secret_key), DecryptStatus::Ok, None),
        Err(error) => (None, error.status(), Some(error)),
    };
    let receivers = serde_json::to_string(
        &item
            .receiver_list
            .iter()
            .map(|party| serde_json::json!({"type": party.kind, "id": party.id}))
            .collect::<Vec<_>>(),
    )
    .unwrap_or_else(|_| "[]".to_owned());
    let chatid = item.chatid.filter(|chatid| !chatid.is_empty());
    let conversation = match &chatid {
        Some(chatid) => chatid.clone(),
        None => {
            let mut ids: Vec<&str> = item.receiver_list.iter().map(|party| party.id.as_str()).collect();
            ids.push(&item.sender.id);
            ids.sort_unstable();
            ids.dedup();
            ids.join("|")
        }
    };
    let record = NewRecord {
        msgid: MsgId::from(item.msgid),
        sender_type: item.sender.kind,
        sender_id: item.sender.id,
        receivers,
        chatid,
        conversation,
        send_time: item.send_time,
        msgtype: item.msgtype,
        public_key_ver: version,
        encrypted_secret_key: encrypted,
        secret_key,
        decrypt_status,
        call_duration: item.extra_info.and_then(|extra| extra.call_duration),
        raw: raw.get().to_owned(),
        archive: None,
    };
    (record, failure)
}

/// An item that is not a message object at all: kept raw under a synthetic msgid, so it is never
/// lost and never stored twice.
pub(super) fn malformed(raw: &str) -> NewRecord {
    let digest: [u8; 20] = Sha1::digest(raw.as_bytes()).into();
    let msgid = digest.iter().fold(String::from("malformed:"), |mut out, byte| {
        out.push_str(&format!("{byte:02x}"));
        out
    });
    NewRecord { decrypt_status: DecryptStatus::Malformed, ..NewRecord::bare(MsgId::from(msgid), raw.to_owned()) }
}
