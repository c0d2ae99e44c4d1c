use super::*;

const MINIMAL: &str = r#"
[[corp]]
corp_id = "ww0123456789abcdef"
agent_id = 1000002
secret = "app-secret-value"
token = "orcBqyt1T5AlQzhk7Q2b"
encoding_aes_key = "ox9yimTcfipZGnzPbDFDyFKm51zfFoWbSrHAE56yUhQ"
private_keys = [ { version = 1, path = "tests/data/test_private_key_v1.pem" } ]
"#;

fn load(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, vars.iter().map(|(k, v)| (k.to_string(), v.to_string())), None)
}

fn error_of(text: &str, vars: &[(&str, &str)]) -> String {
    load(text, vars).unwrap_err().to_string()
}

#[test]
fn defaults_follow_the_contract() {
    let config = load(MINIMAL, &[]).unwrap();
    assert_eq!(config.server.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(config.server.body_limit_bytes, 1_048_576);
    assert_eq!(config.server.max_clock_skew, Some(Duration::from_secs(300)));
    assert_eq!(config.storage.path, PathBuf::from("data/wecom-zone.sqlite"));
    assert_eq!(config.upstream.base_url, "https://qyapi.weixin.qq.com");
    assert_eq!(config.mailbox.ttl, Duration::from_secs(86_400));
    assert_eq!(config.corps[0].agent_id, Some(1_000_002));
}

const EXAMPLE: &str = include_str!("../../config/wecom-zone.example.toml");

#[test]
fn the_example_file_is_refused_until_its_samples_are_replaced() {
    let error = error_of(EXAMPLE, &[]);
    assert!(error.starts_with("corp[0].token:") && error.contains("published sample"), "{error}");
    let filled = [
        ("WECOM_ZONE__CORP__0__TOKEN", "orcBqyt1T5AlQzhk7Q2b"),
        ("WECOM_ZONE__CORP__0__ENCODING_AES_KEY", "ox9yimTcfipZGnzPbDFDyFKm51zfFoWbSrHAE56yUhQ"),
        ("WECOM_ZONE__CORP__0__SECRET", "kd8Vq2LmX0pR7sT4uW1yZ3aB5cE6fG9hJ"),
    ];
    let error = error_of(EXAMPLE, &filled);
    assert!(error.starts_with("corp[0].private_keys:") && error.contains("no private key"), "{error}");
    let text = EXAMPLE.replace(
        "private_keys = []",
        r#"private_keys = [ { version = 1, path = "tests/data/test_private_key_v1.pem" } ]"#,
    );
    let config = load(&text, &filled).expect("the example with real values loads");
    assert_eq!(config.corps.len(), 1);
}

#[test]
fn published_samples_and_placeholders_are_refused_naming_the_key() {
    let sample_key = serde_json::from_str::<serde_json::Value>(include_str!("../../tests/data/chatmsg.json")).unwrap()
        ["official_example"]["private_key_pem_pkcs1"]
        .as_str()
        .unwrap()
        .to_owned();
    let cases = [
        ("WECOM_ZONE__CORP__0__TOKEN", "QDG6eK", "corp[0].token"),
        ("WECOM_ZONE__CORP__0__TOKEN", "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo", "corp[0].token"),
        (
            "WECOM_ZONE__CORP__0__ENCODING_AES_KEY",
            "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C",
            "corp[0].encoding_aes_key",
        ),
        (
            "WECOM_ZONE__CORP__0__ENCODING_AES_KEY",
            "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt",
            "corp[0].encoding_aes_key",
        ),
        ("WECOM_ZONE__CORP__0__SECRET", "replace-with-the-app-secret", "corp[0].secret"),
        ("WECOM_ZONE__CORP__0__SECRET", "<your secret>", "corp[0].secret"),
        ("WECOM_ZONE__CORP__0__PRIVATE_KEYS__0__PEM", sample_key.as_str(), "corp[0].private_keys[0]"),
    ];
    for (variable, value, key) in cases {
        let text = MINIMAL.replace(r#"path = "tests/data/test_private_key_v1.pem""#, r#"pem = "placeholder""#);
        let text = if variable.ends_with("PEM") { text } else { MINIMAL.to_owned() };
        let error = error_of(&text, &[(variable, value)]);
        assert!(error.starts_with(&format!("{key}:")), "{value}: {error}");
        assert!(!error.contains(value), "the value is not repeated: {error}");
    }
}

#[test]
fn environment_overrides_sections_and_corps() {
    let config = load(
        MINIMAL,
        &[
            ("WECOM_ZONE__SERVER__LISTEN", "127.0.0.1:9999"),
            ("WECOM_ZONE__SERVER__MAX_CLOCK_SKEW_S", "0"),
            ("WECOM_ZONE__CORP__ww0123456789abcdef__TOKEN", "OtherToken1"),
        ],
    )
    .unwrap();
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:9999");
    assert_eq!(config.server.max_clock_skew, None, "0 disables the check");
    assert_eq!(config.corps[0].token.expose(), "OtherToken1");
}

#[test]
fn secrets_come_from_files_and_named_variables() {
    let dir = tempfile::tempdir().unwrap();
    let secret_path = dir.path().join("app_secret");
    std::fs::write(&secret_path, "from-file\n").unwrap();
    let text = format!(
        "[[corp]]\ncorp_id = \"ww1\"\nsecret_file = {:?}\ntoken_env = \"MY_TOKEN\"\n\
         encoding_aes_key = \"ox9yimTcfipZGnzPbDFDyFKm51zfFoWbSrHAE56yUhQ\"\n\
         private_keys = [ {{ version = 1, path = \"tests/data/test_private_key_v1.pem\" }} ]\n",
        secret_path.display().to_string()
    );
    let config = load(&text, &[("MY_TOKEN", "tok3n")]).unwrap();
    assert_eq!(config.corps[0].secret.as_ref().unwrap().expose(), "from-file");
    assert_eq!(config.corps[0].token.expose(), "tok3n");
    assert!(error_of(&text, &[]).contains("MY_TOKEN is not set"));
}

#[test]
fn secrets_never_appear_in_debug_or_summary() {
    let config = load(MINIMAL, &[]).unwrap();
    let shown = format!("{config:?}\n{}", config.summary());
    for secret in ["app-secret-value", "orcBqyt1T5AlQzhk7Q2b", "ox9yimTcfipZGnzPbDFDyFKm51zfFoWbSrHAE56yUhQ"] {
        assert!(!shown.contains(secret), "{secret} leaked");
    }
    assert!(shown.contains("ww0123456789abcdef"));
}

#[test]
fn problems_are_reported_with_their_key() {
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "no [[corp]]"),
        (MINIMAL.replace("yUhQ", "yUh"), "corp[0].encoding_aes_key"),
        (MINIMAL.replace("orcBqyt1T5AlQzhk7Q2b", "bad token!"), "corp[0].token"),
        (MINIMAL.replace("secret = \"app-secret-value\"", ""), "corp[0].secret: is required"),
        (format!("{MINIMAL}\n[server]\nlisten = \"nowhere\""), "server.listen"),
        (format!("{MINIMAL}\n[server]\nbody_limit_bytes = \"lots\""), "server.body_limit_bytes"),
        (format!("{MINIMAL}\n[server]\nlisen = \"0.0.0.0:1\""), "lisen"),
        (format!("{MINIMAL}\n[log]\nformat = \"xml\""), "log.format"),
        (format!("{MINIMAL}\n[upstream]\nbase_url = \"ftp://x\""), "upstream.base_url"),
        (format!("{MINIMAL}{}", MINIMAL), "configured twice"),
        ("not toml [".to_owned(), "not valid TOML"),
    ];
    for (text, expected) in cases {
        let message = error_of(&text, &[]);
        assert!(message.contains(expected), "expected {expected:?} in {message:?}");
        assert!(!message.contains("app-secret-value"));
    }
}

