//! WXBizMsgCrypt against every published vector, plus round-trip and never-panics properties.

use proptest::prelude::*;
use serde::Deserialize;
use wecom_zone::crypto::{CryptoError, Envelope, EnvelopeFormat, SealedReply, WxBizMsgCrypt};

#[derive(Deserialize)]
struct VectorFile {
    vectors: Vec<Vector>,
}

#[derive(Deserialize)]
struct Vector {
    id: String,
    kind: String,
    token: String,
    encoding_aes_key: String,
    receive_id: String,
    timestamp: String,
    nonce: String,
    msg_signature: String,
    encrypt: String,
    plaintext: String,
    post_body: Option<String>,
    random_prefix: Option<String>,
}

fn vectors() -> Vec<Vector> {
    let file: VectorFile = serde_json::from_str(include_str!("../data/wxbizmsgcrypt.json")).unwrap();
    assert_eq!(file.vectors.len(), 10, "all ten published vectors are present");
    file.vectors
}

fn crypto_of(vector: &Vector) -> WxBizMsgCrypt {
    WxBizMsgCrypt::new(&vector.token, &vector.encoding_aes_key).unwrap()
}

#[test]
fn every_vector_signature_matches() {
    for vector in vectors() {
        let crypto = crypto_of(&vector);
        assert_eq!(
            crypto.signature(&vector.timestamp, &vector.nonce, &vector.encrypt),
            vector.msg_signature,
            "{}",
            vector.id
        );
        crypto.verify_signature(&vector.msg_signature, &vector.timestamp, &vector.nonce, &vector.encrypt).unwrap();
        let wrong_nonce = format!("{}0", vector.nonce);
        assert_eq!(
            crypto.verify_signature(&vector.msg_signature, &vector.timestamp, &wrong_nonce, &vector.encrypt),
            Err(CryptoError::ValidateSignature),
            "{}",
            vector.id
        );
    }
}

#[test]
fn every_vector_decrypts_to_its_plaintext_and_receive_id() {
    for vector in vectors() {
        let crypto = crypto_of(&vector);
        let msg = crypto
            .open(&vector.msg_signature, &vector.timestamp, &vector.nonce, &vector.encrypt, |id| {
                id == vector.receive_id.as_bytes()
            })
            .unwrap_or_else(|error| panic!("{}: {error}", vector.id));
        assert_eq!(String::from_utf8(msg).unwrap(), vector.plaintext, "{}", vector.id);
        let wrong_receiver =
            crypto.open(&vector.msg_signature, &vector.timestamp, &vector.nonce, &vector.encrypt, |_| false);
        assert_eq!(wrong_receiver, Err(CryptoError::ValidateReceiveId), "{}", vector.id);
    }
}

#[test]
fn url_verification_vectors_answer_the_echostr() {
    let verify: Vec<_> = vectors().into_iter().filter(|v| v.kind == "verify_url").collect();
    assert_eq!(verify.len(), 3);
    for vector in verify {
        let (msg, receive_id) = crypto_of(&vector).decrypt(&vector.encrypt).unwrap();
        assert_eq!(msg, vector.plaintext.as_bytes(), "{}", vector.id);
        assert_eq!(receive_id, vector.receive_id.as_bytes(), "{}", vector.id);
    }
}

#[test]
fn post_bodies_parse_as_xml_and_json_envelopes() {
    let mut formats = Vec::new();
    for vector in vectors() {
        let Some(body) = &vector.post_body else { continue };
        let envelope = Envelope::parse(body.as_bytes()).unwrap_or_else(|error| panic!("{}: {error}", vector.id));
        assert_eq!(envelope.encrypt, vector.encrypt, "{}", vector.id);
        let expected = if vector.kind == "decrypt_json" { EnvelopeFormat::Json } else { EnvelopeFormat::Xml };
        assert_eq!(envelope.format, expected, "{}", vector.id);
        formats.push(envelope.format);
    }
    assert!(formats.contains(&EnvelopeFormat::Xml) && formats.contains(&EnvelopeFormat::Json));
}

