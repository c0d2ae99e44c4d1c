//! WeCom's side of the classic archive, as the stand-in finance SDK (`stub_sdk`) reaches it: a
//! corpus of `chatdata` records by seq, each message JSON of reference §7 encrypted with the
//! stub's DecryptData scheme under a fresh 88-character key, that key RSA-encrypted (PKCS#1 v1.5)
//! with the public key of the version in force; media blobs behind `sdkfileid`s; and scripted
//! misbehaviour. It listens on a loopback port; the SDK's `proxy` argument points there.
//!
//! Protocol (one request per connection): `CHAT <corpid> <secret> <seq> <limit>` or
//! `MEDIA <corpid> <secret> <sdkfileid> <indexbuf|->`, answered by
//! `<rc> <fault> <is_finish> <outindex_len> <data_len>\n` and the bytes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;

use md5::{Digest, Md5};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::SplitMix;
use super::stub_sdk;
use crate::crypto::{KeyError, PublicKeyEncryptor};

/// The SDK's media chunk size.
pub const MEDIA_CHUNK: usize = 512 * 1024;

/// Every classic msgtype of reference §7, in the order the corpus cycles through them.
pub const MSGTYPES: &[&str] = &[
    "text",
    "image",
    "revoke",
    "agree",
    "disagree",
    "voice",
    "video",
    "card",
    "location",
    "emotion",
    "file",
    "link",
    "weapp",
    "chatrecord",
    "todo",
    "vote",
    "collect",
    "redpacket",
    "external_redpacket",
    "meeting",
    "meeting_notification",
    "docmsg",
    "markdown",
    "news",
    "calendar",
    "mixed",
    "meeting_voice_call",
    "voip_doc_share",
    "sphfeed",
    "voiptext",
    "qydiskfile",
    "solitaire",
    "note",
    "switch",
];

/// How a GetChatData call misbehaves (scripted, one per call, in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatFault {
    /// The SDK returns this code.
    Rc(i32),
    /// The answer's JSON carries this WeCom errcode.
    ErrCode(i64),
    Segv,
    Abort,
    Hang,
    /// Answers correctly after this many milliseconds.
    SlowMs(u64),
}

/// One record as WeCom keeps it, and what it should decrypt to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArchiveRecord {
    pub seq: u64,
    pub msgid: String,
    pub publickey_ver: u32,
    pub encrypt_key: String,
    pub encrypt_random_key: String,
    pub encrypt_chat_msg: String,
    /// The message JSON (what DecryptData should give).
    pub plaintext: String,
}

/// A `sdkfileid` and the file's bytes.
type MediaBlob = (String, Vec<u8>);

struct State {
    corp_id: String,
    secret: String,
    records: RecordFile,
    /// Records changed by a test (crash markers, other plaintexts), by seq.
    overrides: HashMap<u64, ArchiveRecord>,
    chat_faults: VecDeque<ChatFault>,
    media: Vec<MediaBlob>,
    chat_calls: usize,
    /// Media requests served: `(sdkfileid, offset)`.
    media_requests: Vec<(String, usize)>,
    /// Downloads of these files still to be served damaged (one byte flipped).
    corrupt: Vec<(String, usize)>,
    /// Delay before each media chunk.
    media_delay_ms: u64,
}

pub struct ArchiveSimulator {
    state: Arc<Mutex<State>>,
    port: u16,
    task: JoinHandle<()>,
}

