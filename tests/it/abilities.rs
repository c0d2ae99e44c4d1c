//! What the application sees: the mailbox (event → pull → spec_notify_app → get_callback_data),
//! every ability with valid and invalid inputs, async calls (also across a restart), concurrency.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wecom_zone::client::{Answer, ZoneClient};
use wecom_zone::crypto::{EnvelopeFormat, WxBizMsgCrypt};
use wecom_zone::domain::{Clock, EventKind, JobState, unix_now};
use wecom_zone::simulator::Simulator;
use wecom_zone::store::{JobStore, MailboxStore};

use crate::ingest::{CORP, RunningService, service_config_with, simulator_config, vector_keys};

const MESSAGES: usize = 400;

/// Declared output keys per ability (the README's output protocols).
fn declared_keys(ability: &str) -> &'static [&'static str] {
    match ability {
        "list_messages" => &["errcode", "errmsg", "msg_list", "next_cursor", "has_more"],
        "get_message" => &["errcode", "errmsg", "message"],
        "list_conversations" => &["errcode", "errmsg", "conversation_list", "next_cursor", "has_more"],
        "ingest_status" => &[
            "errcode",
            "errmsg",
            "corpid",
            "cursor",
            "last_pull_time",
            "stored_count",
            "failed_count",
            "failed_by_status",
            "pages",
            "newest_send_time",
            "newest_message_age_s",
            "dead_letters",
        ],
        _ => &["errcode", "errmsg"],
    }
}

const MESSAGE_KEYS: &[&str] = &[
    "msgid",
    "sender",
    "receiver_list",
    "chatid",
    "send_time",
    "msgtype",
    "public_key_ver",
    "secret_key",
    "decrypt_status",
    "call_duration",
];

struct Fixture {
    simulator: Simulator,
    service: RunningService,
    client: ZoneClient,
    _dir: tempfile::TempDir,
    config: String,
}

