//! The HTTP surface, through a real server on port 0: every row of the contract's status table,
//! both envelope formats, every kind of plaintext, duplicates, health and metrics.

use serde_json::json;
use wecom_zone::domain::unix_now;

use crate::helpers::*;

fn verification_query(signed: &Signed) -> String {
    let echostr: String = url_encode(&signed.encrypt);
    format!("{}&echostr={echostr}", signed.query)
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| if b.is_ascii_alphanumeric() { char::from(b).to_string() } else { format!("%{b:02X}") })
        .collect()
}

#[tokio::test]
async fn url_verification_answers_the_decrypted_echostr_only() {
    let app = spawn_app().await;
    let signed = app.signed_now("1288432023552776189");
    for path in [format!("/callback/{CORP_ID}"), "/".to_owned()] {
        let response =
            app.client.get(format!("{}?{}", app.url(&path), verification_query(&signed))).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
        assert_eq!(response.text().await.unwrap(), "1288432023552776189", "{path}");
    }
    let longest = "e".repeat(128);
    let response = app
        .client
        .get(format!("{}?{}", app.url("/"), verification_query(&app.signed_now(&longest))))
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), longest);
}

/// A GET must never decrypt what is not an echostr: a captured event or call sent as `echostr`
/// with its own query, a captured encrypted reply, or anything long or binary.
#[tokio::test]
async fn url_verification_is_not_a_decryption_oracle() {
    let app = spawn_app().await;
    let call = ability_call("echo", r#"{"secret_key":"k3y-material"}"#, false);
    let captured_reply = {
        let body = app.post_json("/", &app.signed_now(&call), CORP_ID).await.text().await.unwrap();
        let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
        let query = format!(
            "msg_signature={}&timestamp={}&nonce={}",
            reply["msgsignature"].as_str().unwrap(),
            reply["timestamp"].as_str().unwrap(),
            reply["nonce"].as_str().unwrap()
        );
        Signed { query, encrypt: reply["encrypt"].as_str().unwrap().to_owned() }
    };
    let refused = [
        ("captured call", app.signed_now(&call)),
        ("captured event", app.signed_now(MSGAUDIT_NOTIFY)),
        ("captured reply", captured_reply),
        ("129 characters", app.signed_now(&"e".repeat(129))),
        ("control character", app.signed_now("12345\n6789")),
        ("non-ASCII", app.signed_now("密钥12345")),
        ("JSON-looking", app.signed_now("{\"a\":1}")),
    ];
    for (what, signed) in refused {
        let response =
            app.client.get(format!("{}?{}", app.url("/"), verification_query(&signed))).send().await.unwrap();
        let body_status = response.status();
        let body = response.text().await.unwrap();
        assert_eq!(body_status, 400, "{what}: {body}");
        for secret in ["k3y-material", "secret_key", "msgaudit_notify", "eeee", "12345"] {
            assert!(!body.contains(secret), "{what} leaked {secret}: {body}");
        }
    }
    let metrics = app.metrics().await;
    assert!(metrics.contains(r#"reason="not_an_echostr"} 7"#), "{metrics}");
}

#[tokio::test]
async fn url_verification_with_a_bad_signature_is_401() {
    let app = spawn_app_with(test_config(0)).await;
    let query = "msg_signature=0000000000000000000000000000000000000000&timestamp=1476416373&nonce=47744683\
                 &echostr=fsi1xnbH4yQh0%2BPJxcOdhhK6TDXkjMyhEPA7xB2TGz6b%2Bg7xyAbEkRxN%2F3cNXW9qdqjnoVzEtpbhnFyq6SVHyA%3D%3D";
    let response =
        app.client.get(format!("{}?{query}", app.url(&format!("/callback/{CORP_ID}")))).send().await.unwrap();
    assert_eq!(error_of(response).await.0, 401);
}

#[tokio::test]
async fn classic_msgaudit_notify_is_answered_success_and_dispatched() {
    let app = spawn_app().await;
    let signed = app.signed_now(MSGAUDIT_NOTIFY);
    let response = app.post_xml("/", &signed, CORP_ID).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "success");
    assert_eq!(app.dispatcher.recorded.lock().unwrap().events, vec!["classic:msgaudit_notify"]);
}

#[tokio::test]
async fn zone_events_are_answered_with_an_encrypted_ok_in_the_request_format() {
    let app = spawn_app().await;
    let event = zone_event("conversation_new_message", json!({"token": "ENC_TOKEN"}));

    let response = app.post_json(&format!("/callback/{CORP_ID}"), &app.signed_now(&event), CORP_ID).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = response.text().await.unwrap();
    assert!(!body.contains("errcode"), "the reply is encrypted: {body}");
    assert_eq!(app.open_reply(&body), json!({"errcode": 0, "errmsg": "ok"}));

    let response = app.post_xml("/", &app.signed_now(&event), CORP_ID).await;
    assert_eq!(response.headers()["content-type"], "application/xml");
    assert_eq!(app.open_reply(&response.text().await.unwrap()), json!({"errcode": 0, "errmsg": "ok"}));

    let recorded = app.dispatcher.recorded.lock().unwrap();
    assert_eq!(recorded.events, vec!["zone:conversation_new_message"; 2]);
}

#[tokio::test]
async fn ability_calls_are_answered_with_the_encrypted_output() {
    let app = spawn_app().await;
    let response = app.post_json("/", &app.signed_now(&ability_call("echo", r#"{"a":1}"#, false)), CORP_ID).await;
    assert_eq!(response.status(), 200);
    let output = app.open_reply(&response.text().await.unwrap());
    assert_eq!(output, json!({"echo": r#"{"a":1}"#, "notify_id": "nid-1"}));

    let response = app.post_xml("/", &app.signed_now(&ability_call("list_messages", "{}", false)), CORP_ID).await;
    let output = app.open_reply(&response.text().await.unwrap());
    assert_eq!(output["errcode"], 710636);
    assert!(output["errmsg"].as_str().unwrap().contains("list_messages"));
}

#[tokio::test]
async fn async_calls_are_acknowledged_and_handed_over_with_their_job_info() {
    let app = spawn_app().await;
    let response = app.post_json("/", &app.signed_now(&ability_call("echo", "{}", true)), CORP_ID).await;
    assert_eq!(app.open_reply(&response.text().await.unwrap()), json!({"errcode": 0, "errmsg": "ok"}));
    let recorded = app.dispatcher.recorded.lock().unwrap();
    assert_eq!(recorded.async_calls, vec!["job-42"]);
    assert!(recorded.sync_calls.is_empty());
}

#[tokio::test]
async fn a_delivery_repeated_is_acknowledged_twice_and_processed_once() {
    let app = spawn_app().await;
    let signed = app.signed_now(&zone_event("hit_keyword", json!({"token": "T"})));
    let first = app.post_json("/", &signed, CORP_ID).await;
    let second = app.post_json("/", &signed, CORP_ID).await;
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 200));
    assert_eq!(app.open_reply(&second.text().await.unwrap())["errcode"], 0);

    let classic = app.signed_now(MSGAUDIT_NOTIFY);
    for _ in 0..3 {
        assert_eq!(app.post_xml("/", &classic, CORP_ID).await.text().await.unwrap(), "success");
    }
    assert_eq!(app.dispatcher.recorded.lock().unwrap().events, vec!["zone:hit_keyword", "classic:msgaudit_notify"]);
    assert!(app.metrics().await.contains("wecom_zone_duplicate_deliveries_total 3"));
}

#[tokio::test]
async fn an_event_that_cannot_be_accepted_is_500_and_its_retry_is_processed() {
    let app = spawn_app().await;
    let signed = app.signed_now(MSGAUDIT_NOTIFY);
    *app.dispatcher.fail_events.lock().unwrap() = true;
    let (status, errcode, errmsg) = error_of(app.post_xml("/", &signed, CORP_ID).await).await;
    assert_eq!((status, errcode), (500, -1));
    assert!(!errmsg.contains("storage"), "internal details stay in the log: {errmsg}");
    *app.dispatcher.fail_events.lock().unwrap() = false;
    assert_eq!(app.post_xml("/", &signed, CORP_ID).await.status(), 200);
    assert_eq!(app.dispatcher.recorded.lock().unwrap().events.len(), 1);
}

/// The request gives up (a timeout here; a disconnect is the same) while the event is being
/// stored: the work finishes anyway, and WeCom's retry is acknowledged without running it again.
#[tokio::test]
async fn an_event_whose_request_times_out_is_still_kept_once() {
    let app = spawn_app_with(test_config_with("request_timeout_ms = 100")).await;
    *app.dispatcher.event_delay.lock().unwrap() = std::time::Duration::from_millis(500);
    let signed = app.signed_now(MSGAUDIT_NOTIFY);
    assert_eq!(app.post_xml("/", &signed, CORP_ID).await.status(), 408);
    let retry = app.post_xml("/", &signed, CORP_ID).await;
    assert_eq!(retry.text().await.unwrap(), "success", "the retry finds the delivery in progress");
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert_eq!(app.dispatcher.recorded.lock().unwrap().events, vec!["classic:msgaudit_notify"], "finished detached");
    assert_eq!(app.post_xml("/", &signed, CORP_ID).await.text().await.unwrap(), "success");
    assert_eq!(app.dispatcher.recorded.lock().unwrap().events.len(), 1, "kept once");
}

#[tokio::test]
async fn malformed_envelopes_are_400() {
    let app = spawn_app().await;
    let signed = app.signed_now(MSGAUDIT_NOTIFY);
    for body in
        ["", "garbage", "<xml><ToUserName>x</ToUserName></xml>", "<xml><Encrypt>unclosed", "{\"encrypt\":", "{}"]
    {
        let (status, errcode, _) = error_of(app.post("/", &signed.query, body).await).await;
        assert_eq!((status, errcode), (400, -40002), "{body:?}");
    }
}

#[tokio::test]
async fn bad_or_missing_signatures_are_401() {
    let app = spawn_app().await;
    let signed = app.signed_now(MSGAUDIT_NOTIFY);
    let forged = signed.query.replacen("msg_signature=", "msg_signature=0", 1);
    let body = xml_envelope(CORP_ID, &signed.encrypt);
    for query in [forged.as_str(), "timestamp=1&nonce=2", ""] {
        let (status, errcode, _) = error_of(app.post("/", query, body.clone()).await).await;
        assert_eq!((status, errcode), (401, -40001), "{query:?}");
    }
    // A tampered ciphertext no longer matches its signature.
    let tampered = xml_envelope(CORP_ID, &signed.encrypt.replacen('A', "B", 1).replacen('a', "b", 1));
    assert_eq!(error_of(app.post("/", &signed.query, tampered).await).await.0, 401);
    assert!(app.dispatcher.recorded.lock().unwrap().events.is_empty());
    assert!(app.metrics().await.contains("wecom_zone_decrypt_failures_total{reason=\"signature\"}"));
}

#[tokio::test]
async fn stale_timestamps_are_401() {
    let app = spawn_app().await;
    for timestamp in [unix_now() - 301, unix_now() + 301] {
        let signed = app.sign(MSGAUDIT_NOTIFY, CORP_ID, timestamp);
        let (status, errcode, errmsg) = error_of(app.post_xml("/", &signed, CORP_ID).await).await;
        assert_eq!((status, errcode), (401, -40001));
        assert!(errmsg.contains("clock skew"), "{errmsg}");
    }
    let within = app.sign(MSGAUDIT_NOTIFY, CORP_ID, unix_now() - 200);
    assert_eq!(app.post_xml("/", &within, CORP_ID).await.status(), 200);
}

#[tokio::test]
async fn a_receive_id_or_corp_mismatch_is_403() {
    let app = spawn_app().await;
    let signed = app.sign(MSGAUDIT_NOTIFY, "wwsomebodyelse", unix_now());
    let (status, errcode, _) = error_of(app.post_xml("/", &signed, CORP_ID).await).await;
    assert_eq!((status, errcode), (403, -40005));

    let wrong_corp = zone_event("hit_keyword", json!({})).replace(CORP_ID, OTHER_CORP_ID);
    let (status, errcode, _) = error_of(app.post_json("/", &app.signed_now(&wrong_corp), CORP_ID).await).await;
    assert_eq!((status, errcode), (403, -40005));
    assert!(app.dispatcher.recorded.lock().unwrap().events.is_empty());
}

#[tokio::test]
async fn refusals_echo_nothing_the_caller_sent() {
    let app = spawn_app().await;
    let marker = "wwMARKERmarker7f3a9";
    let signed = app.signed_now(MSGAUDIT_NOTIFY);
    let by_path = app.post_xml(&format!("/callback/{marker}"), &signed, CORP_ID).await;
    let by_to_user_name = app.post_xml("/", &signed, marker).await;
    let naming_another_corp = zone_event("hit_keyword", json!({})).replace(CORP_ID, marker);
    let by_corpid = app.post_json("/", &app.signed_now(&naming_another_corp), CORP_ID).await;
    for (response, status) in [(by_path, 404), (by_to_user_name, 404), (by_corpid, 403)] {
        assert_eq!(response.status(), status);
        let body = response.text().await.unwrap();
        assert!(!body.contains(marker) && !body.to_lowercase().contains(&marker.to_lowercase()), "{body}");
        assert!(!body.contains(CORP_ID), "nor the corp it was addressed to: {body}");
    }
}

#[tokio::test]
async fn unknown_corps_are_404() {
    let app = spawn_app().await;
    let signed = app.signed_now(MSGAUDIT_NOTIFY);
    let (status, errcode, _) = error_of(app.post_xml("/callback/wwnobody", &signed, CORP_ID).await).await;
    assert_eq!((status, errcode), (404, 40013));
    let (status, _, _) = error_of(app.post_xml("/", &signed, "wwnobody").await).await;
    assert_eq!(status, 404);
    let response = app.client.get(app.url("/callback/wwnobody?msg_signature=a&timestamp=1&nonce=2&echostr=x"));
    assert_eq!(error_of(response.send().await.unwrap()).await.0, 404);
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let app = spawn_app().await;
    let signed = app.signed_now(MSGAUDIT_NOTIFY);
    let (status, errcode, _) = error_of(app.post("/", &signed.query, "x".repeat(BODY_LIMIT + 1)).await).await;
    assert_eq!((status, errcode), (413, 45002));
    // Without a Content-Length (chunked), the limit still holds.
    let status_line = post_chunked(&app, &format!("/?{}", signed.query), BODY_LIMIT + 100).await;
    assert!(status_line.starts_with("HTTP/1.1 413"), "{status_line}");
}

/// Sends `total` bytes with chunked transfer encoding and returns the response's status line.
async fn post_chunked(app: &TestApp, path_and_query: &str, total: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = app.base_url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!("POST {path_and_query} HTTP/1.1\r\nHost: {address}\r\nTransfer-Encoding: chunked\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'x'; 1000];
    let mut sent = 0;
    while sent < total {
        let piece = &chunk[..chunk.len().min(total - sent)];
        let framed = [format!("{:x}\r\n", piece.len()).as_bytes(), piece, b"\r\n"].concat();
        if stream.write_all(&framed).await.is_err() {
            break; // the server may answer and close before reading everything
        }
        sent += piece.len();
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut response = vec![0u8; 256];
    let read = stream.read(&mut response).await.unwrap();
    String::from_utf8_lossy(&response[..read]).lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn authentic_but_undecodable_content_is_400_and_never_echoed() {
    let app = spawn_app().await;
    let signed = app.signed_now("this secret plaintext is neither XML nor JSON");
    let response = app.post_xml("/", &signed, CORP_ID).await;
    let body = response.text().await.unwrap();
    assert!(body.contains("-40002"), "{body}");
    assert!(!body.contains("secret plaintext"), "{body}");

    // Broken JSON whose body names another corp than the path: the inner ReceiveId counts, the
    // content is refused without being quoted.
    let signed = app.signed_now(r#"{"tousername": "mycreate", "call_type": "#);
    let (status, errcode, errmsg) =
        error_of(app.post_xml(&format!("/callback/{CORP_ID}"), &signed, OTHER_CORP_ID).await).await;
    assert_eq!((status, errcode), (400, -40002));
    assert!(!errmsg.contains("mycreate"), "{errmsg}");
}

#[tokio::test]
async fn a_valid_signature_over_a_broken_ciphertext_is_400() {
    let app = spawn_app().await;
    for (encrypt, code) in [("not*base64", -40010), ("AAAAAAAAAAAAAAAAAAAAAA==", -40007)] {
        let timestamp = unix_now().to_string();
        let signature = app.crypto.signature(&timestamp, "1", encrypt);
        let query = format!("msg_signature={signature}&timestamp={timestamp}&nonce=1");
        let (status, errcode, _) = error_of(app.post("/", &query, xml_envelope(CORP_ID, encrypt)).await).await;
        assert_eq!((status, errcode), (400, code), "{encrypt}");
    }
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let app = spawn_app().await;
    let get = |path: &str| app.client.get(app.url(path)).send();
    assert_eq!(get("/healthz").await.unwrap().text().await.unwrap(), "ok");
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    app.post_xml("/", &app.signed_now(MSGAUDIT_NOTIFY), CORP_ID).await;
    let metrics = app.metrics().await;
    assert!(metrics.contains("wecom_zone_http_requests_total{route=\"/\",status=\"200\"} 1"), "{metrics}");
    assert!(metrics.contains("wecom_zone_http_request_duration_seconds_count{route=\"/\"} 1"), "{metrics}");
    assert!(metrics.contains("wecom_zone_inbound_total{kind=\"classic:msgaudit_notify\"} 1"), "{metrics}");
    assert_eq!(error_of(get("/nowhere").await.unwrap()).await.0, 404);
}

#[tokio::test]
async fn a_replayed_synchronous_call_runs_once_and_gets_the_first_answer() {
    let app = spawn_app().await;
    let signed = app.signed_now(&ability_call("echo", r#"{"n":1}"#, false));
    let mut outputs = Vec::new();
    for replay in 0..3 {
        let response = if replay == 1 {
            app.post_xml("/", &signed, CORP_ID).await
        } else {
            app.post_json("/", &signed, CORP_ID).await
        };
        assert_eq!(response.status(), 200);
        outputs.push(app.open_reply(&response.text().await.unwrap()));
    }
    assert_eq!(outputs[0]["echo"], r#"{"n":1}"#);
    assert!(outputs.iter().all(|output| *output == outputs[0]));
    assert_eq!(app.dispatcher.recorded.lock().unwrap().sync_calls, vec!["echo"], "dispatched once");
    let fresh = app.signed_now(&ability_call("echo", r#"{"n":1}"#, false));
    assert_eq!(app.post_json("/", &fresh, CORP_ID).await.status(), 200);
    assert_eq!(app.dispatcher.recorded.lock().unwrap().sync_calls.len(), 2, "a new delivery runs");
}

/// Writes `prefix`, then one byte every `every` until the server closes the socket; returns how
/// long the socket stayed open.
async fn trickle(address: String, prefix: &'static [u8], every: std::time::Duration) -> std::time::Duration {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = std::time::Instant::now();
    let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
    socket.write_all(prefix).await.unwrap();
    let mut buffer = [0u8; 256];
    loop {
        tokio::select! {
            read = socket.read(&mut buffer) => match read {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            },
            () = tokio::time::sleep(every) => {
                if socket.write_all(b"a").await.is_err() {
                    return started.elapsed();
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trickling_its_headers_is_closed_after_the_header_timeout() {
    let app = spawn_app_with(test_config_with("header_read_timeout_ms = 300")).await;
    let address = app.base_url.trim_start_matches("http://").to_owned();
    let every = std::time::Duration::from_millis(50);
    let slow: Vec<_> =
        (0..100).map(|_| tokio::spawn(trickle(address.clone(), b"GET /healthz HTTP/1.1\r\nX-Slow: ", every))).collect();
    let started = std::time::Instant::now();
    assert_eq!(app.client.get(app.url("/healthz")).send().await.unwrap().status(), 200);
    assert!(started.elapsed() < std::time::Duration::from_secs(1), "health answered beside them");
    for open in slow {
        let open = open.await.unwrap();
        assert!(open < std::time::Duration::from_secs(3), "closed by the header timeout, after {open:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_closed_on_accept() {
    use tokio::io::AsyncReadExt;
    let app = spawn_app_with(test_config_with("max_connections = 20")).await;
    let address = app.base_url.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(tokio::net::TcpStream::connect(&address).await.unwrap());
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let mut extra = tokio::net::TcpStream::connect(&address).await.unwrap();
    let read = tokio::time::timeout(std::time::Duration::from_secs(2), extra.read(&mut [0u8; 16])).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "the 21st connection is closed at once: {read:?}");
    drop(held);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let metrics = app.metrics().await;
    assert!(metrics.contains("wecom_zone_connections_refused_total 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_being_read_share_a_bounded_buffer() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app_with(test_config_with(&format!("body_buffer_bytes = {BODY_LIMIT}"))).await;
    let address = app.base_url.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {BODY_LIMIT}\r\n\r\n");
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(&vec![b'<'; BODY_LIMIT - 100]).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let signed = app.signed_now(MSGAUDIT_NOTIFY);
    let (status, errcode, _) = error_of(app.post_xml("/", &signed, CORP_ID).await).await;
    assert_eq!((status, errcode), (503, -1), "no room while the slow body holds the buffer");
    drop(slow);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(app.post_xml("/", &signed, CORP_ID).await.status(), 200, "room again once it is gone");
}
