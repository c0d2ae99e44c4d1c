//! Full-text search: `search_messages` against a brute-force substring scan written here (its own
//! folding of full-width letters and case), through the real service against the archive
//! simulator, and across a SIGKILL of the indexer.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::{Value, json};
use wecom_zone::abilities::Abilities;
use wecom_zone::background::{Backoff, EntryRetry};
use wecom_zone::client::Answer;
use wecom_zone::config::Config;
use wecom_zone::domain::{AbilityCall, Clock, ContentStatus, CorpId, DecryptStatus, MsgId};
use wecom_zone::mailbox::{Mailbox, MailboxPolicy};
use wecom_zone::metrics::Metrics;
use wecom_zone::search::{Search, searchable_text};
use wecom_zone::store::{ArchiveFields, NewRecord, PageCommit, RecordStore, SearchStore, SqliteStore};
use wecom_zone::upstream::UpstreamClient;

use crate::archive::{ArchiveFixture, CORP, wait_for_records};
use crate::ingest::{RunningService, vector_keys};

const BASE_MS: i64 = 1_700_000_000_000;
const USERS: [&str; 4] = ["zhang01", "li02", "wang03", "chen04"];
/// Chinese, ASCII letters in both cases, digits, full-width forms, spaces.
const ALPHABET: &str = "退款合同发票订单客户的了是abcdeABCDE0123456789ＡＢＣａｂｃ１２３  ";

/// The oracle's folding: full-width ASCII to ASCII, then ASCII lower case (all the corpus needs).
fn fold(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap(),
            other => other,
        })
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// One synthetic message: its type and searchable fields, sender, receiver, room, time.
#[derive(Debug, Clone)]
struct Msg {
    kind: u8,
    first: String,
    second: String,
    from: usize,
    to: usize,
    in_room: bool,
    second_offset: i64,
}

impl Msg {
    /// The fields the contract says are searchable, by the oracle's own reading.
    fn searchable(&self) -> Vec<&str> {
        match self.kind {
            0 => vec![&self.first],
            1 => vec![&self.first],
            2 => vec![&self.first, &self.second],
            _ => vec![],
        }
    }

    fn msgtime(&self) -> i64 {
        BASE_MS + self.second_offset * 1000
    }

    fn json(&self, msgid: &str) -> Value {
        let (msgtype, payload) = match self.kind {
            0 => ("text", json!({"content": self.first})),
            1 => ("file", json!({"filename": self.first, "md5sum": "00", "filesize": 1, "sdkfileid": "x"})),
            2 => ("link", json!({"title": self.first, "description": self.second, "link_url": self.second})),
            _ => ("image", json!({"md5sum": self.first, "sdkfileid": self.second})),
        };
        let mut message = json!({
            "msgid": msgid, "action": "send", "from": USERS[self.from], "tolist": [USERS[self.to]],
            "roomid": if self.in_room { "wrroom1" } else { "" }, "msgtime": self.msgtime(), "msgtype": msgtype,
        });
        message[msgtype] = payload;
        message
    }
}

fn msgid(index: usize) -> String {
    format!("msg{index:04}")
}

/// Stores `corpus` as one classic archive page of `corp`.
fn store_corpus(store: &SqliteStore, corp: &str, corpus: &[Msg]) {
    let records = corpus
        .iter()
        .enumerate()
        .map(|(index, msg)| {
            let id = msgid(index);
            let message = msg.json(&id);
            let mut record = NewRecord::bare(MsgId::from(id.as_str()), String::new());
            record.decrypt_status = DecryptStatus::Ok;
            record.send_time = msg.msgtime() / 1000;
            record.archive = Some(ArchiveFields {
                seq: index as u64 + 1,
                action: "send".into(),
                msgtype: message["msgtype"].as_str().unwrap().into(),
                msgtime: msg.msgtime(),
                content: Some(message.to_string()),
                content_status: ContentStatus::Ok,
                attempts: 1,
                media: Vec::new(),
            });
            record
        })
        .collect();
    let page = PageCommit { corp_id: corp.into(), cursor_in: None, cursor_out: corpus.len().to_string(), records };
    store.commit_page(&page).unwrap();
}