async fn fixture(extra: &str) -> Fixture {
    let keys = vector_keys();
    let publics = keys.iter().map(|(v, _, public)| (*v, public.clone())).collect();
    let simulator = Simulator::start(simulator_config(MESSAGES, publics)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let privates: Vec<_> = keys.iter().map(|(v, private, _)| (*v, private.clone())).collect();
    let config = service_config_with(&simulator, &privates, &dir.path().join("db.sqlite"), 100, extra);
    let service = RunningService::start(&config).await;
    service.wait_for(MESSAGES as i64).await;
    let client = simulator.client_for(&service.url).unwrap();
    Fixture { simulator, service, client, _dir: dir, config }
}

async fn call(client: &ZoneClient, ability: &str, request: Value) -> Value {
    call_with(client, ability, &request.to_string(), "").await
}

async fn call_with(client: &ZoneClient, ability: &str, request_data: &str, notify_id: &str) -> Value {
    let plaintext = json!({
        "call_type": 1, "corpid": CORP, "agentid": 0, "ability_id": ability, "notify_id": notify_id,
        "job_info": "", "is_async": false, "data": request_data,
    });
    match client.send(&plaintext.to_string(), EnvelopeFormat::Json).await.unwrap() {
        Answer::Sealed(output) => {
            let declared = declared_keys(ability);
            if !ability.starts_with("invoke_") && ability != "get_callback_data" {
                for key in output.as_object().unwrap().keys() {
                    assert!(declared.contains(&key.as_str()), "{ability} answered undeclared key {key}");
                }
            }
            output
        }
        other => panic!("{ability}: unexpected answer {other:?}"),
    }
}

async fn wait_for_notify_id(simulator: &Simulator, scene: i64, after: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let calls: Vec<_> =
            simulator.calls().into_iter().filter(|call| call.api == "spec_notify_app").skip(after).collect();
        if let Some(call) = calls.iter().find(|call| call.body["notify_scene"].as_i64() == Some(scene)) {
            return call.body["notify_id"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "no spec_notify_app for scene {scene}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn notify_calls(simulator: &Simulator) -> usize {
    simulator.calls().iter().filter(|call| call.api == "spec_notify_app").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_is_pulled_notified_and_its_payload_fetched_with_get_callback_data() {
    let keys = vector_keys();
    let publics = keys.iter().map(|(v, _, public)| (*v, public.clone())).collect();
    let simulator = Simulator::start(simulator_config(MESSAGES, publics)).await.unwrap();
    simulator.publish(0);
    let dir = tempfile::tempdir().unwrap();
    let privates: Vec<_> = keys.iter().map(|(v, private, _)| (*v, private.clone())).collect();
    let service =
        RunningService::start(&service_config_with(&simulator, &privates, &dir.path().join("db.sqlite"), 100, ""))
            .await;
    let client = simulator.client_for(&service.url).unwrap();

    simulator.publish(MESSAGES);
    let (event, token) = simulator.new_message_event();
    client.send(&event, EnvelopeFormat::Json).await.unwrap();
    let notify_id = wait_for_notify_id(&simulator, 1, 0).await;
    assert_eq!(service.stored(), MESSAGES as i64, "notified only after the pull");

    let payload = call_with(&client, "get_callback_data", "{}", &notify_id).await;
    assert_eq!(payload["errcode"], 0);
    assert_eq!(payload["notify_id"], notify_id.as_str());
    assert_eq!(payload["event_type"], "conversation_new_message");
    assert_eq!(payload["conversation_new_message"]["token"], token.as_str());
    let summary = &payload["pull_summary"];
    assert_eq!(summary["new_records"], MESSAGES);
    assert_eq!(summary["without_secret_key"], 0);
    assert_eq!(summary["begin_time"], simulator.expected(0).send_time);
    assert_eq!(summary["end_time"], simulator.expected(MESSAGES - 1).send_time);
    let chats: HashSet<String> = (0..MESSAGES)
        .map(|index| {
            let message = simulator.expected(index);
            message.chatid.unwrap_or_else(|| {
                let mut ids: Vec<String> = message.receivers.iter().map(|party| party.id.clone()).collect();
                ids.push(message.sender.id);
                ids.sort();
                ids.dedup();
                ids.join("|")
            })
        })
        .collect();
    assert_eq!(summary["chats_touched"], chats.len());
    let entry = service.store.mailbox_by_notify_id(CORP, &notify_id, unix_now()).unwrap().unwrap();
    assert_eq!(entry.fetch_count, 1, "the fetch is recorded");

    // Other events are kept and notified too, each under its own scene; fetches are recorded.
    let before = notify_calls(&simulator);
    let hit = wecom_zone::client::zone_event(CORP, "hit_keyword", &json!({"token": "HIT"}));
    client.send(&hit, EnvelopeFormat::Xml).await.unwrap();
    let hit_id = wait_for_notify_id(&simulator, 2, before).await;
    let payload = call_with(&client, "get_callback_data", "", &hit_id).await;
    assert_eq!(payload["hit_keyword"]["token"], "HIT");
    let before = notify_calls(&simulator);
    client.send(&wecom_zone::client::classic_event(CORP, "change_contact"), EnvelopeFormat::Xml).await.unwrap();
    let classic_id = wait_for_notify_id(&simulator, 22, before).await;
    let payload = call_with(&client, "get_callback_data", "{}", &classic_id).await;
    assert_eq!(payload["classic_event"]["Event"], "change_contact");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_expired_notify_ids_answer_710646() {
    let fixture = fixture("[mailbox]\nttl_s = 1").await;
    let before = notify_calls(&fixture.simulator);
    let event = wecom_zone::client::zone_event(CORP, "chat_archive_export_finished", &json!({"jobid": "J1"}));
    fixture.client.send(&event, EnvelopeFormat::Json).await.unwrap();
    let notify_id = wait_for_notify_id(&fixture.simulator, 9, before).await;
    let fresh = call_with(&fixture.client, "get_callback_data", "{}", &notify_id).await;
    assert_eq!(fresh["chat_archive_export_finished"]["jobid"], "J1");

    for unknown in ["", "nid-that-was-never-issued"] {
        let answer = call_with(&fixture.client, "get_callback_data", "{}", unknown).await;
        assert_eq!(answer, json!({"errcode": 710646, "errmsg": "invalid notify_id"}), "{unknown:?}");
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = call_with(&fixture.client, "get_callback_data", "{}", &notify_id).await;
    assert_eq!(expired["errcode"], 710646);
    fixture.service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notify_id_expires_when_the_service_clock_passes_its_ttl() {
    let keys = vector_keys();
    let publics = keys.iter().map(|(v, _, public)| (*v, public.clone())).collect();
    let simulator = Simulator::start(simulator_config(10, publics)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let privates: Vec<_> = keys.iter().map(|(v, private, _)| (*v, private.clone())).collect();
    // The client signs with the real time: the clock moves less than the allowed skew (300 s).
    let extra = "[mailbox]\nttl_s = 100";
    let config = service_config_with(&simulator, &privates, &dir.path().join("db.sqlite"), 100, extra);
    let clock = Clock::manual(unix_now());
    let service = RunningService::start_with_clock(&config, clock.clone()).await;
    let client = simulator.client_for(&service.url).unwrap();
    let event = wecom_zone::client::zone_event(CORP, "hit_keyword", &json!({"token": "T"}));
    client.send(&event, EnvelopeFormat::Json).await.unwrap();
    let notify_id = wait_for_notify_id(&simulator, 2, 0).await;
    // WeCom has issued the id; the service stores it once the call returns.
    let deadline = Instant::now() + Duration::from_secs(10);
    while call_with(&client, "get_callback_data", "{}", &notify_id).await["errcode"] == 710646 {
        assert!(Instant::now() < deadline, "the issued notify_id was never stored");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    clock.advance(99);
    let fresh = call_with(&client, "get_callback_data", "{}", &notify_id).await;
    assert_eq!(fresh["hit_keyword"]["token"], "T", "fetchable until the ttl passes");
    clock.advance(2);
    let expired = call_with(&client, "get_callback_data", "{}", &notify_id).await;
    assert_eq!(expired, json!({"errcode": 710646, "errmsg": "invalid notify_id"}));
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_messages_pages_through_everything_and_filters() {
    let fixture = fixture("").await;
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = call(&fixture.client, "list_messages", json!({"limit": 150, "cursor": cursor})).await;
        assert_eq!(page["errcode"], 0);
        for message in page["msg_list"].as_array().unwrap() {
            for key in message.as_object().unwrap().keys() {
                assert!(MESSAGE_KEYS.contains(&key.as_str()), "undeclared message key {key}");
            }
            seen.push(message.clone());
        }
        cursor = page["next_cursor"].as_str().unwrap().to_owned();
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
    }
    assert_eq!(seen.len(), MESSAGES);
    for (index, message) in seen.iter().enumerate() {
        let expected = fixture.simulator.expected(index);
        assert_eq!(message["msgid"], expected.msgid.as_str());
        assert_eq!(message["secret_key"], expected.secret_key.as_str());
        assert_eq!(message["public_key_ver"], expected.key_version);
        assert_eq!(message["decrypt_status"], "ok");
    }

    let sample = fixture.simulator.expected(7);
    let chatid = (0..MESSAGES).find_map(|index| fixture.simulator.expected(index).chatid).unwrap();
    let userid = sample.sender.id.clone();
    let corpus: Vec<_> = (0..MESSAGES).map(|index| fixture.simulator.expected(index)).collect();
    let cases: Vec<(Value, usize)> = vec![
        (json!({"chatid": chatid}), corpus.iter().filter(|m| m.chatid.as_deref() == Some(chatid.as_str())).count()),
        (json!({"msgtype": 1}), corpus.iter().filter(|m| m.msgtype == 1).count()),
        (
            json!({"begin_time": corpus[100].send_time, "end_time": corpus[199].send_time}),
            corpus
                .iter()
                .filter(|m| m.send_time >= corpus[100].send_time && m.send_time <= corpus[199].send_time)
                .count(),
        ),
        (
            if sample.sender.kind == 1 { json!({"userid": userid}) } else { json!({"external_userid": userid}) },
            corpus
                .iter()
                .filter(|m| m.sender.id == userid || m.receivers.iter().any(|party| party.id == userid))
                .count(),
        ),
    ];
    for (filter, expected) in cases {
        let mut request = filter.clone();
        request["limit"] = json!(1000);
        let page = call(&fixture.client, "list_messages", request).await;
        assert_eq!(page["msg_list"].as_array().unwrap().len(), expected, "{filter}");
        assert!(expected > 0, "the filter {filter} should match something");
    }
    fixture.service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_message_conversations_status_and_pass_through_answer() {
    let fixture = fixture("").await;
    let expected = fixture.simulator.expected(42);
    let answer = call(&fixture.client, "get_message", json!({"msgid": expected.msgid})).await;
    assert_eq!(answer["message"]["secret_key"], expected.secret_key.as_str());
    assert_eq!(answer["message"]["send_time"], expected.send_time);

    let mut total = 0;
    let mut keys = BTreeSet::new();
    let mut cursor = String::new();
    loop {
        let page = call(&fixture.client, "list_conversations", json!({"limit": 50, "cursor": cursor})).await;
        for conversation in page["conversation_list"].as_array().unwrap() {
            total += conversation["message_count"].as_i64().unwrap();
            assert!(keys.insert(conversation["conversation_id"].as_str().unwrap().to_owned()), "no repeats");
        }
        cursor = page["next_cursor"].as_str().unwrap().to_owned();
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
    }
    assert_eq!(total, MESSAGES as i64);
    let member = expected.sender.id.clone();
    let mine = call(&fixture.client, "list_conversations", json!({"userid": member, "limit": 1000})).await;
    let mine = mine["conversation_list"].as_array().unwrap();
    assert!(!mine.is_empty());
    for conversation in mine {
        let participants: Vec<&str> =
            conversation["participants"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
        assert!(participants.contains(&member.as_str()), "{conversation}");
    }

    let status = call(&fixture.client, "ingest_status", json!({})).await;
    assert_eq!(status["stored_count"], MESSAGES);
    assert_eq!(status["failed_count"], 0);
    assert_eq!(status["corpid"], CORP);
    assert!(!status["cursor"].as_str().unwrap().is_empty());

    let chatid = (0..MESSAGES).find_map(|index| fixture.simulator.expected(index).chatid).unwrap();
    let group = call(&fixture.client, "invoke_get_group_chat", json!({"chatid": chatid})).await;
    assert_eq!(group["errcode"], 0);
    assert!(!group["members"].as_array().unwrap().is_empty());
    let missing = call(&fixture.client, "invoke_get_group_chat", json!({"chatid": "wrnope"})).await;
    assert_eq!(missing["errcode"], 710624, "WeCom's errcode is passed on as it is");
    fixture.service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_inputs_of_every_ability_are_refused_with_the_field_named() {
    let fixture = fixture("").await;
    let cases: &[(&str, &str, i64, &str)] = &[
        ("list_messages", r#"{"limit":0}"#, 40058, "limit"),
        ("list_messages", r#"{"limit":1001}"#, 40058, "limit"),
        ("list_messages", r#"{"limit":"ten"}"#, 40058, "limit"),
        ("list_messages", r#"{"bogus":1}"#, 40058, "bogus"),
        ("list_messages", r#"{"cursor":"not-ours"}"#, 40058, "cursor"),
        ("list_messages", r#"{"begin_time":5,"end_time":1}"#, 40058, "begin_time"),
        ("list_messages", "not json", 40058, "JSON"),
        ("list_messages", "[1,2]", 40058, "object"),
        ("get_message", "{}", 40058, "msgid"),
        ("get_message", r#"{"msgid":""}"#, 40058, "msgid"),
        ("get_message", r#"{"msgid":"never-stored"}"#, 710601, "msgid"),
        ("list_conversations", r#"{"limit":-1}"#, 40058, "limit"),
        ("list_conversations", r#"{"cursor":"%%%"}"#, 40058, "cursor"),
        ("ingest_status", r#"{"corp":"other"}"#, 40058, "corp"),
        ("get_callback_data", r#"{"page":"first"}"#, 40058, "page"),
        ("invoke_get_group_chat", "[]", 40058, "object"),
        ("invoke_sync_msg", "{}", 710636, "invoke_sync_msg"),
        ("no_such_ability", "{}", 710636, "no_such_ability"),
    ];
    for (ability, request_data, errcode, mentions) in cases {
        let answer = call_with(&fixture.client, ability, request_data, "nid").await;
        assert_eq!(answer["errcode"], *errcode, "{ability} {request_data}: {answer}");
        assert!(answer["errmsg"].as_str().unwrap().contains(mentions), "{ability} {request_data}: {answer}");
        assert_eq!(answer.as_object().unwrap().len(), 2, "only errcode and errmsg: {answer}");
    }
    fixture.service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_ability_calls_are_answered_correctly() {
    let fixture = fixture("").await;
    let client = Arc::new(fixture.simulator.client_for(&fixture.service.url).unwrap());
    let mut tasks = Vec::new();
    for index in 0..100 {
        let client = Arc::clone(&client);
        let expected = fixture.simulator.expected(index * 3);
        tasks.push(tokio::spawn(async move {
            let answer = call(&client, "get_message", json!({"msgid": expected.msgid})).await;
            (answer, expected)
        }));
    }
    for task in tasks {
        let (answer, expected) = task.await.unwrap();
        assert_eq!(answer["message"]["msgid"], expected.msgid.as_str());
        assert_eq!(answer["message"]["secret_key"], expected.secret_key.as_str());
    }
    fixture.service.stop().await;
}

fn async_callbacks(simulator: &Simulator, job_info: &str) -> Vec<Value> {
    simulator
        .calls()
        .into_iter()
        .filter(|call| call.api == "program_async_job_call_back" && call.body["job_info"] == job_info)
        .map(|call| call.body)
        .collect()
}

async fn wait_for_callback(simulator: &Simulator, job_info: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(body) = async_callbacks(simulator, job_info).into_iter().next() {
            return body;
        }
        assert!(Instant::now() < deadline, "no program_async_job_call_back for {job_info}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_call_reaches_program_async_job_call_back_with_its_job_info() {
    let fixture = fixture("").await;
    let answer = fixture.client.call_ability("list_messages", &json!({"limit": 5}), "", Some("job-A")).await.unwrap();
    assert_eq!(answer, Answer::Sealed(json!({"errcode": 0, "errmsg": "ok"})), "acknowledged at once");
    let delivered = wait_for_callback(&fixture.simulator, "job-A").await;
    assert_eq!(delivered["errcode"], 0);
    let result: Value = serde_json::from_str(delivered["result"].as_str().unwrap()).unwrap();
    assert_eq!(result["msg_list"].as_array().unwrap().len(), 5);
    assert_eq!(result["msg_list"][0]["msgid"], fixture.simulator.expected(0).msgid.as_str());
    // The result is kept in the mailbox too.
    let kept_id = wait_for_notify_id(&fixture.simulator, 50, 0).await;
    let kept = call_with(&fixture.client, "get_callback_data", "{}", &kept_id).await;
    assert_eq!(kept["async_result"]["job_info"], "job-A");
    fixture.service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_result_not_yet_accepted_is_delivered_after_a_restart() {
    let fixture = fixture("").await;
    fixture.simulator.set_api_failing("program_async_job_call_back", true);
    let answer = fixture.client.call_ability("ingest_status", &json!({}), "", Some("job-R")).await.unwrap();
    assert_eq!(answer, Answer::Sealed(json!({"errcode": 0, "errmsg": "ok"})));
    let store = Arc::clone(&fixture.service.store);
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.jobs_unfinished().unwrap().first().is_none_or(|job| job.attempts == 0) {
        assert!(Instant::now() < deadline, "the job was never attempted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fixture.service.stop().await;
    assert!(async_callbacks(&fixture.simulator, "job-R").is_empty());

    fixture.simulator.set_api_failing("program_async_job_call_back", false);
    let service = RunningService::start(&fixture.config).await;
    let delivered = wait_for_callback(&fixture.simulator, "job-R").await;
    let result: Value = serde_json::from_str(delivered["result"].as_str().unwrap()).unwrap();
    assert_eq!(result["stored_count"], MESSAGES);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !service.store.jobs_unfinished().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the job is still not marked {}", JobState::Delivered);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(async_callbacks(&fixture.simulator, "job-R").len(), 1, "delivered once");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_delivered_again_after_a_restart_is_kept_once() {
    let fixture = fixture("").await;
    let sim = fixture.simulator.config();
    let crypto = WxBizMsgCrypt::new(&sim.callback_token, &sim.encoding_aes_key).unwrap();
    let event = wecom_zone::client::zone_event(CORP, "hit_keyword", &json!({"token": "ONCE"}));
    let timestamp = unix_now().to_string();
    let sealed = crypto.seal(rand::random(), event.as_bytes(), CORP.as_bytes(), &timestamp, "77");
    let body = json!({"tousername": CORP, "encrypt": sealed.encrypt}).to_string();
    let query = format!("msg_signature={}&timestamp={timestamp}&nonce=77", sealed.msg_signature);
    let deliver = |url: String| {
        let body = body.clone();
        let query = query.clone();
        async move { reqwest::Client::new().post(format!("{url}/?{query}")).body(body).send().await.unwrap().status() }
    };
    assert_eq!(deliver(fixture.service.url.clone()).await, 200);
    wait_for_notify_id(&fixture.simulator, 2, 0).await;
    fixture.service.stop().await;

    let service = RunningService::start(&fixture.config).await;
    assert_eq!(deliver(service.url.clone()).await, 200, "acknowledged again");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hits = fixture
        .simulator
        .calls()
        .iter()
        .filter(|call| call.api == "spec_notify_app" && call.body["notify_scene"] == 2)
        .count();
    assert_eq!(hits, 1, "processed once");
    service.stop().await;
}

/// A captured synchronous call replayed within the window reaches WeCom once; every replay gets
/// the first answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_invoke_create_rule_reaches_wecom_once() {
    let fixture = fixture("").await;
    let sim = fixture.simulator.config();
    let crypto = WxBizMsgCrypt::new(&sim.callback_token, &sim.encoding_aes_key).unwrap();
    let plaintext = json!({
        "call_type": 1, "corpid": CORP, "agentid": 0, "ability_id": "invoke_create_rule", "notify_id": "",
        "job_info": "", "is_async": false, "data": json!({"name": "replayed rule"}).to_string(),
    });
    let timestamp = unix_now().to_string();
    let sealed = crypto.seal(rand::random(), plaintext.to_string().as_bytes(), CORP.as_bytes(), &timestamp, "5");
    let body = json!({"tousername": CORP, "encrypt": sealed.encrypt}).to_string();
    let url = format!("{}/?msg_signature={}&timestamp={timestamp}&nonce=5", fixture.service.url, sealed.msg_signature);
    let mut answers = Vec::new();
    for _ in 0..4 {
        let response = reqwest::Client::new().post(&url).body(body.clone()).send().await.unwrap();
        assert_eq!(response.status(), 200);
        answers.push(fixture.client.open(&response.text().await.unwrap()).unwrap());
    }
    assert!(answers.iter().all(|answer| *answer == answers[0]), "{answers:?}");
    let reached = fixture.simulator.calls().iter().filter(|call| call.api == "create_rule").count();
    assert_eq!(reached, 1, "executed once");
    fixture.service.stop().await;
}

async fn dead_letters(client: &ZoneClient) -> (i64, i64) {
    let status = call(client, "ingest_status", json!({})).await;
    let dead = &status["dead_letters"];
    (dead["notifications"].as_i64().unwrap(), dead["async_results"].as_i64().unwrap())
}

/// Entries WeCom refuses for good back off on their own schedule, never in front of newer ones,
/// and become dead letters after `delivery.max_attempts`, counted in ingest_status and /metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_deliveries_back_off_alone_and_become_dead_letters() {
    let fixture = fixture("[delivery]\nmax_attempts = 3\nretry_max_s = 1\n").await;
    let refused_scene = EventKind::HitKeyword.scene();
    fixture.simulator.refuse("spec_notify_app", move |body| body["notify_scene"] == refused_scene);
    fixture.simulator.refuse("program_async_job_call_back", |body| body["job_info"] == "job-dead");
    for n in 0..120 {
        let event = wecom_zone::client::zone_event(CORP, "hit_keyword", &json!({"token": format!("T{n}")}));
        assert!(matches!(fixture.client.send(&event, EnvelopeFormat::Json).await.unwrap(), Answer::Sealed(_)));
    }
    let event = wecom_zone::client::zone_event(CORP, "chat_archive_audit_approved_single", &json!({"userid": "u"}));
    fixture.client.send(&event, EnvelopeFormat::Json).await.unwrap();
    let started = Instant::now();
    wait_for_notify_id(&fixture.simulator, i64::from(EventKind::AuditApprovedSingle.scene()), 0).await;
    assert!(started.elapsed() < Duration::from_secs(10), "not held up by 120 failing entries");

    for job_info in ["job-dead", "job-live"] {
        fixture.client.call_ability("ingest_status", &json!({}), "", Some(job_info)).await.unwrap();
    }
    wait_for_callback(&fixture.simulator, "job-live").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while dead_letters(&fixture.client).await != (120, 1) {
        assert!(Instant::now() < deadline, "dead letters: {:?}", dead_letters(&fixture.client).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = |api: &str| fixture.simulator.calls().iter().filter(|call| call.api == api).count();
    assert_eq!(refused("spec_notify_app (refused)"), 360, "three attempts each, then no more");
    assert_eq!(refused("program_async_job_call_back (refused)"), 3);
    let metrics = reqwest::get(format!("{}/metrics", fixture.service.url)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"wecom_zone_dead_letters_total{queue="mailbox"} 120"#), "{metrics}");
    assert!(metrics.contains(r#"wecom_zone_dead_letters_total{queue="jobs"} 1"#), "{metrics}");
    fixture.service.stop().await;
}

/// `errcode 0` without a `notify_id` accepted ours: the entry is notified once and fetchable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_answered_without_a_notify_id_is_accepted_once() {
    let fixture = fixture("").await;
    fixture.simulator.set_omit_notify_id(true);
    let before = notify_calls(&fixture.simulator);
    let event = wecom_zone::client::zone_event(CORP, "hit_keyword", &json!({"token": "NOID"}));
    fixture.client.send(&event, EnvelopeFormat::Json).await.unwrap();
    let notify_id = wait_for_notify_id(&fixture.simulator, i64::from(EventKind::HitKeyword.scene()), before).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(notify_calls(&fixture.simulator), before + 1, "announced once, not retried");
    let kept = call_with(&fixture.client, "get_callback_data", "{}", &notify_id).await;
    assert_eq!(kept["hit_keyword"]["token"], "NOID");
    fixture.service.stop().await;
}

/// A pass-through call that fails after reaching WeCom (HTTP 500, an answer too large to read)
/// is not repeated: it may have taken effect. A busy answer (WeCom did not do it) is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_through_call_is_not_repeated_once_it_may_have_taken_effect() {
    let fixture = fixture("").await;
    let reached = |api: &str| fixture.simulator.calls().iter().filter(|call| call.api == api).count();
    fixture.simulator.script("create_rule", vec![(500, b"<html>oops</html>".to_vec())]);
    let answer = call(&fixture.client, "invoke_create_rule", json!({"name": "r"})).await;
    assert_eq!(answer["errcode"], -1, "{answer}");
    assert_eq!(reached("create_rule"), 1, "not repeated after a 5xx");

    fixture.simulator.script("create_rule", vec![(200, br#"{"errcode":-1,"errmsg":"system busy"}"#.to_vec())]);
    let answer = call(&fixture.client, "invoke_create_rule", json!({"name": "r"})).await;
    assert_eq!(answer["errcode"], 0, "retried after busy: {answer}");
    assert_eq!(reached("create_rule"), 3);

    let huge = format!(r#"{{"errcode":0,"errmsg":"ok","members":"{}"}}"#, "x".repeat(33 << 20));
    fixture.simulator.script("get_group_chat", vec![(200, huge.into_bytes())]);
    let answer = call(&fixture.client, "invoke_get_group_chat", json!({"chatid": "wr1"})).await;
    assert_eq!(answer["errcode"], -1, "an answer over the cap is refused, not buffered");
    fixture.service.stop().await;
}
