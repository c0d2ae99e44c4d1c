//! `wecom-zone bench search`: stores N synthetic Chinese/English messages (text with phone and
//! order numbers, file names, links, mixed and forwarded chat records) through the real page
//! commit, times the index catching up with the store from nothing, then times a fixed query mix
//! through `Search::search` (candidates, verification, snippets: what the ability spends) and the
//! same queries as the SQLite `LIKE` scan a user would otherwise write.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::BenchError;
use crate::domain::{ContentStatus, DecryptStatus, MsgId};
use crate::search::{Search, SearchRequest, Terms};
use crate::simulator::SplitMix;
use crate::store::{ArchiveFields, LikeQuery, NewRecord, PageCommit, RecordStore, SqliteStore};

const CORP_ID: &str = "wwbenchsearch0001";
const USERS: usize = 2_000;
const ROOMS: usize = 300;
const PAGE: usize = 5_000;
/// Runs of each query through the index (the LIKE scan runs [`LIKE_RUNS`] times).
const RUNS: usize = 30;
const LIKE_RUNS: usize = 3;
const LIMIT: usize = 20;
/// Messages are 10 s apart, ending now.
const STEP_MS: i64 = 10_000;

const PHRASES: &[&str] = &[
    "退款",
    "合同",
    "报价单",
    "发票",
    "客户回访",
    "会议纪要",
    "物流",
    "订单",
    "售后服务",
    "产品演示",
    "价格调整",
    "付款方式",
    "交货日期",
    "质量问题",
    "投诉",
    "优惠活动",
    "续约",
    "保修",
    "安装",
    "培训",
    "您好",
    "请确认一下",
    "我们已经",
    "明天",
    "下午三点",
    "没问题",
    "谢谢",
    "稍等",
    "的",
    "了",
    "是不是",
    "可以吗",
    "收到",
    "好的",
];
const WORDS: &[&str] = &[
    "refund",
    "invoice",
    "contract",
    "delivery",
    "quarterly",
    "report",
    "meeting",
    "price",
    "discount",
    "warranty",
    "schedule",
    "shipment",
    "payment",
    "order",
    "support",
    "please",
    "confirm",
    "tomorrow",
    "thanks",
    "the",
];

/// One query of the mix.
struct Shape {
    label: &'static str,
    query: &'static str,
    userid: Option<String>,
    roomid: Option<String>,
    msgtype: Option<&'static str>,
    /// The last this many days, when set.
    days: Option<i64>,
}

impl Shape {
    fn plain(label: &'static str, query: &'static str) -> Shape {
        Shape { label, query, userid: None, roomid: None, msgtype: None, days: None }
    }
}

fn query_mix() -> Vec<Shape> {
    vec![
        Shape::plain("single CJK char", "退"),
        Shape::plain("common CJK char", "的"),
        Shape::plain("CJK 2 chars", "发票"),
        Shape::plain("CJK 4 chars", "客户回访"),
        Shape::plain("English word", "invoice"),
        Shape::plain("English, other case", "QUARTERLY"),
        Shape::plain("digit fragment", "5678"),
        Shape::plain("two terms", "合同 refund"),
        Shape::plain("no match", "zqxj"),
        Shape { userid: Some(user(7)), ..Shape::plain("CJK + userid", "订单") },
        Shape { roomid: Some(room(3)), ..Shape::plain("CJK + roomid", "售后服务") },
        Shape { msgtype: Some("file"), ..Shape::plain("word + msgtype file", "report") },
        Shape { days: Some(3), ..Shape::plain("CJK + last 3 days", "退款") },
        Shape {
            userid: Some(user(11)), days: Some(30), ..Shape::plain("two terms + userid + 30 days", "发票 price")
        },
    ]
}

fn user(n: usize) -> String {
    format!("user{n:04}")
}

fn room(n: usize) -> String {
    format!("wrbenchroom{n:04}")
}