impl Drop for ArchiveSimulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ArchiveSimulator {
    /// Generates `messages` records (seq 1..=messages) and starts listening on loopback. `keys`
    /// are `(version, public key PEM)`, rotated over the corpus; media blobs are up to
    /// `media_max_bytes` long (the first exactly that long; every fifth a copy of the one before).
    pub async fn start(
        corp_id: &str,
        secret: &str,
        messages: usize,
        keys: &[(u32, String)],
        media_max_bytes: usize,
        seed: u64,
    ) -> Result<ArchiveSimulator, KeyError> {
        let (records, media) = generate(messages, keys, media_max_bytes, seed)?;
        let state = Arc::new(Mutex::new(State {
            corp_id: corp_id.to_owned(),
            secret: secret.to_owned(),
            records,
            overrides: HashMap::new(),
            chat_faults: VecDeque::new(),
            media,
            chat_calls: 0,
            media_requests: Vec::new(),
            corrupt: Vec::new(),
            media_delay_ms: 0,
        }));
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|_| KeyError::Invalid)?;
        let port = listener.local_addr().map_err(|_| KeyError::Invalid)?.port();
        let served = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream, Arc::clone(&served)));
            }
        });
        Ok(ArchiveSimulator { state, port, task })
    }

    /// The `[finance_sdk] proxy` that points the stand-in SDK here.
    pub fn proxy(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The record at `seq` (read back from the corpus file).
    pub fn record(&self, seq: u64) -> Option<ArchiveRecord> {
        lock(&self.state).record(seq)
    }

    /// Every record, in seq order (read back from the corpus file).
    pub fn records(&self) -> Vec<ArchiveRecord> {
        let state = lock(&self.state);
        (1..=state.records.len() as u64).filter_map(|seq| state.record(seq)).collect()
    }

    /// The next GetChatData calls misbehave like this, one fault per call.
    pub fn script_chat(&self, faults: Vec<ChatFault>) {
        lock(&self.state).chat_faults.extend(faults);
    }

    /// Drops the scripted GetChatData faults not yet used.
    pub fn clear_chat_faults(&self) {
        lock(&self.state).chat_faults.clear();
    }

    pub fn chat_calls(&self) -> usize {
        lock(&self.state).chat_calls
    }

    /// Replaces a record's `encrypt_chat_msg` (a crash marker such as `!SEGV`, a damaged one).
    pub fn set_encrypt_chat_msg(&self, seq: u64, encrypt_chat_msg: String) {
        let mut state = lock(&self.state);
        if let Some(mut record) = state.record(seq) {
            record.encrypt_chat_msg = encrypt_chat_msg;
            state.overrides.insert(seq, record);
        }
    }

    /// Re-encrypts a record's message with another plaintext (a wrong msgid, say).
    pub fn set_plaintext(&self, seq: u64, plaintext: &str) {
        let mut state = lock(&self.state);
        if let Some(mut record) = state.record(seq) {
            record.encrypt_chat_msg = stub_sdk::seal(&record.encrypt_key, plaintext.as_bytes());
            state.overrides.insert(seq, record);
        }
    }

    /// The next `times` downloads of `sdkfileid` arrive with one byte flipped (md5 mismatch).
    pub fn corrupt_media(&self, sdkfileid: &str, times: usize) {
        lock(&self.state).corrupt.push((sdkfileid.to_owned(), times));
    }

    /// Every media chunk is answered this much later.
    pub fn set_media_delay(&self, delay: std::time::Duration) {
        lock(&self.state).media_delay_ms = delay.as_millis() as u64;
    }

    /// The media chunks asked for so far: `(sdkfileid, offset)`.
    pub fn media_requests(&self) -> Vec<(String, usize)> {
        lock(&self.state).media_requests.clone()
    }

    /// The sdkfileids with their sizes.
    pub fn media_files(&self) -> Vec<(String, usize)> {
        lock(&self.state).media.iter().map(|(id, bytes)| (id.clone(), bytes.len())).collect()
    }

    /// The bytes behind a `sdkfileid`.
    pub fn media(&self, sdkfileid: &str) -> Option<Vec<u8>> {
        lock(&self.state).media.iter().find(|(id, _)| id == sdkfileid).map(|(_, bytes)| bytes.clone())
    }
}

impl State {
    fn record(&self, seq: u64) -> Option<ArchiveRecord> {
        match self.overrides.get(&seq) {
            Some(record) => Some(record.clone()),
            None => self.records.get(seq.checked_sub(1)? as usize),
        }
    }
}

/// The corpus on disk, one JSON line per record, so that a corpus of hundreds of thousands of
/// records costs the process almost no memory (the benchmark measures the service's).
struct RecordFile {
    file: File,
    /// Where each record's line starts, and one past the last.
    offsets: Vec<u64>,
}