/// `Abilities` over `store` and `search`, with `content_corps` on the classic archive.
fn abilities(store: Arc<SqliteStore>, search: Arc<Search>, content_corps: &[&str]) -> Abilities {
    let (_, private, _) = vector_keys().remove(0);
    let text = format!(
        "[upstream]\nbase_url = \"http://127.0.0.1:9\"\n[[corp]]\ncorp_id = \"wwsearchtest00001\"\nsecret = \"searchSecret0123456789\"\n\
         token = \"searchToken\"\nencoding_aes_key = \"{}\"\nprivate_keys = [ {{ version = 1, pem = \"\"\"{private}\"\"\" }} ]\n",
        crate::helpers::AES_KEY
    );
    let config = Config::from_toml_str(&text, Vec::new(), None).unwrap();
    let metrics = Arc::new(Metrics::new());
    let upstream = UpstreamClient::new(&config, Arc::clone(&metrics)).unwrap();
    let retry =
        EntryRetry { backoff: Backoff { base: Duration::from_secs(1), max: Duration::from_secs(1) }, max_attempts: 1 };
    let policy = MailboxPolicy { ttl: Duration::from_secs(60), max_answer_bytes: 1 << 20, retry };
    let mailbox = Arc::new(Mailbox::new(Arc::clone(&store) as _, upstream.clone(), policy, Clock::system(), metrics));
    let corps: HashSet<CorpId> = content_corps.iter().map(|corp| CorpId::from(*corp)).collect();
    Abilities::new(store as Arc<dyn RecordStore>, upstream, mailbox, Vec::new()).with_search(Some(search), corps)
}

async fn call(abilities: &Abilities, corp: &str, request: &Value) -> Value {
    let call = AbilityCall {
        corp_id: corp.into(),
        agent_id: 0,
        ability_id: "search_messages".into(),
        notify_id: "".into(),
        job_info: String::new(),
        is_async: false,
        request_data: request.to_string(),
    };
    abilities.call(&call).await
}

/// Every page of `request`, followed by cursor: the msgids in order.
async fn all_pages(abilities: &Abilities, corp: &str, request: &Value, limit: usize) -> Vec<String> {
    let mut found = Vec::new();
    let mut cursor = String::new();
    for _ in 0..1000 {
        let mut page_request = request.clone();
        page_request["limit"] = json!(limit);
        page_request["cursor"] = json!(cursor);
        let answer = call(abilities, corp, &page_request).await;
        assert_eq!(answer["errcode"], 0, "{answer}");
        let hits = answer["hits"].as_array().unwrap();
        assert!(hits.len() <= limit);
        for hit in hits {
            let snippet = hit["snippet"].as_str().unwrap();
            assert!(snippet.contains("<em>") && snippet.contains("</em>"), "{snippet}");
            found.push(hit["msgid"].as_str().unwrap().to_owned());
        }
        if answer["has_more"] == false {
            return found;
        }
        assert_eq!(hits.len(), limit, "a page short of the limit says it is the last");
        cursor = answer["next_cursor"].as_str().unwrap().to_owned();
    }
    panic!("more than 1000 pages")
}

/// Turns a term the way a user might type it: as is, upper case, full-width, or mixed.
fn styled(term: &str, style: u8) -> String {
    term.chars()
        .enumerate()
        .map(|(at, c)| {
            let wide = |c: char| if c.is_ascii_alphanumeric() { char::from_u32(c as u32 + 0xFEE0).unwrap() } else { c };
            match (style % 4, at % 2) {
                (1, _) | (3, 0) => c.to_ascii_uppercase(),
                (2, _) | (3, 1) => wide(c.to_ascii_uppercase()),
                _ => c,
            }
        })
        .collect()
}

