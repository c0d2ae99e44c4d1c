use super::*;

fn zone_event(data: &str) -> ZoneEvent {
    let request = serde_json::json!({"call_type": 2, "corpid": "wwC", "agentid": 1000002, "data": data});
    match decode(request.to_string().as_bytes()).unwrap() {
        Inbound::ZoneEvent(event) => event,
        _ => panic!("not a zone event"),
    }
}

#[test]
fn msgaudit_notify_is_recognised() {
    let xml = "<xml><ToUserName><![CDATA[wwC]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
               <CreateTime>1403610513</CreateTime><MsgType><![CDATA[event]]></MsgType>\
               <Event><![CDATA[msgaudit_notify]]></Event><AgentID>2000004</AgentID></xml>";
    let Inbound::Classic(event) = decode(xml.as_bytes()).unwrap() else { panic!("not classic") };
    assert_eq!(event.kind, ClassicEventKind::MsgauditNotify { agent_id: Some("2000004".into()) });
    assert_eq!(event.to_user_name, "wwC");
    assert_eq!(event.create_time, Some(1_403_610_513));
}

#[test]
fn classic_events_of_every_known_kind_decode() {
    let cases = [
        (
            "<xml><MsgType>event</MsgType><Event>program_notify</Event><NotifyId>n1</NotifyId><NotifyScene>3</NotifyScene></xml>",
            ClassicEventKind::ProgramNotify { notify_id: "n1".into(), notify_scene: Some(3) },
        ),
        (
            "<xml><MsgType>event</MsgType><Event>change_external_contact</Event><ChangeType>msg_audit_approved</ChangeType>\
             <UserID>u</UserID><ExternalUserID>e</ExternalUserID><WelcomeCode>w</WelcomeCode></xml>",
            ClassicEventKind::ChangeExternalContact {
                change_type: "msg_audit_approved".into(),
                user_id: "u".into(),
                external_user_id: "e".into(),
            },
        ),
        (
            "<xml><MsgType>event</MsgType><Event>change_contact</Event><ChangeType>create_user</ChangeType><UserID>u</UserID></xml>",
            ClassicEventKind::ChangeContact { change_type: "create_user".into(), user_id: "u".into() },
        ),
        ("<xml><MsgType>event</MsgType><Event>enter_agent</Event></xml>", ClassicEventKind::Other),
        ("<xml><MsgType>text</MsgType><Content>hi</Content></xml>", ClassicEventKind::Other),
    ];
    for (xml, expected) in cases {
        let Inbound::Classic(event) = decode(xml.as_bytes()).unwrap() else { panic!("not classic: {xml}") };
        assert_eq!(event.kind, expected, "{xml}");
    }
}

#[test]
fn unknown_classic_events_keep_every_field() {
    let Inbound::Classic(event) =
        decode(b"<xml><MsgType>event</MsgType><Event>brand_new</Event><Extra>42</Extra></xml>").unwrap()
    else {
        panic!("not classic")
    };
    assert_eq!(event.event.as_deref(), Some("brand_new"));
    assert_eq!(xml::field(&event.fields, "Extra"), Some("42"));
}