#[test]
fn two_corps_may_share_neither_callback_keys_nor_a_receive_id() {
    let second = |corp_id: &str, token: &str, receive_ids: &str| {
        format!(
            "{MINIMAL}\n[[corp]]\ncorp_id = \"{corp_id}\"\nsecret = \"s2\"\ntoken = \"{token}\"\n\
             encoding_aes_key = \"qg0eyN1ygQdvpSfF5PH5nLZjMeI8cFSmj83LDUL4CsJ\"\nreceive_ids = [{receive_ids}]\n\
             private_keys = [ {{ version = 1, path = \"tests/data/test_private_key_v1.pem\" }} ]\n"
        )
    };
    assert!(load(&second("wwsecond", "OtherToken", ""), &[]).is_ok(), "distinct corps are fine");
    let same_keys = MINIMAL.replace("ww0123456789abcdef", "wwsecond");
    let error = error_of(&format!("{MINIMAL}{same_keys}"), &[]);
    assert!(error.starts_with("corp[1].token:") && error.contains("same token and encoding_aes_key"), "{error}");
    let error = error_of(&second("wwsecond", "OtherToken", "\"ww0123456789abcdef\""), &[]);
    assert!(error.starts_with("corp[1].receive_ids:"), "{error}");
    assert!(
        !error.contains("app-secret-value") && !error.contains("orcBqyt1T5AlQzhk7Q2b"),
        "no secret in the message: {error}"
    );
}

#[test]
fn a_secret_of_the_wrong_type_is_refused_without_its_value() {
    let text = MINIMAL.replace("token = \"orcBqyt1T5AlQzhk7Q2b\"", "token = 123456");
    let error = error_of(&text, &[]);
    assert!(error.starts_with("corp[0].token:") || error.contains("token"), "{error}");
    assert!(!error.contains("123456"), "the value is not repeated: {error}");
}

#[test]
fn plain_http_upstream_is_allowed_only_to_loopback() {
    let with = |url: &str| load(&format!("[upstream]\nbase_url = \"{url}\"\n{MINIMAL}"), &[]);
    for allowed in ["https://qyapi.weixin.qq.com", "http://127.0.0.1:9000", "http://localhost:1", "http://[::1]:8"] {
        assert!(with(allowed).is_ok(), "{allowed}");
    }
    for refused in ["http://qyapi.weixin.qq.com", "http://10.0.0.5:8080", "http://127.0.0.1.example.com"] {
        let error = with(refused).unwrap_err().to_string();
        assert!(error.starts_with("upstream.base_url:") && error.contains("https"), "{refused}: {error}");
    }
}
