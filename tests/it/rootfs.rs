//! The zone upload: `scripts/build-zone-rootfs.sh` builds the root filesystem tar, which is
//! unpacked into a temporary folder and run there with `chroot` as the zone would: the binary and
//! the packed config as uid 10001, then `/app/start.sh` serving on loopback until SIGTERM.
//!
//! It needs root (chroot, ownership), mmdebstrap and Debian's mirror, and takes minutes (a release
//! build, a Debian tree), so it is ignored by a plain `cargo test` and run on its own by `.ci/run`
//! (`cargo test --test it rootfs -- --ignored`), after `.ci/run` installed mmdebstrap. Where the
//! machine cannot run it, it says why and skips, unless `WECOM_ZONE_REQUIRE_ROOTFS` is set (as
//! `.ci/run` does): then it fails.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wecom_zone::crypto::WxBizMsgCrypt;

use crate::ingest::vector_keys;

const CORP: &str = "wwrootfstest00001";
const TOKEN: &str = "rootfsToken42";

/// Why this machine cannot run the test, if it cannot.
fn missing() -> Option<String> {
    if !nix_is_root() {
        return Some("not running as root (chroot and file ownership need it)".into());
    }
    for tool in ["mmdebstrap", "chroot", "tar"] {
        let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output();
        if !found.is_ok_and(|output| output.status.success()) {
            return Some(format!("{tool} is not installed (apt-get install mmdebstrap coreutils tar)"));
        }
    }
    None
}

fn nix_is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

fn config_text() -> String {
    let (_, private, _) = vector_keys().remove(0);
    format!(
        r#"
[server]
listen = "0.0.0.0:8080"
[storage]
path = "/app/data/wecom-zone.sqlite"
[upstream]
base_url = "http://127.0.0.1:9"
[ingest]
poll_interval_s = 0
[[corp]]
corp_id = "{CORP}"
secret = "rootfsSecret0123456789"
token = "{TOKEN}"
encoding_aes_key = "{aes}"
private_keys = [ {{ version = 1, pem = """{private}""" }} ]
"#,
        aes = crate::helpers::AES_KEY
    )
}

/// `chroot ROOT …` with an empty environment (the zone may give none).
fn chroot(root: &Path, user: Option<&str>) -> Command {
    let found = Command::new("sh").args(["-c", "command -v chroot"]).output().unwrap();
    let mut command = Command::new(String::from_utf8_lossy(&found.stdout).trim());
    if let Some(user) = user {
        command.arg(format!("--userspec={user}"));
    }
    command.arg(root);
    command.env_clear();
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "builds a Debian rootfs with a release build (minutes): .ci/run runs it on its own"]
async fn the_rootfs_tar_runs_the_service_as_the_zone_would() {
    if let Some(why) = missing() {
        assert!(std::env::var_os("WECOM_ZONE_REQUIRE_ROOTFS").is_none(), "the rootfs test is required, but {why}");
        println!("SKIPPED: the zone rootfs test needs root, mmdebstrap and chroot: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("zone.toml");
    std::fs::write(&config, config_text()).unwrap();
    let tar = dir.path().join("rootfs.tar");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/build-zone-rootfs.sh");
    let output = Command::new(script)
        .args(["--config", config.to_str().unwrap(), "--out", tar.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("start command /app/start.sh"), "{stdout}");
    println!("{}", stdout.lines().rev().take(2).collect::<Vec<_>>().join("\n"));

    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let unpacked = Command::new("tar").args(["-xf", tar.to_str().unwrap(), "-C", root.to_str().unwrap()]).status();
    assert!(unpacked.unwrap().success());
    let meta = std::fs::metadata(root.join("app/config/wecom-zone.toml")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.uid(), meta.mode() & 0o777), (10001, 0o600), "the config is the service user's alone");

    let version = chroot(&root, Some("10001:10001")).args(["/usr/local/bin/wecom-zone", "--version"]).output().unwrap();
    assert!(version.status.success(), "{}", String::from_utf8_lossy(&version.stderr));
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("wecom-zone "));
    let checked = chroot(&root, Some("10001:10001"))
        .args(["/usr/local/bin/wecom-zone", "check-config", "--config", "/app/config/wecom-zone.toml"])
        .output()
        .unwrap();
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stderr));
    assert!(String::from_utf8_lossy(&checked.stdout).contains("config ok"));

    // The start command, as root and with no environment but the listen address: it becomes
    // uid 10001 and serves.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut service = chroot(&root, None)
        .env("WECOM_ZONE__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .arg("/app/start.sh")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::get(format!("{base}/healthz")).await.is_err() {
        assert!(Instant::now() < deadline, "start.sh never served /healthz");
        assert!(service.try_wait().unwrap().is_none(), "start.sh exited");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", service.id())).unwrap();
    let uid_line = status.lines().find(|line| line.starts_with("Uid:")).unwrap();
    assert!(uid_line.split_whitespace().skip(1).all(|uid| uid == "10001"), "root was dropped: {uid_line}");

    let crypto = WxBizMsgCrypt::new(TOKEN, crate::helpers::AES_KEY).unwrap();
    let echostr = crypto.encrypt([3; 16], b"zone-echo-1234", CORP.as_bytes());
    let (timestamp, nonce) = (wecom_zone::domain::unix_now().to_string(), "n0nce");
    let signature = crypto.signature(&timestamp, nonce, &echostr);
    let url = format!(
        "{base}/?msg_signature={signature}&timestamp={timestamp}&nonce={nonce}&echostr={}",
        percent_encoding::utf8_percent_encode(&echostr, percent_encoding::NON_ALPHANUMERIC)
    );
    let answer = reqwest::get(url).await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.unwrap(), "zone-echo-1234", "a signed URL verification is answered");

    let term = Command::new("kill").args(["-TERM", &service.id().to_string()]).status().unwrap();
    assert!(term.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = service.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "the service did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "stopped cleanly: {exit:?}");
    let store = std::fs::metadata(root.join("app/data/wecom-zone.sqlite")).unwrap();
    assert_eq!(store.uid(), 10001, "the store was created by the service user");
}
