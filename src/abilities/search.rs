//! `search_messages`: full-text search over a classic archive corp's content.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{AbilityError, BUSY, parse_input};
use crate::domain::AbilityCall;
use crate::search::{Cursor, DEFAULT_LIMIT, MAX_LIMIT, Search, SearchError, SearchHit, SearchRequest, Terms};
use crate::store::blocking;

/// WeCom's "no permission for this API": this corp has no content here to search.
pub const NEEDS_FINANCE_SDK: i64 = 48002;
pub const NEEDS_FINANCE_SDK_MSG: &str = "content search needs archive = \"finance_sdk\" for this corp; a zone corp's \
     messages are searched by the zone itself: call invoke_search_msg";
/// How long a search waits for the index to take in what the store already holds.
const FRESHNESS_WAIT: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    query: String,
    userid: Option<String>,
    roomid: Option<String>,
    msgtype: Option<String>,
    begin_time: Option<i64>,
    end_time: Option<i64>,
    cursor: Option<String>,
    limit: Option<u32>,
}

pub async fn search_messages(search: Arc<Search>, call: &AbilityCall) -> Result<Value, AbilityError> {
    let request = request(call)?;
    // Read-your-writes: what the store held when the call came is searchable.
    if !search.wait_current(FRESHNESS_WAIT).await.map_err(search_failed)? {
        tracing::warn!("the search index is behind the store; answering from what it has");
    }
    let page = blocking(move || search.search(&request)).await.map_err(search_failed)?;
    Ok(json!({
        "errcode": 0,
        "errmsg": "ok",
        "hits": page.hits.iter().map(hit_json).collect::<Vec<_>>(),
        "next_cursor": page.next_cursor.map(Cursor::encode).unwrap_or_default(),
        "has_more": page.has_more,
    }))
}

/// Stored content changes the index has not applied yet.
pub async fn backlog(search: Arc<Search>) -> Result<u64, AbilityError> {
    blocking(move || search.backlog()).await.map_err(search_failed)
}

fn request(call: &AbilityCall) -> Result<SearchRequest, AbilityError> {
    let input: Input = parse_input(&call.request_data)?;
    let terms =
        Terms::parse(&input.query).map_err(|error| AbilityError::invalid(format!("invalid field `query`: {error}")))?;
    let limit = match input.limit {
        None => DEFAULT_LIMIT,
        Some(limit) if (1..=MAX_LIMIT as u32).contains(&limit) => limit as usize,
        Some(_) => return Err(AbilityError::invalid(format!("invalid field `limit`: must be 1 to {MAX_LIMIT}"))),
    };
    if let (Some(begin), Some(end)) = (input.begin_time, input.end_time) {
        if begin > end {
            return Err(AbilityError::invalid("invalid field `begin_time`: later than end_time"));
        }
    }
    let cursor = match input.cursor.as_deref().filter(|cursor| !cursor.is_empty()) {
        None => None,
        Some(cursor) => Some(
            Cursor::decode(cursor)
                .map_err(|_| AbilityError::invalid("invalid field `cursor`: not a cursor this service issued"))?,
        ),
    };
    let non_empty = |value: Option<String>| value.filter(|value| !value.is_empty());
    Ok(SearchRequest {
        corp_id: call.corp_id.to_string(),
        terms,
        userid: non_empty(input.userid),
        roomid: non_empty(input.roomid),
        msgtype: non_empty(input.msgtype),
        begin_time: input.begin_time,
        end_time: input.end_time,
        cursor,
        limit,
    })
}

fn hit_json(hit: &SearchHit) -> Value {
    json!({
        "msgid": hit.msgid,
        "seq": hit.seq,
        "msgtime": hit.msgtime,
        "from": hit.from,
        "tolist": hit.tolist,
        "roomid": hit.roomid,
        "msgtype": hit.msgtype,
        "snippet": hit.snippet,
        "recalled": hit.recalled,
    })
}

fn search_failed(error: SearchError) -> AbilityError {
    tracing::error!(%error, "search failed");
    AbilityError { errcode: BUSY, errmsg: "search unavailable, retry later".into() }
}