#[test]
fn every_zone_event_type_of_the_reference_decodes() {
    let cases = [
        (
            r#"{"event_type":"conversation_new_message","timestamp":1700000000,"conversation_new_message":{"token":"T"}}"#,
            ZoneEventKind::ConversationNewMessage { token: "T".into() },
        ),
        (
            r#"{"event_type":"hit_keyword","timestamp":1,"hit_keyword":{"token":"H"}}"#,
            ZoneEventKind::HitKeyword { token: "H".into() },
        ),
        (
            r#"{"event_type":"chat_archive_audit_approved_single","timestamp":1,"chat_archive_audit_approved":{"userid":"u","external_userid":"e"}}"#,
            ZoneEventKind::AuditApprovedSingle { userid: "u".into(), external_userid: "e".into() },
        ),
        (
            r#"{"event_type":"chat_archive_audit_approved_room","timestamp":1,"chat_archive_audit_approved":{"external_userid":"e","chatid":"c"}}"#,
            ZoneEventKind::AuditApprovedRoom { external_userid: "e".into(), chatid: "c".into() },
        ),
        (
            r#"{"event_type":"auth_knowledge_base","timestamp":1,"auth_knowledge_base":{"knowledge_base_id":"k","knowledge_base_name":"n"}}"#,
            ZoneEventKind::KnowledgeBase {
                change: KnowledgeBaseChange::Authorised,
                knowledge_base_id: "k".into(),
                knowledge_base_name: "n".into(),
            },
        ),
        (
            r#"{"event_type":"unauth_knowledge_base","timestamp":1,"unauth_knowledge_base":{"knowledge_base_id":"k","knowledge_base_name":"n"}}"#,
            ZoneEventKind::KnowledgeBase {
                change: KnowledgeBaseChange::Unauthorised,
                knowledge_base_id: "k".into(),
                knowledge_base_name: "n".into(),
            },
        ),
        (
            r#"{"event_type":"delete_knowledge_base","timestamp":1,"delete_knowledge_base":{"knowledge_base_id":"k","knowledge_base_name":"n"}}"#,
            ZoneEventKind::KnowledgeBase {
                change: KnowledgeBaseChange::Deleted,
                knowledge_base_id: "k".into(),
                knowledge_base_name: "n".into(),
            },
        ),
        (
            r#"{"event_type":"knowledge_base_learn_done","timestamp":1,"knowledge_base_learn_done":{"knowledge_base_id":"k","knowledge_base_name":"n","doc_id":7,"learn_status":1}}"#,
            ZoneEventKind::KnowledgeBaseLearnDone {
                knowledge_base_id: "k".into(),
                knowledge_base_name: "n".into(),
                doc_id: 7,
                learn_status: 1,
            },
        ),
        (
            r#"{"event_type":"chat_archive_export_finished","timestamp":1,"chat_archive_export_finished":{"jobid":"j"}}"#,
            ZoneEventKind::ExportFinished { jobid: "j".into() },
        ),
        (r#"{"event_type":"from_the_future","timestamp":1,"from_the_future":{"x":1}}"#, ZoneEventKind::Unknown),
    ];
    for (data, expected) in cases {
        let event = zone_event(data);
        assert_eq!(event.kind, expected, "{data}");
        assert_eq!(event.corp_id, "wwC");
        assert_eq!(event.raw, serde_json::from_str::<Value>(data).unwrap(), "raw JSON kept");
    }
    assert_eq!(zone_event(r#"{"event_type":"hit_keyword","timestamp":"5"}"#).timestamp, 5);
}

#[test]
fn ability_calls_keep_request_data_as_text() {
    let request = r#"{"call_type":1,"corpid":"wwC","agentid":"1000002","ability_id":"list_messages","notify_id":"n",
                      "job_info":"j","is_async":true,"data":"{\"limit\":5}"}"#;
    let Inbound::Ability(call) = decode(request.as_bytes()).unwrap() else { panic!("not an ability call") };
    assert_eq!(call.ability_id, "list_messages");
    assert_eq!(call.agent_id, 1_000_002);
    assert!(call.is_async);
    assert_eq!(call.job_info, "j");
    assert_eq!(call.request_data, r#"{"limit":5}"#);
}

#[test]
fn undecodable_plaintexts_are_errors() {
    assert_eq!(decode(b"hello").err(), Some(DecodeError::UnknownFormat));
    assert_eq!(decode(b"<xml><A></xml>").err(), Some(DecodeError::InvalidXml));
    assert_eq!(decode(br#"{"call_type":3}"#).err(), Some(DecodeError::UnsupportedCallType(3)));
    assert!(matches!(decode(br#"{"corpid":"x"}"#), Err(DecodeError::InvalidZoneRequest(_))));
    assert_eq!(decode(br#"{"call_type":2,"data":"not json"}"#).err(), Some(DecodeError::InvalidEventData));
    assert_eq!(decode(&[0xff, 0xfe]).err(), Some(DecodeError::UnknownFormat));
}