#[test]
fn deterministic_encryption_reproduces_the_vector() {
    let vector = vectors().into_iter().find(|v| v.kind == "encrypt").unwrap();
    let random: [u8; 16] = vector.random_prefix.as_ref().unwrap().as_bytes().try_into().unwrap();
    let crypto = crypto_of(&vector);
    let sealed = crypto.seal(
        random,
        vector.plaintext.as_bytes(),
        vector.receive_id.as_bytes(),
        &vector.timestamp,
        &vector.nonce,
    );
    assert_eq!(sealed.encrypt, vector.encrypt);
    assert_eq!(sealed.msg_signature, vector.msg_signature);
}

#[test]
fn replies_render_and_parse_back_in_both_formats() {
    let vector = vectors().into_iter().find(|v| v.kind == "encrypt").unwrap();
    let crypto = crypto_of(&vector);
    let sealed = crypto.seal([7; 16], b"{\"errcode\":0}", b"ww1", "1411525903", "461056294");
    let xml = sealed.to_xml();
    assert!(xml.starts_with("<xml><Encrypt><![CDATA["), "{xml}");
    assert!(xml.contains("<TimeStamp>1411525903</TimeStamp>"));
    let json: serde_json::Value = serde_json::from_str(&sealed.to_json()).unwrap();
    assert_eq!(json["msgsignature"], sealed.msg_signature.as_str());
    assert_eq!(json["timestamp"], "1411525903");
    for body in [xml, sealed.to_json()] {
        assert_eq!(SealedReply::parse(body.as_bytes()).unwrap(), sealed);
    }
}

#[test]
fn malformed_keys_are_illegal_aes_keys() {
    for key in
        ["", "short", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C=", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2!"]
    {
        let error = WxBizMsgCrypt::new("t", key).unwrap_err();
        assert_eq!(error.code(), -40004, "{key:?}");
    }
}

#[test]
fn broken_ciphertexts_fail_with_their_codes() {
    let crypto = WxBizMsgCrypt::new("t", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C").unwrap();
    assert_eq!(crypto.decrypt("not base64 !").unwrap_err().code(), -40010);
    assert_eq!(crypto.decrypt("").unwrap_err().code(), -40007);
    assert_eq!(crypto.decrypt("AAAA").unwrap_err().code(), -40007, "3 bytes is not a block");
}

fn any_key() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        proptest::sample::select(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789".to_vec()),
        43,
    )
    .prop_map(|bytes| String::from_utf8(bytes).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn encrypt_then_open_round_trips(
        key in any_key(),
        token in "[A-Za-z0-9]{1,32}",
        receive_id in "[A-Za-z0-9_]{0,40}",
        random in any::<[u8; 16]>(),
        msg in proptest::collection::vec(any::<u8>(), 0..65_536),
        timestamp in "[0-9]{1,12}",
        nonce in "[0-9]{1,12}",
    ) {
        let crypto = WxBizMsgCrypt::new(&token, &key).unwrap();
        let sealed = crypto.seal(random, &msg, receive_id.as_bytes(), &timestamp, &nonce);
        let opened = crypto.open(&sealed.msg_signature, &timestamp, &nonce, &sealed.encrypt, |id| id == receive_id.as_bytes());
        prop_assert_eq!(opened, Ok(msg));
    }

    #[test]
    fn decrypting_random_input_never_panics(input in ".{0,512}", bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let crypto = WxBizMsgCrypt::new("t", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C").unwrap();
        let _ = crypto.decrypt(&input);
        use base64::Engine;
        let _ = crypto.decrypt(&base64::engine::general_purpose::STANDARD.encode(&bytes));
        let _ = crypto.open(&input, &input, &input, &input, |_| true);
    }

    #[test]
    fn parsing_random_envelopes_never_panics(body in proptest::collection::vec(any::<u8>(), 0..1024), text in "[<>{}\\[\\]\"a-zA-Z:/!=CDAT ]{0,200}") {
        let _ = Envelope::parse(&body);
        let _ = Envelope::parse(text.as_bytes());
        let _ = SealedReply::parse(text.as_bytes());
        let _ = wecom_zone::inbound::decode(&body);
        let _ = wecom_zone::inbound::decode(text.as_bytes());
    }

    #[test]
    fn any_43_character_key_is_accepted_with_trailing_bits(key in any_key()) {
        prop_assert!(WxBizMsgCrypt::new("t", &key).is_ok());
    }
}
