//! The binary itself: exit codes, check-config, healthcheck, serve and graceful shutdown.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_wecom-zone");

fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command.args(args).current_dir(env!("CARGO_MANIFEST_DIR"));
    for (key, value) in envs {
        command.env(key, value);
    }
    command.output().unwrap()
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// The example config's sample values replaced by real-looking ones, by environment overrides.
const FILLED: [(&str, &str); 5] = [
    ("WECOM_ZONE__CORP__0__TOKEN", "orcBqyt1T5AlQzhk7Q2b"),
    ("WECOM_ZONE__CORP__0__ENCODING_AES_KEY", "ox9yimTcfipZGnzPbDFDyFKm51zfFoWbSrHAE56yUhQ"),
    ("WECOM_ZONE__CORP__0__SECRET", "kd8Vq2LmX0pR7sT4uW1yZ3aB5cE6fG9hJ"),
    ("WECOM_ZONE__CORP__0__PRIVATE_KEYS__0__VERSION", "1"),
    ("WECOM_ZONE__CORP__0__PRIVATE_KEYS__0__PATH", "tests/data/test_private_key_v1.pem"),
];

#[test]
fn check_config_prints_a_redacted_summary_of_a_filled_example() {
    let output = run(&["check-config", "--config", "config/wecom-zone.example.toml"], &FILLED);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let shown = text(&output);
    assert!(shown.contains("corp ww0123456789abcdef"), "{shown}");
    assert!(shown.contains("config ok"));
    for (_, secret) in &FILLED[..3] {
        assert!(!shown.contains(secret), "{secret} leaked: {shown}");
    }
}

#[test]
fn the_example_config_as_shipped_never_goes_live() {
    for command in ["check-config", "serve"] {
        let output = run(&[command, "--config", "config/wecom-zone.example.toml"], &[]);
        assert_eq!(output.status.code(), Some(2), "{command}: {}", text(&output));
        assert!(text(&output).contains("corp[0].token: is a published sample value"), "{}", text(&output));
        assert!(!text(&output).contains("QDG6eK"), "{}", text(&output));
    }
    let output = run(&["check-config", "--config", "config/wecom-zone.example.toml"], &FILLED[..2]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).contains("corp[0].secret: is a placeholder"), "{}", text(&output));
    let output = run(&["check-config", "--config", "config/wecom-zone.example.toml"], &FILLED[..3]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).contains("corp[0].private_keys: no private key"), "{}", text(&output));
}

#[test]
fn config_problems_exit_2_with_the_key_named() {
    let output = run(
        &["check-config", "--config", "config/wecom-zone.example.toml"],
        &[("WECOM_ZONE__CORP__0__ENCODING_AES_KEY", "too-short")],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).contains("corp[0].encoding_aes_key"), "{}", text(&output));
    assert!(!text(&output).contains("too-short"));

    let output = run(&["check-config", "--config", "/nonexistent/wecom-zone.toml"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).contains("cannot read config file"));

    let output = run(&["serve", "--config", "/nonexistent/wecom-zone.toml"], &[]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn usage_errors_exit_2_and_every_command_has_help() {
    assert_eq!(run(&["no-such-command"], &[]).status.code(), Some(2));
    assert_eq!(run(&["serve", "--bogus"], &[]).status.code(), Some(2));
    let commands: [&[&str]; 10] = [
        &["--help"],
        &["serve", "--help"],
        &["check-config", "--help"],
        &["healthcheck", "--help"],
        &["keygen", "--help"],
        &["bench", "--help"],
        &["bench", "ingest", "--help"],
        &["bench", "abilities", "--help"],
        &["demo", "--help"],
        &["call", "--help"],
    ];
    for command in commands {
        let output = run(command, &[]);
        assert_eq!(output.status.code(), Some(0), "{command:?}");
        assert!(text(&output).contains("Usage"), "{command:?}");
    }
}

/// `serve` on the filled example, on a free loopback port, with its store in `data`. Nothing
/// listens at the upstream: the start-up pull fails fast and is retried in the background.
fn serve_filled_example(
    data: &tempfile::TempDir,
    extra: &[(&str, &str)],
    stderr: Stdio,
) -> (String, std::process::Child) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let child = Command::new(BIN)
        .args(["serve", "--config", "config/wecom-zone.example.toml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .envs(FILLED)
        .envs(extra.iter().copied())
        .env("WECOM_ZONE__SERVER__LISTEN", &listen)
        .env("WECOM_ZONE__STORAGE__PATH", data.path().join("db.sqlite"))
        .env("WECOM_ZONE__UPSTREAM__BASE_URL", "http://127.0.0.1:9")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    (listen, child)
}

#[test]
fn serve_answers_health_checks_and_stops_cleanly_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let (listen, child) = serve_filled_example(&data, &[("WECOM_ZONE__LOG__FORMAT", "json")], Stdio::piped());
    let url = format!("http://{listen}/healthz");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if run(&["healthcheck", "--url", &url], &[]).status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "service never became healthy");
        std::thread::sleep(Duration::from_millis(100));
    }
    // `call` plays WeCom: signs, encrypts, sends, and prints the decrypted answer.
    let url = format!("http://{listen}/");
    let call = |args: &[&str]| {
        let mut full = vec!["call", "--config", "config/wecom-zone.example.toml", "--url", &url];
        full.extend_from_slice(args);
        run(&full, &FILLED)
    };
    let called = call(&["--ability", "ingest_status"]);
    assert_eq!(called.status.code(), Some(0), "{}", text(&called));
    let answer: serde_json::Value = serde_json::from_slice(&called.stdout).unwrap();
    assert_eq!(answer["errcode"], 0);
    assert_eq!(answer["corpid"], "ww0123456789abcdef");
    let unknown = call(&["--ability", "nope", "--xml"]);
    let answer: serde_json::Value = serde_json::from_slice(&unknown.stdout).unwrap();
    assert_eq!(answer["errcode"], 710636);
    let event = call(&["--classic-event", "change_contact"]);
    assert_eq!(String::from_utf8_lossy(&event.stdout).trim(), "success");
    let unhealthy = run(&["healthcheck", "--url", &format!("http://{listen}/nowhere")], &[]);
    assert_eq!(unhealthy.status.code(), Some(1));

    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let log = String::from_utf8_lossy(&output.stderr);
    let first_line: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(first_line["message"], "listening", "JSON log lines: {log}");
    for (_, secret) in &FILLED[..3] {
        assert!(!log.contains(secret), "{secret} leaked: {log}");
    }
}

