//! What the fuzz targets in `fuzz/` run: every parser that reads bytes from outside, each entry
//! point a function of arbitrary bytes that must return without panicking, whatever they hold.

use std::sync::LazyLock;

use crate::config::Config;
use crate::crypto::{Envelope, KeyRing, SealedReply, WxBizMsgCrypt};
use crate::inbound::{CallbackQuery, decode};
use crate::upstream::{Answer, SyncMsgResponse, TokenAnswer, parse_answer};

/// Callback crypto with fixed, non-sample credentials.
static CRYPTO: LazyLock<WxBizMsgCrypt> = LazyLock::new(|| {
    WxBizMsgCrypt::new("Fuzz7Token", "ox9yimTcfipZGnzPbDFDyFKm51zfFoWbSrHAE56yUhQ").expect("a valid key")
});

/// A request's envelope (XML or JSON), a reply's envelope, the signature check, and the AES,
/// padding and length checks of decryption (reached directly: a fuzzer cannot forge SHA-1).
pub fn envelope(data: &[u8]) {
    let _ = SealedReply::parse(data);
    let Ok(envelope) = Envelope::parse(data) else { return };
    let _ = CRYPTO.verify_signature("0123456789abcdef0123456789abcdef01234567", "1", "2", &envelope.encrypt);
    let _ = CRYPTO.decrypt_for(&envelope.encrypt, |receive_id| receive_id == b"wwfuzz");
}

/// A decrypted plaintext (classic XML event or zone JSON request) and a callback query string.
pub fn inbound(data: &[u8]) {
    let _ = decode(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = CallbackQuery::parse(Some(text));
    }
}

/// A configuration file (no environment).
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::from_toml_str(text, Vec::new(), None);
    }
}

/// WeCom's answers: the errcode header, gettoken, and sync_msg down to each stored record.
pub fn upstream(data: &[u8]) {
    let _ = parse_answer::<serde_json::Value>(data);
    let _ = parse_answer::<TokenAnswer>(data);
    if let Answer::Ok(page) = parse_answer::<SyncMsgResponse>(data) {
        let ring = KeyRing::default();
        for raw in &page.msg_list {
            let _ = crate::ingest::to_record(raw, &ring);
        }
    }
}

/// The classic archive's outside bytes: the finance worker's frames in both directions, a
/// decrypted message (validation, media references, the searchable text), and a search: a first
/// line of query terms, then text to test and cut a snippet from.
pub fn archive(data: &[u8]) {
    use crate::finance::protocol::{Request, read_frame, receive};
    let mut frames = data;
    while let Ok(Some(_)) = read_frame::<_, Request>(&mut frames) {}
    let mut answer = data;
    let _ = RUNTIME.block_on(receive(&mut answer));
    if let Ok(message) = crate::finance::content::validate("fuzzmsgid", data) {
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(&message.content) {
            let _ = crate::finance::content::media_refs(&message.msgtype, &value);
            let _ = crate::search::searchable_text(&value);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let (query, body) = text.split_once('\n').unwrap_or((text, text));
        if let Ok(terms) = crate::search::Terms::parse(query) {
            let _ = terms.matches(body);
            let _ = terms.snippet(body);
        }
    }
}

/// Drives the service side's async frame reader over a byte slice.
static RUNTIME: LazyLock<tokio::runtime::Runtime> =
    LazyLock::new(|| tokio::runtime::Builder::new_current_thread().build().expect("a current-thread runtime"));

#[cfg(test)]
mod tests {
    use super::*;

    /// The fuzz entry points hold on inputs shaped like the real thing, so the targets start
    /// from meaningful seeds.
    #[test]
    fn entry_points_take_well_formed_and_broken_input() {
        let sealed = CRYPTO.seal([7; 16], b"<xml><MsgType>event</MsgType></xml>", b"wwfuzz", "1", "2");
        for data in [
            format!("<xml><ToUserName>ww</ToUserName><Encrypt>{}</Encrypt></xml>", sealed.encrypt).into_bytes(),
            br#"{"errcode":0,"has_more":1,"next_cursor":"c","msg_list":[{"msgid":"m","send_time":-9223372036854775808}]}"#
                .to_vec(),
            b"[[corp]]\ncorp_id = 1".to_vec(),
            vec![0xff, 0x00, b'{'],
        ] {
            envelope(&data);
            inbound(&data);
            config(&data);
            upstream(&data);
            archive(&data);
        }
        archive("退款 ab\n请退款 AB12".as_bytes());
        archive(br#"{"msgid":"fuzzmsgid","msgtype":"mixed","mixed":{"item":[{"type":"text","content":"{\"content\":\"x\"}"}]}}"#);
        archive(&[5, 0, 0, 0, b'D', 0, 0, 0, 0]);
    }
}