pub fn run(messages: usize, out: &mut dyn Write) -> Result<SearchFigures, BenchError> {
    let setup = |error: &dyn std::fmt::Display| BenchError::Setup(error.to_string());
    let workdir = tempfile::tempdir().map_err(|e| setup(&e))?;
    let store = Arc::new(SqliteStore::open(&workdir.path().join("bench.sqlite")).map_err(|e| setup(&e))?);
    let _ = writeln!(out, "storing {messages} synthetic messages through the page commit (not timed)");
    let newest_ms = crate::domain::unix_now() * 1000;
    let started = Instant::now();
    fill(&store, messages, newest_ms).map_err(|e| setup(&e))?;
    let _ = writeln!(out, "stored in {:.1} s", started.elapsed().as_secs_f64());

    let index_path = workdir.path().join("search");
    let started = Instant::now();
    let search = Search::open(&index_path, Arc::clone(&store) as _, true).map_err(|e| setup(&e))?;
    let indexed = search.catch_up().map_err(|e| setup(&e))?;
    let indexing = started.elapsed();
    let rate = indexed as f64 / indexing.as_secs_f64().max(f64::EPSILON);
    let started = Instant::now();
    search.settle().map_err(|e| setup(&e))?;
    let merging = started.elapsed();
    let size = search.size_on_disk().map_err(|e| setup(&e))?;
    let _ = writeln!(
        out,
        "indexed {indexed} messages in {:.1} s = {rate:.0} msg/s (from the store, committed and searchable); \
         background merges finished {:.1} s later",
        indexing.as_secs_f64(),
        merging.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "index: {:.1} MiB = {:.0} bytes per message ({} documents)",
        size as f64 / (1 << 20) as f64,
        size as f64 / messages as f64,
        search.num_docs()
    );

    let _ = writeln!(
        out,
        "{:<30} {:>6} {:>10} {:>10} {:>12} {:>12}",
        "query", "hits", "p50 ms", "p95 ms", "LIKE p50", "LIKE p95"
    );
    let mut all = Vec::new();
    let mut like_all = Vec::new();
    for shape in query_mix() {
        let request = SearchRequest {
            corp_id: CORP_ID.into(),
            terms: Terms::parse(shape.query).map_err(|e| setup(&e))?,
            userid: shape.userid.clone(),
            roomid: shape.roomid.clone(),
            msgtype: shape.msgtype.map(str::to_owned),
            begin_time: shape.days.map(|days| newest_ms / 1000 - days * 86_400),
            end_time: None,
            cursor: None,
            limit: LIMIT,
        };
        let mut latencies = Vec::with_capacity(RUNS);
        let mut hits = 0;
        for _ in 0..RUNS {
            let started = Instant::now();
            let page = search.search(&request).map_err(|e| BenchError::Verify(e.to_string()))?;
            latencies.push(started.elapsed());
            hits = page.hits.len();
        }
        let like = LikeQuery {
            corp_id: CORP_ID.into(),
            terms: shape.query.split_whitespace().map(str::to_owned).collect(),
            userid: shape.userid.clone(),
            msgtype: shape.msgtype.map(str::to_owned),
            msgtime_range: shape.days.map(|days| (newest_ms - days * 86_400_000, i64::MAX)),
            limit: LIMIT,
            ..LikeQuery::default()
        };
        let like = LikeQuery { roomid: shape.roomid.clone(), ..like };
        let mut like_latencies = Vec::with_capacity(LIKE_RUNS);
        for _ in 0..LIKE_RUNS {
            let started = Instant::now();
            store.like_scan(&like).map_err(|e| BenchError::Verify(e.to_string()))?;
            like_latencies.push(started.elapsed());
        }
        let (p50, p95) = (percentile(&mut latencies, 0.50), percentile(&mut latencies, 0.95));
        let (like_p50, like_p95) = (percentile(&mut like_latencies, 0.50), percentile(&mut like_latencies, 0.95));
        let _ =
            writeln!(out, "{:<30} {hits:>6} {p50:>10.2} {p95:>10.2} {like_p50:>12.1} {like_p95:>12.1}", shape.label);
        all.extend(latencies);
        like_all.extend(like_latencies);
    }
    let figures = SearchFigures {
        messages,
        index_rate: rate,
        bytes_per_message: size as f64 / messages as f64,
        p50_ms: percentile(&mut all, 0.50),
        p95_ms: percentile(&mut all, 0.95),
        like_p50_ms: percentile(&mut like_all, 0.50),
        like_p95_ms: percentile(&mut like_all, 0.95),
    };
    if let Some(kib) = super::peak_rss_kib() {
        let _ = writeln!(out, "peak RSS (whole process): {:.1} MiB", kib as f64 / 1024.0);
    }
    let _ = writeln!(
        out,
        "LIKE scan of the same queries: p50 {:.1} ms p95 {:.1} ms ({:.0}x the index's p95)",
        figures.like_p50_ms,
        figures.like_p95_ms,
        figures.like_p95_ms / figures.p95_ms.max(f64::EPSILON)
    );
    let _ = writeln!(
        out,
        "search: {messages} messages, indexed at {rate:.0} msg/s, query p50 {:.2} ms p95 {:.2} ms",
        figures.p50_ms, figures.p95_ms
    );
    Ok(figures)
}

#[derive(Debug, Clone)]
pub struct SearchFigures {
    pub messages: usize,
    pub index_rate: f64,
    pub bytes_per_message: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub like_p50_ms: f64,
    pub like_p95_ms: f64,
}