#[test]
fn keygen_writes_a_pair_that_check_config_accepts_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("keys");
    let output = run(&["keygen", "--out", out.to_str().unwrap(), "--version", "3"], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let private = out.join("private_key_v3.pem");
    assert!(std::fs::read_to_string(out.join("public_key_v3.pem")).unwrap().starts_with("-----BEGIN PUBLIC KEY-----"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&private).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let again = run(&["keygen", "--out", out.to_str().unwrap(), "--version", "3"], &[]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again).contains("refusing to overwrite"));

    let config = dir.path().join("config.toml");
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/wecom-zone.example.toml")).unwrap();
    let with_key = example.replace(
        "private_keys = []",
        &format!("private_keys = [ {{ version = 3, path = {:?} }} ]", private.display().to_string()),
    );
    std::fs::write(&config, with_key).unwrap();
    let output = run(&["check-config", "--config", config.to_str().unwrap()], &FILLED[..3]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(text(&output).contains("private key v3: RSA-2048, valid"), "{}", text(&output));
    assert!(!text(&output).contains("BEGIN PRIVATE KEY"));

    std::fs::write(&private, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").unwrap();
    let output = run(&["check-config", "--config", config.to_str().unwrap()], &FILLED[..3]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).contains("private_keys: version 3"), "{}", text(&output));
}

#[test]
fn bench_ingest_prints_its_figure_last() {
    let output = run(&["bench", "ingest", "--messages", "300", "--page-limit", "100"], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap();
    assert!(last.starts_with("ingest: 300 messages in "), "{last}");
    assert!(last.ends_with(" msg/s"), "{last}");
}

#[test]
fn bench_ingest_of_the_classic_archive_prints_its_ratio_and_figure_last() {
    let output = run(&["bench", "ingest", "--archive", "finance_sdk", "--messages", "300", "--page-limit", "100"], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap();
    assert!(last.starts_with("ingest: 300 messages in "), "{last}");
    assert!(last.ends_with(" msg/s"), "{last}");
    assert!(stdout.contains("verified the content of"), "{stdout}");
    assert!(stdout.contains("peak RSS: the finance worker"), "{stdout}");
    assert!(stdout.contains("every message indexed and searchable"), "{stdout}");
}

#[test]
fn demo_runs_end_to_end_and_reports_what_it_stored() {
    let output = run(&["demo", "--messages", "300", "--exit", "--listen", "127.0.0.1:0"], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("records stored:         300"), "{stdout}");
    assert!(stdout.contains("decrypt failures:       0"), "{stdout}");
    assert!(stdout.contains("notify ids fetched:     2"), "{stdout}");
    assert!(stdout.contains("\"new_records\":300"), "{stdout}");
    assert!(stdout.contains("classic records:        120 (119 with content, 1 parked"), "{stdout}");
    assert!(stdout.contains("media fetched:          700000 bytes, md5 verified"), "{stdout}");
    assert!(stdout.contains("search_messages \"发票\""), "{stdout}");
    assert!(stdout.contains("<em>发票</em>"), "{stdout}");
    let data_dir = stdout.lines().find_map(|line| line.strip_prefix("  data folder:")).unwrap().trim().to_owned();
    assert!(std::path::Path::new(&data_dir).join("wecom-zone.sqlite").exists());
    search_and_reindex_the_demos_archive(&std::path::Path::new(&data_dir).join("wecom-zone.toml"));
    let _ = std::fs::remove_dir_all(data_dir);
}

/// `search` and `reindex` on the store and index the demo left behind.
fn search_and_reindex_the_demos_archive(config: &std::path::Path) {
    let config = config.to_str().unwrap();
    let search = |args: &[&str]| {
        let mut all = vec!["search", "--config", config];
        all.extend_from_slice(args);
        run(&all, &[])
    };
    let output = search(&["发票", "--limit", "3"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let before = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(before.contains("<em>发票</em>"), "{before}");
    assert!(before.lines().last().unwrap().starts_with("search: 3 hits for \"发票\""), "{before}");
    let output = search(&["发票", "NOT-IN-ANY-MESSAGE"]);
    assert!(String::from_utf8_lossy(&output.stdout).contains("search: 0 hits"), "{}", text(&output));

    let toml = std::fs::read_to_string(config).unwrap();
    let corps: Vec<&str> =
        toml.lines().filter_map(|line| line.strip_prefix("corp_id = ")).map(|id| id.trim_matches('"')).collect();
    let zone_corp = corps.iter().find(|corp| {
        toml.split(&format!("corp_id = \"{corp}\""))
            .nth(1)
            .is_some_and(|rest| !rest.split("[[corp]]").next().unwrap_or_default().contains("finance_sdk"))
    });
    let output = search(&["--corp", zone_corp.expect("the demo has a zone corp"), "发票"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("finance_sdk") && text(&output).contains("invoke_search_msg"), "{}", text(&output));
    assert_eq!(search(&["--since", "someday", "发票"]).status.code(), Some(2));

    let output = run(&["reindex", "--config", config], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("searchable messages indexed"), "{}", text(&output));
    let output = search(&["发票", "--limit", "3"]);
    let after = String::from_utf8_lossy(&output.stdout).into_owned();
    let hits =
        |out: &str| out.lines().filter(|line| !line.starts_with("search:")).map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(hits(&after), hits(&before), "a rebuilt index answers as the one it replaced");
}

#[test]
fn bench_search_prints_its_figure_last() {
    let output = run(&["bench", "search", "--messages", "3000"], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap();
    assert!(last.starts_with("search: 3000 messages, indexed at "), "{last}");
    assert!(last.contains(" msg/s, query p50 ") && last.contains(" ms p95 ") && last.ends_with(" ms"), "{last}");
    assert!(stdout.contains("LIKE scan of the same queries"), "{stdout}");
}

/// 2,000 slow clients (half trickling headers, half trickling a POST body) neither keep
/// `/healthz` from answering nor SIGTERM from ending the process within 10 s. Loopback only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_slow_clients_block_neither_health_nor_shutdown() {
    use tokio::io::AsyncWriteExt;
    let data = tempfile::tempdir().unwrap();
    let extra = [
        // Longer than the 10 s allowed for shutdown: in-flight requests must not hold it up.
        ("WECOM_ZONE__SERVER__REQUEST_TIMEOUT_MS", "60000"),
        // Shutdown is bounded by the grace, whatever the clients do; 3 s (default 5 s) leaves a
        // margin on a loaded CI machine.
        ("WECOM_ZONE__SERVER__SHUTDOWN_GRACE_MS", "3000"),
    ];
    let (listen, mut child) = serve_filled_example(&data, &extra, Stdio::null());
    let health = format!("http://{listen}/healthz");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.get(&health).send().await.is_err() {
        assert!(Instant::now() < deadline, "service never became healthy");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut sockets = Vec::new();
    for index in 0..2000 {
        let mut socket = tokio::net::TcpStream::connect(&listen).await.unwrap();
        let prefix: &[u8] = if index % 2 == 0 {
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "
        } else {
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n<xml>"
        };
        socket.write_all(prefix).await.unwrap();
        sockets.push(socket);
    }
    let trickling = tokio::spawn(async move {
        loop {
            for socket in &mut sockets {
                let _ = socket.write_all(b"a").await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let started = Instant::now();
    let answer = client.get(&health).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(2), "health took {:?}", started.elapsed());

    let terminated = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if terminated.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("still running 10 s after SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    trickling.abort();
    assert_eq!(status.code(), Some(0));
    eprintln!("exited {:?} after SIGTERM with 2,000 slow clients", terminated.elapsed());
}

#[test]
fn bench_abilities_times_every_reading_ability() {
    let output = run(&["bench", "abilities", "--records", "3000"], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    for shape in ["list_messages userid", "list_messages time window", "list_conversations userid", "ingest_status"] {
        assert!(stdout.contains(shape), "{shape} missing: {stdout}");
    }
    let last = stdout.lines().last().unwrap();
    assert!(last.starts_with("abilities: 3000 records, 11 shapes x 200 calls, worst p95 "), "{last}");
}