impl RecordFile {
    fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    fn get(&self, index: usize) -> Option<ArchiveRecord> {
        let (start, end) = (*self.offsets.get(index)?, *self.offsets.get(index + 1)?);
        let mut line = vec![0u8; (end - start) as usize];
        self.file.read_exact_at(&mut line, start).ok()?;
        serde_json::from_slice(&line).ok()
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn answer(stream: TcpStream, state: Arc<Mutex<State>>) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).await.is_err() {
        return;
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let (rc, fault, finish, outindex, data) = match words.as_slice() {
        ["CHAT", corp, secret, seq, limit] => chat(&state, corp, secret, seq, limit),
        ["MEDIA", corp, secret, sdkfileid, indexbuf] => media(&state, corp, secret, sdkfileid, indexbuf),
        _ => (10000, "-".to_owned(), 0, String::new(), Vec::new()),
    };
    let mut stream = reader.into_inner();
    let header = format!("{rc} {fault} {finish} {} {}\n", outindex.len(), data.len());
    let _ = stream.write_all(header.as_bytes()).await;
    let _ = stream.write_all(outindex.as_bytes()).await;
    let _ = stream.write_all(&data).await;
}

type Answer = (i32, String, i32, String, Vec<u8>);

fn chat(state: &Mutex<State>, corp: &str, secret: &str, seq: &str, limit: &str) -> Answer {
    let mut state = lock(state);
    state.chat_calls += 1;
    if corp != state.corp_id || secret != state.secret {
        return (10000, "-".into(), 0, String::new(), Vec::new());
    }
    let (Ok(seq), Ok(limit)) = (seq.parse::<u64>(), limit.parse::<usize>()) else {
        return (10000, "-".into(), 0, String::new(), Vec::new());
    };
    let mut fault = "-".to_owned();
    let mut errcode = 0;
    match state.chat_faults.pop_front() {
        None => {}
        Some(ChatFault::Rc(rc)) => return (rc, "-".into(), 0, String::new(), Vec::new()),
        Some(ChatFault::ErrCode(code)) => errcode = code,
        Some(ChatFault::Segv) => fault = "segv".into(),
        Some(ChatFault::Abort) => fault = "abrt".into(),
        Some(ChatFault::Hang) => fault = "hang".into(),
        Some(ChatFault::SlowMs(ms)) => fault = format!("slow{ms}"),
    }
    let chatdata: Vec<Value> = if errcode != 0 {
        Vec::new()
    } else {
        let last = (state.records.len() as u64).min(seq.saturating_add(limit as u64));
        (seq + 1..=last)
            .filter_map(|seq| state.record(seq))
            .map(|record| {
                json!({
                    "seq": record.seq,
                    "msgid": record.msgid,
                    "publickey_ver": record.publickey_ver,
                    "encrypt_random_key": record.encrypt_random_key,
                    "encrypt_chat_msg": record.encrypt_chat_msg,
                })
            })
            .collect()
    };
    let errmsg = if errcode == 0 { "ok" } else { "refused" };
    let body = json!({"errcode": errcode, "errmsg": errmsg, "chatdata": chatdata}).to_string();
    (0, fault, 0, String::new(), body.into_bytes())
}

fn media(state: &Mutex<State>, corp: &str, secret: &str, sdkfileid: &str, indexbuf: &str) -> Answer {
    let mut state = lock(state);
    if corp != state.corp_id || secret != state.secret {
        return (10000, "-".into(), 0, String::new(), Vec::new());
    }
    let Some((_, bytes)) = state.media.iter().find(|(id, _)| id == sdkfileid) else {
        return (10005, "-".into(), 0, String::new(), Vec::new());
    };
    let offset = match indexbuf {
        "-" => 0,
        other => match other.strip_prefix("off:").and_then(|offset| offset.parse::<usize>().ok()) {
            Some(offset) if offset <= bytes.len() => offset,
            _ => return (10000, "-".into(), 0, String::new(), Vec::new()),
        },
    };
    let end = (offset + MEDIA_CHUNK).min(bytes.len());
    let finished = end == bytes.len();
    let mut chunk = bytes[offset..end].to_vec();
    let delay = state.media_delay_ms;
    state.media_requests.push((sdkfileid.to_owned(), offset));
    if let Some((_, remaining)) = state.corrupt.iter_mut().find(|(id, remaining)| id == sdkfileid && *remaining > 0) {
        if let Some(first) = chunk.first_mut() {
            *first ^= 0xff;
        }
        if finished {
            *remaining -= 1;
        }
    }
    let fault = if delay > 0 { format!("slow{delay}") } else { "-".into() };
    (0, fault, i32::from(finished), format!("off:{end}"), chunk)
}

/// Members, external contacts (`wm…`, `wo…`), a bot and groups, like the zone corpus.
fn generate(
    messages: usize,
    keys: &[(u32, String)],
    media_max_bytes: usize,
    seed: u64,
) -> Result<(RecordFile, Vec<MediaBlob>), KeyError> {
    if keys.is_empty() {
        return Err(KeyError::NotAKey);
    }
    let encryptors = keys.iter().map(|(_, pem)| PublicKeyEncryptor::from_pem(pem)).collect::<Result<Vec<_>, _>>()?;
    let mut random = SplitMix::new(seed);
    let members: Vec<String> = (0..12).map(|n| format!("{}{n:02}", ["zhang", "li", "wang", "chen"][n % 4])).collect();
    let externals: Vec<String> =
        (0..20).map(|n| format!("{}{:016x}", if n % 2 == 0 { "wm" } else { "wo" }, random.next_u64())).collect();
    let rooms: Vec<String> = (0..4).map(|_| format!("wr{:016x}", random.next_u64())).collect();
    let start_ms: i64 = crate::domain::unix_now().saturating_sub(4 * 86_400) * 1000;
    let mut corpus = CorpusWriter::new(encryptors).map_err(|_| KeyError::Invalid)?;
    let mut media: Vec<MediaBlob> = Vec::new();
    let mut last_text: Option<String> = None;
    for index in 0..messages {
        let seq = index as u64 + 1;
        let msgtype = MSGTYPES[index % MSGTYPES.len()];
        let external = index % 3 == 0;
        let from = if index % 7 == 0 {
            externals[random.below(externals.len())].clone()
        } else {
            members[random.below(members.len())].clone()
        };
        let (roomid, tolist) = if index % 4 == 0 {
            let room = rooms[random.below(rooms.len())].clone();
            let mut tolist: Vec<String> = (0..3).map(|_| members[random.below(members.len())].clone()).collect();
            tolist.push(externals[random.below(externals.len())].clone());
            (room, tolist)
        } else if external {
            (String::new(), vec![externals[random.below(externals.len())].clone()])
        } else {
            (String::new(), vec![members[random.below(members.len())].clone()])
        };
        let suffix = if external || from.starts_with('w') { "_external" } else { "" };
        let msgid = format!("{:016x}{:08x}{suffix}", random.next_u64(), index);
        let msgtime = start_ms + index as i64 * 1500;
        let mut file = |random: &mut SplitMix| {
            // The first file is exactly `media_max_bytes` long (several chunks, for resume tests);
            // every fifth repeats the one before under another sdkfileid (a forwarded file).
            let bytes: Vec<u8> = match media.last() {
                Some((_, previous)) if media.len() % 5 == 4 => previous.clone(),
                _ => {
                    let size = if media.is_empty() { media_max_bytes } else { random.below(media_max_bytes + 1) };
                    (0..size).map(|_| random.next_u64() as u8).collect()
                }
            };
            let size = bytes.len();
            let sdkfileid = format!("sim{seq}x{:08x}", random.next_u64() as u32);
            let md5sum: String = Md5::digest(&bytes).iter().map(|byte| format!("{byte:02x}")).collect();
            media.push((sdkfileid.clone(), bytes));
            (sdkfileid, md5sum, size)
        };
        let payload = payload(msgtype, index, &mut random, &mut file, &msgid);
        let mut message = json!({
            "msgid": msgid, "action": "send", "from": from, "tolist": tolist, "roomid": roomid,
            "msgtime": msgtime, "msgtype": msgtype,
        });
        match msgtype {
            "switch" => {
                message = json!({"msgid": msgid, "action": "switch", "time": msgtime, "user": from});
            }
            "revoke" => {
                // A recall names the text message sent last before it (a real, stored message).
                message["action"] = json!("recall");
                message["revoke"] = match &last_text {
                    Some(earlier) => json!({"pre_msgid": earlier}),
                    None => payload,
                };
            }
            "todo" | "vote" => {
                if let (Value::Object(object), Value::Object(fields)) = (&mut message, payload) {
                    object.extend(fields);
                }
            }
            _ => {
                let key = match msgtype {
                    "external_redpacket" => "redpacket",
                    "docmsg" => "doc",
                    "meeting_notification" | "markdown" | "news" | "voiptext" | "qydiskfile" | "solitaire" | "note" => {
                        "info"
                    }
                    other => other,
                };
                message[key] = payload;
            }
        }
        if msgtype == "text" {
            last_text = Some(msgid.clone());
        }
        let plaintext = message.to_string();
        let version_index = index * keys.len() / messages.max(1);
        let encrypt_key = stub_sdk::random_encrypt_key(&mut random);
        let record = ArchiveRecord {
            seq,
            msgid,
            publickey_ver: keys[version_index].0,
            encrypt_random_key: String::new(), // filled in by the writer, in parallel
            encrypt_chat_msg: stub_sdk::seal(&encrypt_key, plaintext.as_bytes()),
            encrypt_key,
            plaintext,
        };
        corpus.push(record, version_index)?;
    }
    Ok((corpus.finish()?, media))
}

/// Encrypts records' keys in parallel chunks and appends them to the corpus file.
struct CorpusWriter {
    encryptors: Vec<PublicKeyEncryptor>,
    pending: Vec<(ArchiveRecord, usize)>,
    out: BufWriter<File>,
    offsets: Vec<u64>,
}

impl CorpusWriter {
    const CHUNK: usize = 4096;