fn message_strategy() -> impl Strategy<Value = Msg> {
    let alphabet: Vec<char> = ALPHABET.chars().collect();
    let text = prop::collection::vec(prop::sample::select(alphabet), 0..24).prop_map(String::from_iter);
    (0u8..4, text.clone(), text, 0..USERS.len(), 0..USERS.len(), any::<bool>(), 0i64..20).prop_map(
        |(kind, first, second, from, to, in_room, second_offset)| Msg {
            kind,
            first,
            second,
            from,
            to,
            in_room,
            second_offset,
        },
    )
}

/// A query: terms cut from the corpus (1 to 6 characters, styled), sometimes a second term and a
/// filter; and the page size.
#[derive(Debug, Clone)]
struct QuerySpec {
    picks: Vec<(prop::sample::Index, prop::sample::Index, usize, u8)>,
    userid: Option<usize>,
    since_offset: Option<i64>,
    limit: usize,
}

fn query_strategy() -> impl Strategy<Value = QuerySpec> {
    let pick = (any::<prop::sample::Index>(), any::<prop::sample::Index>(), 1usize..=6, any::<u8>());
    (
        prop::collection::vec(pick, 1..3),
        prop::option::weighted(0.25, 0..USERS.len()),
        prop::option::weighted(0.2, 0i64..20),
        1usize..7,
    )
        .prop_map(|(picks, userid, since_offset, limit)| QuerySpec { picks, userid, since_offset, limit })
}

/// The terms of `spec`, cut from `corpus` (a pick that lands on whitespace takes a corpus char).
fn terms_of(spec: &QuerySpec, corpus: &[Msg]) -> Vec<String> {
    spec.picks
        .iter()
        .map(|(message, start, length, style)| {
            let msg = message.get(corpus);
            let text: Vec<char> = format!("{}{}", msg.first, msg.second).chars().collect();
            let piece: String = if text.is_empty() {
                "退".into()
            } else {
                let from = start.index(text.len());
                text[from..(from + length).min(text.len())].iter().collect()
            };
            let term = piece.split_whitespace().next().unwrap_or("款").to_owned();
            styled(&term, *style)
        })
        .collect()
}

