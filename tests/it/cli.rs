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

#[test]
fn check_config_prints_a_redacted_summary_of_the_example() {
    let output = run(&["check-config", "--config", "config/wecom-zone.example.toml"], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let shown = text(&output);
    assert!(shown.contains("corp ww0123456789abcdef"), "{shown}");
    assert!(shown.contains("config ok"));
    for secret in ["replace-with-the-app-secret", "QDG6eK", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"] {
        assert!(!shown.contains(secret), "{secret} leaked: {shown}");
    }
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
    for command in [&["--help"][..], &["serve", "--help"], &["check-config", "--help"], &["healthcheck", "--help"]] {
        let output = run(command, &[]);
        assert_eq!(output.status.code(), Some(0), "{command:?}");
        assert!(text(&output).contains("Usage"), "{command:?}");
    }
}

#[test]
fn serve_answers_health_checks_and_stops_cleanly_on_sigterm() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let child = Command::new(BIN)
        .args(["serve", "--config", "config/wecom-zone.example.toml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("WECOM_ZONE__SERVER__LISTEN", &listen)
        .env("WECOM_ZONE__LOG__FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let url = format!("http://{listen}/healthz");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if run(&["healthcheck", "--url", &url], &[]).status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "service never became healthy");
        std::thread::sleep(Duration::from_millis(100));
    }
    let unhealthy = run(&["healthcheck", "--url", &format!("http://{listen}/nowhere")], &[]);
    assert_eq!(unhealthy.status.code(), Some(1));

    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let log = String::from_utf8_lossy(&output.stderr);
    let first_line: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(first_line["message"], "listening", "JSON log lines: {log}");
    assert!(!log.contains("QDG6eK") && !log.contains("replace-with-the-app-secret"));
}