    fn new(encryptors: Vec<PublicKeyEncryptor>) -> std::io::Result<CorpusWriter> {
        Ok(CorpusWriter {
            encryptors,
            pending: Vec::new(),
            out: BufWriter::new(tempfile::tempfile()?),
            offsets: vec![0],
        })
    }

    fn push(&mut self, record: ArchiveRecord, version_index: usize) -> Result<(), KeyError> {
        self.pending.push((record, version_index));
        if self.pending.len() >= Self::CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), KeyError> {
        let encryptors = &self.encryptors;
        let encrypted: Vec<ArchiveRecord> = std::mem::take(&mut self.pending)
            .into_par_iter()
            .map(|(mut record, version_index)| {
                record.encrypt_random_key = encryptors[version_index].encrypt_base64(record.encrypt_key.as_bytes())?;
                Ok(record)
            })
            .collect::<Result<_, KeyError>>()?;
        for record in encrypted {
            let mut line = serde_json::to_vec(&record).map_err(|_| KeyError::Invalid)?;
            line.push(b'\n');
            self.out.write_all(&line).map_err(|_| KeyError::Invalid)?;
            let end = self.offsets.last().copied().unwrap_or(0) + line.len() as u64;
            self.offsets.push(end);
        }
        Ok(())
    }

    fn finish(mut self) -> Result<RecordFile, KeyError> {
        self.flush()?;
        let file = self.out.into_inner().map_err(|_| KeyError::Invalid)?;
        Ok(RecordFile { file, offsets: self.offsets })
    }
}

/// The type's object (reference §7.2), with Chinese and English text to search.
fn payload(
    msgtype: &str,
    index: usize,
    random: &mut SplitMix,
    file: &mut dyn FnMut(&mut SplitMix) -> (String, String, usize),
    msgid: &str,
) -> Value {
    const WORDS: &[&str] = &["合同", "报价", "发票", "quarterly report", "会议纪要", "delivery", "客户回访", "invoice"];
    let word = WORDS[index % WORDS.len()];
    match msgtype {
        "text" => json!({"content": format!("第{index}条消息：请确认{word} (message {index})")}),
        "image" | "emotion" => {
            let (sdkfileid, md5sum, size) = file(random);
            if msgtype == "image" {
                json!({"md5sum": md5sum, "filesize": size, "sdkfileid": sdkfileid})
            } else {
                json!({"type": 2, "width": 120, "height": 120, "imagesize": size, "md5sum": md5sum, "sdkfileid": sdkfileid})
            }
        }
        "voice" => {
            let (sdkfileid, md5sum, size) = file(random);
            json!({"md5sum": md5sum, "voice_size": size, "play_length": 7, "sdkfileid": sdkfileid})
        }
        "video" => {
            let (sdkfileid, md5sum, size) = file(random);
            json!({"md5sum": md5sum, "filesize": size, "play_length": 12, "sdkfileid": sdkfileid})
        }
        "file" => {
            let (sdkfileid, md5sum, size) = file(random);
            json!({"md5sum": md5sum, "filename": format!("{word}-{index}.pdf"), "fileext": "pdf", "filesize": size, "sdkfileid": sdkfileid})
        }
        "voip_doc_share" => {
            let (sdkfileid, md5sum, size) = file(random);
            json!({"filename": format!("共享文档{index}.docx"), "md5sum": md5sum, "filesize": size, "sdkfileid": sdkfileid})
        }
        "meeting_voice_call" => {
            let (sdkfileid, _, _) = file(random);
            json!({"endtime": 1_700_000_000 + index, "sdkfileid": sdkfileid, "demofiledata": [], "sharescreendata": []})
        }
        "revoke" => json!({"pre_msgid": format!("{msgid}-earlier")}),
        "agree" => json!({"userid": "wm-agreeing", "agree_time": 1_700_000_000_000i64}),
        "disagree" => json!({"userid": "wm-refusing", "disagree_time": 1_700_000_000_000i64}),
        "card" => json!({"corpname": "模拟企业", "userid": "zhang01"}),
        "location" => {
            json!({"longitude": 113.94, "latitude": 22.54, "address": "深圳市南山区科技园", "title": format!("{word}地点"), "zoom": 15})
        }
        "link" => {
            json!({"title": format!("{word} 链接"), "description": "a shared page", "link_url": "https://example.com/a", "image_url": "https://example.com/a.png"})
        }
        "weapp" => {
            json!({"title": format!("{word}小程序"), "description": "mini program", "username": "gh_0000@app", "displayname": "模拟", "appid": "wx0000", "pagepath": "pages/index"})
        }
        "chatrecord" => json!({"title": "聊天记录", "item": [
            {"type": "ChatRecordText", "msgtime": 1_700_000_000, "content": json!({"content": format!("转发的{word}")}).to_string(), "from_chatroom": false}
        ]}),
        "todo" => json!({"title": format!("待办：{word}"), "content": "please follow up"}),
        "vote" => {
            json!({"votetitle": format!("{word}投票"), "voteitem": ["同意", "反对"], "votetype": 101, "voteid": format!("v{index}")})
        }
        "collect" => {
            json!({"room_name": "项目群", "creator": "li01", "create_time": "2024-01-01 10:00:00", "title": "信息收集", "details": [{"id": 1, "ques": "姓名", "type": "Text"}]})
        }
        "redpacket" | "external_redpacket" => json!({"type": 1, "wish": "恭喜发财", "totalcnt": 1, "totalamount": 888}),
        "meeting" => {
            json!({"topic": format!("{word}讨论会"), "starttime": 1_700_000_000, "endtime": 1_700_003_600, "address": "会议室A", "remarks": "", "meetingid": index})
        }
        "meeting_notification" => json!({"content": "会议已开始", "meeting_id": index, "notification_type": 1}),
        "docmsg" => {
            json!({"title": format!("{word}文档"), "doc_creator": "wang02", "link_url": "https://doc.example.com/d"})
        }
        "markdown" => json!({"content": format!("**{word}** 更新")}),
        "news" => {
            json!({"item": [{"title": format!("{word}新闻"), "description": "news item", "url": "https://example.com/n", "picurl": "https://example.com/n.png"}]})
        }
        "calendar" => {
            json!({"title": format!("{word}日程"), "creatorname": "chen03", "attendeename": ["li01"], "starttime": 1_700_000_000, "endtime": 1_700_003_600, "place": "线上", "remarks": "bring the numbers"})
        }
        "mixed" => json!({"item": [
            {"type": "text", "content": json!({"content": format!("图文混合：{word}")}).to_string()}
        ]}),
        "sphfeed" => json!({"feed_type": 4, "sph_name": "模拟视频号", "feed_desc": format!("{word}视频")}),
        "voiptext" => json!({"callduration": 60, "invitetype": 2}),
        "qydiskfile" => json!({"filename": format!("{word}.xlsx"), "url": "https://drive.example.com/f"}),
        "solitaire" => json!({"solitaire_type": 101, "solitaire_content": format!("{word}接龙")}),
        "note" => {
            json!({"items": [{"msg_type": "text", "content": json!({"content": format!("笔记：{word}")}).to_string()}]})
        }
        _ => json!({}),
    }
}