/// The brute-force answer: every message whose searchable fields contain every term, newest
/// first (ties: the later record first).
fn oracle(corpus: &[Msg], terms: &[String], spec: &QuerySpec) -> Vec<String> {
    let terms: Vec<String> = terms.iter().map(|term| fold(term)).collect();
    let mut hits: Vec<(i64, usize)> = corpus
        .iter()
        .enumerate()
        .filter(|(_, msg)| {
            terms.iter().all(|term| msg.searchable().iter().any(|field| fold(field).contains(term.as_str())))
        })
        .filter(|(_, msg)| spec.userid.is_none_or(|user| msg.from == user || msg.to == user))
        .filter(|(_, msg)| spec.since_offset.is_none_or(|since| msg.second_offset >= since))
        .map(|(index, msg)| (msg.msgtime(), index))
        .collect();
    hits.sort_unstable_by(|a, b| b.cmp(a));
    hits.into_iter().map(|(_, index)| msgid(index)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn search_messages_is_exactly_a_substring_scan_in_order_across_pages(
        corpus in prop::collection::vec(message_strategy(), 1..40),
        queries in prop::collection::vec(query_strategy(), 1..6),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("search.sqlite")).unwrap());
        // Another corp's identical messages must never show.
        store_corpus(&store, "wwothercorp000001", &corpus);
        store_corpus(&store, CORP, &corpus);
        let search = Arc::new(Search::open(&dir.path().join("index"), Arc::clone(&store) as _, true).unwrap());
        search.catch_up().unwrap();
        let abilities = abilities(Arc::clone(&store), search, &[CORP, "wwothercorp000001"]);
        for spec in &queries {
            let terms = terms_of(spec, &corpus);
            let mut request = json!({"query": terms.join(" ")});
            if let Some(user) = spec.userid {
                request["userid"] = json!(USERS[user]);
            }
            if let Some(since) = spec.since_offset {
                request["begin_time"] = json!((BASE_MS + since * 1000) / 1000);
            }
            let found = runtime.block_on(all_pages(&abilities, CORP, &request, spec.limit));
            prop_assert_eq!(found, oracle(&corpus, &terms, spec), "query {}", request);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_searches_are_refused_clearly_and_zone_corps_are_pointed_to_the_zones_own_search() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("search.sqlite")).unwrap());
    let search = Arc::new(Search::open(&dir.path().join("index"), Arc::clone(&store) as _, true).unwrap());
    let abilities = abilities(Arc::clone(&store), search, &[CORP]);
    for (request, field) in [
        (json!({}), "query"),
        (json!({"query": "  "}), "query"),
        (json!({"query": "a", "limit": 101}), "limit"),
        (json!({"query": "a", "limit": 0}), "limit"),
        (json!({"query": "a", "cursor": "not-ours"}), "cursor"),
        (json!({"query": "a", "begin_time": 5, "end_time": 4}), "begin_time"),
        (json!({"query": "a", "colour": "red"}), "colour"),
    ] {
        let answer = call(&abilities, CORP, &request).await;
        assert_eq!(answer["errcode"], 40058, "{request}: {answer}");
        assert!(answer["errmsg"].as_str().unwrap().contains(field), "{request}: {answer}");
    }
    let answer = call(&abilities, "wwzonecorp0000001", &json!({"query": "退款"})).await;
    assert_eq!(answer["errcode"], 48002, "{answer}");
    let errmsg = answer["errmsg"].as_str().unwrap();
    assert!(errmsg.contains("archive = \"finance_sdk\"") && errmsg.contains("invoke_search_msg"), "{errmsg}");
}

