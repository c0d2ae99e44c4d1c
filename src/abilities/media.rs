//! `get_media`: a classic archive message's media file, in base64 ranges of at most 512 KB.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AbilityError, BUSY, UNKNOWN_MSGID, parse_input};
use crate::domain::{AbilityCall, MediaStatus};
use crate::media::MediaFiles;
use crate::store::{MediaStore, blocking};

/// The largest range one call returns (the SDK's chunk size).
pub const MAX_RANGE: u32 = 524_288;

pub async fn get_media(
    store: Arc<dyn MediaStore>,
    files: &MediaFiles,
    call: &AbilityCall,
) -> Result<Value, AbilityError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Input {
        msgid: String,
        #[serde(default)]
        offset: u64,
        length: Option<u32>,
    }
    let input: Input = parse_input(&call.request_data)?;
    if input.msgid.is_empty() {
        return Err(AbilityError::invalid("invalid field `msgid`: must not be empty"));
    }
    let length = match input.length.unwrap_or(MAX_RANGE) {
        length @ 1..=MAX_RANGE => length,
        other => return Err(AbilityError::invalid(format!("invalid field `length`: {other} is not in 1..=524288"))),
    };
    let corp_id = call.corp_id.to_string();
    let msgid = input.msgid.clone();
    let entry = blocking(move || store.media_of(&corp_id, &msgid)).await?.ok_or_else(|| AbilityError {
        errcode: UNKNOWN_MSGID,
        errmsg: "no media stored or queued for this msgid".into(),
    })?;
    let mut answer = json!({"errcode": 0, "errmsg": "ok", "status": entry.status.as_str(), "offset": input.offset});
    if let Some(filename) = &entry.filename {
        answer["filename"] = json!(filename);
    }
    let (Some(md5), Some(size), MediaStatus::Stored) = (&entry.stored_md5, entry.stored_size, entry.status) else {
        answer["size"] = json!(entry.size);
        answer["md5sum"] = json!(entry.md5sum);
        answer["data"] = json!("");
        // Nothing will come for a failed or too large file; a pending one may be asked again.
        answer["eof"] = json!(entry.status != MediaStatus::Pending);
        return Ok(answer);
    };
    if input.offset > size {
        return Err(AbilityError::invalid(format!("invalid field `offset`: past the end of the file ({size} bytes)")));
    }
    let bytes = files.read(md5, input.offset, length as usize).await.map_err(|error| {
        tracing::error!(%error, "reading a stored media file failed");
        AbilityError { errcode: BUSY, errmsg: "media file unavailable, retry later".into() }
    })?;
    answer["size"] = json!(size);
    answer["md5sum"] = json!(md5);
    answer["eof"] = json!(input.offset + bytes.len() as u64 >= size);
    answer["data"] = json!(STANDARD.encode(&bytes));
    Ok(answer)
}
