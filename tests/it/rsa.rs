//! The RSA key ring against the chat-message vectors: the official example and two generated keys.

use base64::Engine;
use serde_json::Value;
use wecom_zone::crypto::{KeyError, KeyRing, PublicKeyEncryptor, RsaPadding, SecretKeyError, parse_private_key};

fn vectors() -> Value {
    serde_json::from_str(include_str!("../data/chatmsg.json")).unwrap()
}

fn ring(keys: &[(u32, &str)]) -> KeyRing {
    let mut ring = KeyRing::default();
    for (version, pem) in keys {
        ring.insert(*version, parse_private_key(pem).unwrap(), RsaPadding::Pkcs1).unwrap();
    }
    ring
}

#[test]
fn the_official_example_decrypts_with_the_demo_key() {
    let example = &vectors()["official_example"];
    let version = example["publickey_ver"].as_u64().unwrap() as u32;
    let ring = ring(&[(version, example["private_key_pem_pkcs1"].as_str().unwrap())]);
    let secret = ring.decrypt_secret_key(version, example["encrypt_random_key"].as_str().unwrap()).unwrap();
    assert_eq!(secret, example["expected_encrypt_key"].as_str().unwrap());
    assert_eq!(secret.len(), 88);
}

#[test]
fn both_pem_forms_decrypt_every_item_of_their_version_and_only_theirs() {
    let vectors = vectors();
    let generated = vectors["generated"].as_array().unwrap();
    for key in generated {
        let version = key["publickey_ver"].as_u64().unwrap() as u32;
        for form in ["private_key_pem_pkcs1", "private_key_pem_pkcs8"] {
            let ring = ring(&[(version, key[form].as_str().unwrap())]);
            for item in key["items"].as_array().unwrap() {
                let secret = ring.decrypt_secret_key(version, item["encrypt_random_key"].as_str().unwrap()).unwrap();
                assert_eq!(secret, item["expected_encrypt_key"].as_str().unwrap(), "v{version} {form}");
            }
        }
    }
    // The other version's key must not yield the right value.
    let (first, second) = (&generated[0], &generated[1]);
    let wrong = ring(&[(1, second["private_key_pem_pkcs8"].as_str().unwrap())]);
    for item in first["items"].as_array().unwrap() {
        let outcome = wrong.decrypt_secret_key(1, item["encrypt_random_key"].as_str().unwrap());
        assert_ne!(outcome.ok().as_deref(), item["expected_encrypt_key"].as_str());
    }
}

#[test]
fn keys_are_chosen_by_version_never_by_trial() {
    let vectors = vectors();
    let generated = vectors["generated"].as_array().unwrap();
    let ring = ring(&[(1, generated[0]["private_key_pem_pkcs8"].as_str().unwrap())]);
    let item_of_v2 = &generated[1]["items"][0];
    let outcome = ring.decrypt_secret_key(2, item_of_v2["encrypt_random_key"].as_str().unwrap());
    assert_eq!(outcome, Err(SecretKeyError::UnknownKeyVersion));
}

#[test]
fn headerless_base64_der_and_bad_keys() {
    let vectors = vectors();
    let pem = vectors["generated"][0]["private_key_pem_pkcs1"].as_str().unwrap();
    let body: String = pem.lines().filter(|line| !line.starts_with("-----")).collect();
    assert!(parse_private_key(&body).is_ok(), "header-less PKCS#1 base64");
    let pkcs8 = vectors["generated"][0]["private_key_pem_pkcs8"].as_str().unwrap();
    let body8: String = pkcs8.lines().filter(|line| !line.starts_with("-----")).collect();
    assert!(parse_private_key(&body8).is_ok(), "header-less PKCS#8 base64");
    assert_eq!(parse_private_key("not a key").err(), Some(KeyError::NotAKey));
    assert_eq!(
        parse_private_key("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----").err(),
        Some(KeyError::Encrypted)
    );
    let public = vectors["generated"][0]["public_key_pem_spki"].as_str().unwrap();
    assert!(matches!(parse_private_key(public), Err(KeyError::UnexpectedLabel(_))));
}

#[test]
fn failures_are_classified() {
    let vectors = vectors();
    let key = &vectors["generated"][0];
    let ring = ring(&[(1, key["private_key_pem_pkcs8"].as_str().unwrap())]);
    assert_eq!(ring.decrypt_secret_key(1, ""), Err(SecretKeyError::Missing));
    assert_eq!(ring.decrypt_secret_key(1, "***"), Err(SecretKeyError::BadBase64));
    let garbage = base64::engine::general_purpose::STANDARD.encode([7u8; 256]);
    assert_eq!(ring.decrypt_secret_key(1, &garbage), Err(SecretKeyError::BadCiphertext));
    let encryptor = PublicKeyEncryptor::from_pem(key["public_key_pem_spki"].as_str().unwrap()).unwrap();
    let not_utf8 = encryptor.encrypt_base64(&[0xff, 0xfe, 0x00]).unwrap();
    assert_eq!(ring.decrypt_secret_key(1, &not_utf8), Err(SecretKeyError::NotUtf8));
    let round_trip = encryptor.encrypt_base64(b"opaque-secret").unwrap();
    assert_eq!(ring.decrypt_secret_key(1, &round_trip).unwrap(), "opaque-secret");
}