/// A search through the service returns what was stored, newest first, with filters, recalls
/// marked, and a freshly committed page searchable at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_searches_the_archive_it_pulled() {
    const MESSAGES: usize = 300;
    let fixture = ArchiveFixture::new(MESSAGES, 0).await;
    let service = RunningService::start(&fixture.config(100, 5000)).await;
    wait_for_records(service.store.as_ref(), MESSAGES as i64).await;
    let client = fixture.client(&service.url);
    let search = |request: Value| {
        let client = &client;
        async move {
            let Answer::Sealed(answer) = client.call_ability("search_messages", &request, "", None).await.unwrap()
            else {
                panic!("search_messages was refused")
            };
            assert_eq!(answer["errcode"], 0, "{answer}");
            answer
        }
    };
    let records = fixture.simulator.records();
    let messages: Vec<(String, Value)> = records
        .iter()
        .map(|record| (record.msgid.clone(), serde_json::from_str::<Value>(&record.plaintext).unwrap()))
        .collect();
    let expected = |term: &str, keep: &dyn Fn(&Value) -> bool| -> Vec<String> {
        let mut hits: Vec<(i64, u64, String)> = records
            .iter()
            .zip(&messages)
            .filter(|(_, (_, message))| searchable_text(message).contains(term) && keep(message))
            .map(|(record, (msgid, message))| (message["msgtime"].as_i64().unwrap(), record.seq, msgid.clone()))
            .collect();
        hits.sort_unstable_by(|a, b| b.cmp(a));
        hits.into_iter().map(|(_, _, msgid)| msgid).collect()
    };
    let msgids = |answer: &Value| -> Vec<String> {
        answer["hits"].as_array().unwrap().iter().map(|hit| hit["msgid"].as_str().unwrap().to_owned()).collect()
    };

    let answer = search(json!({"query": "发票", "limit": 100})).await;
    let Answer::Sealed(status) = client.call_ability("ingest_status", &json!({}), "", None).await.unwrap() else {
        panic!("ingest_status was refused")
    };
    assert_eq!(status["search_backlog"], 0, "a search waits for what was stored before it: {status}");
    let want = expected("发票", &|_| true);
    assert!(want.len() > 10, "the corpus has the word");
    assert_eq!(msgids(&answer), want);
    let first = &answer["hits"][0];
    assert!(first["snippet"].as_str().unwrap().contains("<em>发票</em>"), "{first}");
    let original = &messages.iter().find(|(msgid, _)| *msgid == first["msgid"]).unwrap().1;
    for field in ["msgtime", "from", "tolist", "roomid", "msgtype"] {
        assert_eq!(first[field], original[field], "{field}");
    }

    // Pages of 7 by cursor give the same list.
    let mut paged = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = search(json!({"query": "发票", "limit": 7, "cursor": cursor})).await;
        paged.extend(msgids(&page));
        if page["has_more"] == false {
            break;
        }
        cursor = page["next_cursor"].as_str().unwrap().to_owned();
    }
    assert_eq!(paged, want);

    // Filters: sender or receiver, room, type; English in another case.
    let user = first["from"].as_str().unwrap().to_owned();
    let answer = search(json!({"query": "发票", "userid": user, "limit": 100})).await;
    let involves = |message: &Value| {
        message["from"] == user.as_str() || message["tolist"].as_array().unwrap().iter().any(|to| to == user.as_str())
    };
    assert_eq!(msgids(&answer), expected("发票", &involves));
    let answer = search(json!({"query": "pdf", "msgtype": "file", "limit": 100})).await;
    assert_eq!(msgids(&answer), expected("pdf", &|message| message["msgtype"] == "file"));
    let answer = search(json!({"query": "INVOICE", "limit": 100})).await;
    assert_eq!(msgids(&answer), expected("invoice", &|_| true));

    // A recalled message stays findable and says so.
    let recall = messages.iter().find(|(_, message)| message["msgtype"] == "revoke").unwrap();
    let recalled_id = recall.1["revoke"]["pre_msgid"].as_str().unwrap();
    let recalled = &messages.iter().find(|(msgid, _)| msgid == recalled_id).unwrap().1;
    let unique = recalled["text"]["content"].as_str().unwrap().split('：').next().unwrap().to_owned();
    let answer = search(json!({"query": unique})).await;
    assert_eq!(msgids(&answer), [recalled_id.to_owned()]);
    assert_eq!(answer["hits"][0]["recalled"], true);
    let answer = search(json!({"query": "发票", "limit": 1})).await;
    assert_eq!(answer["hits"][0]["recalled"], false);
    service.stop().await;
}

