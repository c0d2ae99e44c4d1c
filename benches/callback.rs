//! Signature check + decryption of a 1 KiB callback, the work every POST does before dispatch.
//! Run: `cargo bench --bench callback`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use wecom_zone::crypto::{Envelope, WxBizMsgCrypt};

const TOKEN: &str = "QDG6eK";
const AES_KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
const CORP_ID: &str = "ww1436e0e65a779aee";

fn callback_1k(c: &mut Criterion) {
    let crypto = WxBizMsgCrypt::new(TOKEN, AES_KEY).expect("sample key is valid");
    let message = "x".repeat(1024);
    let sealed = crypto.seal([9; 16], message.as_bytes(), CORP_ID.as_bytes(), "1700000000", "123456");
    let body = format!(
        "<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><Encrypt><![CDATA[{}]]></Encrypt></xml>",
        sealed.encrypt
    );

    let mut group = c.benchmark_group("callback_1k");
    group.throughput(Throughput::Elements(1));
    group.bench_function("verify_and_decrypt", |b| {
        b.iter(|| {
            crypto
                .open(&sealed.msg_signature, &sealed.timestamp, &sealed.nonce, black_box(&sealed.encrypt), |id| {
                    id == CORP_ID.as_bytes()
                })
                .expect("authentic")
        })
    });
    group.bench_function("parse_xml_envelope_verify_and_decrypt", |b| {
        b.iter(|| {
            let envelope = Envelope::parse(black_box(body.as_bytes())).expect("well-formed");
            crypto
                .open(&sealed.msg_signature, &sealed.timestamp, &sealed.nonce, &envelope.encrypt, |id| {
                    id == CORP_ID.as_bytes()
                })
                .expect("authentic")
        })
    });
    group.finish();
}

criterion_group!(benches, callback_1k);
criterion_main!(benches);
