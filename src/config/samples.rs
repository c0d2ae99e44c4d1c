//! Values that must never go live: WeCom's published sample credentials, which anyone can use to
//! forge callbacks, and the placeholders an example config carries. A copied example config is
//! refused at start-up rather than served.

/// Callback Tokens from WeCom's WXBizMsgCrypt samples and the wechatpy tests.
const SAMPLE_TOKENS: &[&str] = &["QDG6eK", "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo", "spamtest", "123456"];

/// EncodingAESKeys from the same samples.
const SAMPLE_AES_KEYS: &[&str] = &[
    "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C",
    "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt",
    "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR",
    "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
];

/// Public-key fingerprints (see `crypto::public_key_fingerprint`) of published private keys: the
/// demo key of sample corp `wwd08c8e7c775ab44d` that circulates with the chat-archive docs.
const SAMPLE_KEY_FINGERPRINTS: &[&str] = &["7a6bfdb1ee6c7e6429bbf247567ee83020d19a5406eefbb12857a1e454d8d10d"];

/// Whole values that are placeholders, compared case-insensitively.
const PLACEHOLDERS: &[&str] =
    &["secret", "app_secret", "appsecret", "password", "changeme", "todo", "tbd", "none", "null", "test", "xxx"];

/// Fragments that only a placeholder contains. Long enough that a random secret of WeCom's
/// 43-character alphabet practically never holds one.
const PLACEHOLDER_FRAGMENTS: &[&str] =
    &["replace", "placeholder", "example", "your-", "your_", "change-me", "change_me", "changeme", "...", "<", ">"];

pub fn is_sample_token(token: &str) -> bool {
    SAMPLE_TOKENS.contains(&token)
}

pub fn is_sample_aes_key(key: &str) -> bool {
    SAMPLE_AES_KEYS.contains(&key)
}

pub fn is_sample_private_key(fingerprint: &str) -> bool {
    SAMPLE_KEY_FINGERPRINTS.contains(&fingerprint)
}

/// A value nobody would choose as a real secret: a known placeholder, a text that says it is one
/// (`replace-with-…`, `<secret>`, `...`), or one character repeated.
pub fn is_placeholder(value: &str) -> bool {
    let lower = value.trim().to_ascii_lowercase();
    let mut chars = lower.chars();
    let repeated = chars.next().is_some_and(|first| chars.all(|c| c == first));
    repeated
        || PLACEHOLDERS.contains(&lower.as_str())
        || PLACEHOLDER_FRAGMENTS.iter().any(|fragment| lower.contains(fragment))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_recognised_and_random_secrets_are_not() {
        for value in
            ["replace-with-the-app-secret", "<secret>", "...", "xxxxxxxx", "YOUR_SECRET", "changeme", "Example"]
        {
            assert!(is_placeholder(value), "{value}");
        }
        for value in ["kd8Vq2LmX0pR7sT4uW1yZ3aB5cE6fG9hJ", "app-secret-value", "a1"] {
            assert!(!is_placeholder(value), "{value}");
        }
    }

    #[test]
    fn the_published_demo_key_is_recognised_by_its_fingerprint() {
        let vectors: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/data/chatmsg.json")).expect("vector file");
        let pem = vectors["official_example"]["private_key_pem_pkcs1"].as_str().expect("sample key");
        let key = crate::crypto::parse_private_key(pem).expect("parses");
        assert!(is_sample_private_key(&crate::crypto::public_key_fingerprint(&key).unwrap()));
        let (fresh, _) = crate::crypto::generate_key_pair_pem().unwrap();
        let fresh = crate::crypto::parse_private_key(&fresh).unwrap();
        assert!(!is_sample_private_key(&crate::crypto::public_key_fingerprint(&fresh).unwrap()));
    }
}