/// The indexer killed with SIGKILL at random moments while the archive is pulled and indexed:
/// after a restart the index catches up, and then holds exactly what a fresh `reindex` of the
/// same store holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_killed_mid_indexing_catches_up_to_what_a_fresh_reindex_holds() {
    use std::process::{Command, Stdio};
    const MESSAGES: usize = 4_000;
    const KILLS: usize = 6;
    let fixture = ArchiveFixture::new(MESSAGES, 0).await;
    let config_path = fixture.dir.path().join("wecom-zone.toml");
    std::fs::write(&config_path, fixture.config(200, 5000)).unwrap();
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_wecom-zone"))
            .args(["serve", "--config"])
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let db = fixture.db();
    let applied = |path: &std::path::Path| -> i64 {
        if !db.exists() || !path.join("meta.json").exists() {
            return 0;
        }
        let store = Arc::new(SqliteStore::open(&db).unwrap());
        Search::open(path, store, false).map_or(0, |search| search.applied().unwrap().mark.rev)
    };
    let mut rng = wecom_zone::simulator::SplitMix::new(0x5eac);
    let mut progress = Vec::new();
    for _ in 0..KILLS {
        let before = applied(&fixture.search_dir());
        let mut child = spawn();
        let deadline = Instant::now() + Duration::from_secs(60);
        while applied(&fixture.search_dir()) == before {
            assert!(Instant::now() < deadline, "the index made no progress after a restart: {progress:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.below(100) as u64)).await;
        child.kill().unwrap();
        child.wait().unwrap();
        progress.push(applied(&fixture.search_dir()));
    }
    let mut child = spawn();
    let deadline = Instant::now() + Duration::from_secs(120);
    let head = loop {
        let store = SqliteStore::open(&db).unwrap();
        let stored = store.ingest_status(CORP).unwrap().stored;
        let head = store.search_head().unwrap();
        if stored == MESSAGES as i64 && applied(&fixture.search_dir()) == head.rev {
            break head;
        }
        assert!(Instant::now() < deadline, "the index did not catch up after the kills: {progress:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(progress.iter().any(|&rev| rev < head.rev), "some kill landed mid-indexing: {progress:?}");
    child.kill().unwrap();
    child.wait().unwrap();

    // A fresh reindex of the same store into another folder, by the command a user runs.
    let fresh_dir = fixture.dir.path().join("fresh-search");
    let fresh_config = fixture.dir.path().join("fresh.toml");
    let text = std::fs::read_to_string(&config_path).unwrap().replace(
        &format!("{:?}", fixture.search_dir().display().to_string()),
        &format!("{:?}", fresh_dir.display().to_string()),
    );
    std::fs::write(&fresh_config, text).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_wecom-zone"))
        .args(["reindex", "--config"])
        .arg(&fresh_config)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let store = Arc::new(SqliteStore::open(&db).unwrap());
    let recovered = Arc::new(Search::open(&fixture.search_dir(), Arc::clone(&store) as _, false).unwrap());
    let fresh = Arc::new(Search::open(&fresh_dir, Arc::clone(&store) as _, false).unwrap());
    assert_eq!(recovered.num_docs(), fresh.num_docs(), "no document lost or doubled");
    assert!(fresh.num_docs() > (MESSAGES / 4) as u64, "the searchable types are indexed");
    assert_eq!(recovered.applied().unwrap().mark, fresh.applied().unwrap().mark);
    let recovered_abilities = abilities(Arc::clone(&store), recovered, &[CORP]);
    let fresh_abilities = abilities(Arc::clone(&store), fresh, &[CORP]);
    for query in ["发票", "合同", "的", "invoice", "message 1", "pdf", "第1", "Report"] {
        let request = json!({"query": query});
        let recovered = all_pages(&recovered_abilities, CORP, &request, 100).await;
        let fresh = all_pages(&fresh_abilities, CORP, &request, 100).await;
        assert_eq!(recovered, fresh, "{query}");
    }
}

/// An index kept while its database was replaced (restored from elsewhere, or deleted and
/// started afresh) holds another store's documents: it is recognised and rebuilt.
#[test]
fn an_index_kept_beside_a_replaced_store_is_rebuilt_from_the_new_one() {
    let message = |text: &str| Msg {
        kind: 0,
        first: text.into(),
        second: String::new(),
        from: 0,
        to: 1,
        in_room: false,
        second_offset: 1,
    };
    let dir = tempfile::tempdir().unwrap();
    let index = dir.path().join("index");
    let indexed = |db: &str, corpus: &[Msg]| {
        let store = Arc::new(SqliteStore::open(&dir.path().join(db)).unwrap());
        store_corpus(&store, CORP, corpus);
        let search = Search::open(&index, store as _, true).unwrap();
        search.catch_up().unwrap();
        search.num_docs()
    };
    assert_eq!(indexed("first.sqlite", &[message("退款一"), message("退款二"), message("退款三")]), 3);
    assert_eq!(indexed("second.sqlite", &[message("合同")]), 1, "the first store's documents are gone");
}
