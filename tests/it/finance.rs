//! The finance SDK worker through its supervisor: the stand-in SDK's answers and misbehaviour,
//! and the real SDK's known-answer chain when it has been fetched (scripts/fetch-finance-sdk.sh).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use serde_json::Value;
use wecom_zone::background::Backoff;
use wecom_zone::crypto::{KeyRing, RsaPadding, parse_private_key};
use wecom_zone::finance::{DecryptItem, Decrypted, Supervisor, WorkerCorp, WorkerSettings};
use wecom_zone::metrics::Metrics;
use wecom_zone::simulator::SplitMix;
use wecom_zone::simulator::stub_sdk;

fn settings(library: PathBuf, deadline: Duration) -> WorkerSettings {
    WorkerSettings {
        program: PathBuf::from(env!("CARGO_BIN_EXE_wecom-zone")),
        library,
        call_deadline: deadline,
        respawn: Backoff { base: Duration::from_millis(10), max: Duration::from_millis(100) },
        proxy: String::new(),
        proxy_password: SecretString::from(String::new()),
        timeout_s: 5,
    }
}

fn item(key: &str, encrypt_chat_msg: &str) -> DecryptItem {
    DecryptItem { key: key.to_owned(), encrypt_chat_msg: encrypt_chat_msg.to_owned() }
}

fn losses(metrics: &Metrics) -> u64 {
    metrics
        .render()
        .lines()
        .filter(|line| line.starts_with("wecom_zone_finance_worker_losses_total"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stub_sdk_decrypts_refuses_and_its_crashers_cost_only_workers() {
    let dir = tempfile::tempdir().unwrap();
    let library = stub_sdk::install(dir.path()).unwrap();
    let metrics = Arc::new(Metrics::new());
    let corps = vec![WorkerCorp { corp_id: "wwstub".into(), secret: SecretString::from("archive-secret".to_owned()) }];
    let supervisor = Supervisor::new(settings(library, Duration::from_millis(700)), corps, Arc::clone(&metrics));
    let mut random = SplitMix::new(5);
    let key = stub_sdk::random_encrypt_key(&mut random);
    let other_key = stub_sdk::random_encrypt_key(&mut random);
    let sealed = |text: &str| stub_sdk::seal(&key, text.as_bytes());
    let items = vec![
        item(&key, &sealed(r#"{"msgid":"a"}"#)),
        item(&other_key, &sealed(r#"{"msgid":"b"}"#)),
        item("not a key", &sealed(r#"{"msgid":"c"}"#)),
        item(&key, "!SEGV"),
        item(&key, &sealed(r#"{"msgid":"d"}"#)),
        item(&key, "AAAA"),
        item(&key, "!HANG"),
        item(&key, "!RC:10001"),
        item(&key, ""),
        item(&key, &sealed("")),
        item(&key, &sealed(r#"{"msgid":"e"}"#)),
    ];
    let answers = supervisor.decrypt(&items).await.unwrap();
    let plaintext = |text: &str| Decrypted::Plaintext(text.as_bytes().to_vec());
    assert_eq!(
        answers,
        vec![
            plaintext(r#"{"msgid":"a"}"#),
            Decrypted::Sdk(10006),
            Decrypted::Sdk(10008),
            Decrypted::Crashed,
            plaintext(r#"{"msgid":"d"}"#),
            Decrypted::Crashed,
            Decrypted::Crashed,
            Decrypted::Sdk(10001),
            Decrypted::Crashed,
            Decrypted::Sdk(10006),
            plaintext(r#"{"msgid":"e"}"#),
        ]
    );
    assert_eq!(losses(&metrics), 8, "each of the four crashers cost two workers, nothing else did");
    assert_eq!(supervisor.live_allocations().await.unwrap(), Some(0), "every Slice_t was freed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_library_that_cannot_be_loaded_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("libWeWorkFinanceSdk_C.so");
    let supervisor = Supervisor::new(settings(missing, Duration::from_secs(5)), Vec::new(), Arc::new(Metrics::new()));
    let error = supervisor.decrypt(&[item("k", "m")]).await.unwrap_err();
    assert!(error.to_string().contains("cannot load the finance SDK library"), "{error}");
}

/// Where scripts/fetch-finance-sdk.sh puts the official library.
fn real_sdk() -> Option<PathBuf> {
    let path = std::env::var_os("WECOM_ZONE_FINANCE_SDK").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("vendor/finance-sdk/libWeWorkFinanceSdk_C.so")
    });
    path.exists().then_some(path)
}

/// The official SDK's documented example, end to end through the same worker: RSA with the demo
/// key gives encrypt_key, DecryptData gives the plaintext; the two inputs that abort the real
/// library cost one worker each (twice, then parked), not this process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_sdk_answers_the_official_known_answer_chain_and_its_aborts_are_contained() {
    let Some(library) = real_sdk() else {
        assert!(
            std::env::var_os("WECOM_ZONE_REQUIRE_REAL_SDK").is_none(),
            "WECOM_ZONE_REQUIRE_REAL_SDK is set but the official SDK is absent: run scripts/fetch-finance-sdk.sh"
        );
        eprintln!(
            "SKIPPED: the official finance SDK is absent (run scripts/fetch-finance-sdk.sh, or set \
             WECOM_ZONE_FINANCE_SDK); the real-SDK known-answer test did not run"
        );
        return;
    };
    let vectors: Value = serde_json::from_str(include_str!("../data/finance_sdk.json")).unwrap();
    let chat: Value = serde_json::from_str(include_str!("../data/chatmsg.json")).unwrap();
    let example = &vectors["official_example"];
    let version = example["publickey_ver"].as_u64().unwrap() as u32;
    let mut ring = KeyRing::default();
    let pem = chat["official_example"]["private_key_pem_pkcs1"].as_str().unwrap();
    ring.insert(version, parse_private_key(pem).unwrap(), RsaPadding::Pkcs1).unwrap();
    let encrypt_key = ring.decrypt_secret_key(version, example["encrypt_random_key"].as_str().unwrap()).unwrap();
    assert_eq!(encrypt_key, example["encrypt_key"].as_str().unwrap());

    let metrics = Arc::new(Metrics::new());
    let supervisor = Supervisor::new(settings(library, Duration::from_secs(10)), Vec::new(), Arc::clone(&metrics));
    let message = example["encrypt_chat_msg"].as_str().unwrap();
    let answers = supervisor
        .decrypt(&[
            item(&encrypt_key, message),
            item(&encrypt_key, "AAAA"),
            item(&encrypt_key, ""),
            item(&encrypt_key, message),
        ])
        .await
        .unwrap();
    let expected = Decrypted::Plaintext(example["plaintext"].as_str().unwrap().as_bytes().to_vec());
    assert_eq!(answers, vec![expected.clone(), Decrypted::Crashed, Decrypted::Crashed, expected]);
    assert_eq!(losses(&metrics), 4, "each aborting input cost two workers");
    let Decrypted::Plaintext(plaintext) = &answers[0] else { unreachable!() };
    let validated = wecom_zone::finance::content::validate(example["msgid"].as_str().unwrap(), plaintext).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&validated.content).unwrap()["text"]["content"], "666");
}