fn percentile(latencies: &mut [Duration], quantile: f64) -> f64 {
    latencies.sort_unstable();
    let index = ((latencies.len() as f64 * quantile).ceil() as usize).clamp(1, latencies.len()) - 1;
    latencies[index].as_secs_f64() * 1000.0
}

/// Stores `messages` synthetic messages, the newest at `newest_ms`.
fn fill(store: &SqliteStore, messages: usize, newest_ms: i64) -> Result<(), crate::store::StoreError> {
    let mut random = SplitMix::new(20_240_601);
    let first_ms = newest_ms - (messages as i64 - 1) * STEP_MS;
    for start in (0..messages).step_by(PAGE) {
        let end = (start + PAGE).min(messages);
        let records = (start..end).map(|index| record(&mut random, index, first_ms + index as i64 * STEP_MS)).collect();
        let cursor_out = end.to_string();
        store.commit_page(&PageCommit {
            corp_id: CORP_ID.into(),
            cursor_in: Some(start.to_string()),
            cursor_out,
            records,
        })?;
    }
    Ok(())
}

fn record(random: &mut SplitMix, index: usize, msgtime: i64) -> NewRecord {
    let msgid = format!("bench{index:010}");
    let from = user(random.below(USERS));
    let (roomid, tolist) = if random.chance(0.4) {
        (room(random.below(ROOMS)), (0..3).map(|_| user(random.below(USERS))).collect::<Vec<_>>())
    } else {
        (String::new(), vec![user(random.below(USERS))])
    };
    let (msgtype, payload) = payload(random);
    let mut message = json!({
        "msgid": msgid, "action": "send", "from": from, "tolist": tolist, "roomid": roomid,
        "msgtime": msgtime, "msgtype": msgtype,
    });
    let key = if msgtype == "markdown" { "info" } else { msgtype };
    message[key] = payload;
    let mut record = NewRecord::bare(MsgId::from(msgid.as_str()), String::new());
    record.sender_type = 1;
    record.sender_id = from.clone();
    record.receivers = json!(tolist.iter().map(|id| json!({"type": 1, "id": id})).collect::<Vec<_>>()).to_string();
    record.chatid = (!roomid.is_empty()).then(|| roomid.clone());
    record.conversation = if roomid.is_empty() { format!("{from}|{}", tolist[0]) } else { roomid };
    record.send_time = msgtime / 1000;
    record.decrypt_status = DecryptStatus::Ok;
    record.archive = Some(ArchiveFields {
        seq: index as u64 + 1,
        action: "send".into(),
        msgtype: msgtype.into(),
        msgtime,
        content: Some(message.to_string()),
        content_status: ContentStatus::Ok,
        attempts: 1,
        media: Vec::new(),
    });
    record
}

/// A message type and its object, with text to find.
fn payload(random: &mut SplitMix) -> (&'static str, Value) {
    match random.below(100) {
        0..=79 => ("text", json!({"content": sentence(random)})),
        80..=84 => (
            "file",
            json!({"filename": format!("{}-{}.pdf", WORDS[random.below(WORDS.len())], PHRASES[random.below(8)]), "md5sum": "0", "filesize": 1, "sdkfileid": "x"}),
        ),
        85..=89 => (
            "link",
            json!({"title": sentence(random), "description": WORDS[random.below(WORDS.len())], "link_url": "https://example.com/"}),
        ),
        90..=92 => {
            ("mixed", json!({"item": [{"type": "text", "content": json!({"content": sentence(random)}).to_string()}]}))
        }
        93..=95 => (
            "chatrecord",
            json!({"title": "聊天记录", "item": [
                {"type": "ChatRecordText", "msgtime": 1, "content": json!({"content": sentence(random)}).to_string(), "from_chatroom": false}
            ]}),
        ),
        96..=97 => ("markdown", json!({"content": format!("**{}**", sentence(random))})),
        _ => ("image", json!({"md5sum": "0", "filesize": 1, "sdkfileid": "x"})),
    }
}

/// 3 to 12 pieces: mostly Chinese phrases, some English words, now and then a phone or order
/// number, rarely in full-width letters.
fn sentence(random: &mut SplitMix) -> String {
    let mut text = String::new();
    for _ in 0..3 + random.below(10) {
        match random.below(100) {
            0..=64 => text.push_str(PHRASES[random.below(PHRASES.len())]),
            65..=89 => {
                text.push(' ');
                text.push_str(WORDS[random.below(WORDS.len())]);
                text.push(' ');
            }
            90..=95 => text.push_str(&format!("电话138{:08}", random.below(100_000_000))),
            96..=98 => text.push_str(&format!("订单号SO{:06}", random.below(1_000_000))),
            _ => text.push_str("ＱＵＡＲＴＥＲＬＹ"),
        }
    }
    text
}
