//! The codec against the recorded wire fixtures (`fixtures/` at the repository root)
//! and against malformed, truncated, oversized and random input.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use mes_codec::codec::{
    AnswerBody, DEFAULT_MAX_REPLY_BYTES, DecodeError, Page, Reply, ReplyBody, Request, Topic,
    decode_reply, decode_reply_with_limit, to_python_json,
};
use mes_codec::domain::{Answer, OrderRequest, Status};
use mes_codec::pylit;
use proptest::prelude::*;
use serde_json::{Value, json};

const TOKEN: &str = "4f1c2a9e7b";

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const PAIRS: [&str; 5] = [
    "partner_list",
    "order_list",
    "answer_message",
    "answer_error",
    "not_for_me",
];

#[test]
fn json_and_python_literal_twins_decode_to_the_same_reply() {
    for name in PAIRS {
        let json = decode_reply(&fixture(&format!("{name}.json"))).unwrap();
        let pylit = decode_reply(&fixture(&format!("{name}.pylit"))).unwrap();
        assert_eq!(json, pylit, "{name}");
    }
}

#[test]
fn operators_order_in_a_python_literal_decodes_like_its_json_twin() {
    let json = decode_reply(
        br#"[{"auth": "4f1c2a9e7b"}, {"message": "Operator's order accepted", "note": "say \"hi\""}]"#,
    )
    .unwrap();
    let pylit = decode_reply(
        br#"[{'auth': '4f1c2a9e7b'}, {'message': "Operator's order accepted", 'note': 'say "hi"'}]"#,
    )
    .unwrap();
    assert_eq!(json, pylit);
    assert_eq!(
        pylit.body,
        ReplyBody::Message(json!("Operator's order accepted"))
    );
}

#[test]
fn the_original_blind_quote_replacement_would_have_failed() {
    // What the original did: replace every ' by " and parse as JSON.
    let text = String::from_utf8(fixture("order_list.pylit")).unwrap();
    let blind = text.replace('\'', "\"");
    assert!(serde_json::from_str::<Value>(&blind).is_err());
    assert!(decode_reply(text.as_bytes()).is_ok());
}

#[test]
fn partner_list_decodes_to_typed_requests_and_reencodes_byte_for_byte() {
    let bytes = fixture("partner_list.json");
    let reply = decode_reply(&bytes).unwrap();
    assert_eq!(reply.head.auth, TOKEN);
    let partners = reply.partners().unwrap();
    assert_eq!(partners.len(), 2);
    let open = &partners[0];
    assert_eq!(
        open.partner_request_id.as_str(),
        "9df8888dea6df991f86e0e61b2379e46"
    );
    assert_eq!(open.status, Status::Open);
    assert_eq!(open.answer_timestamp, 0);
    assert_eq!(open.timestamp, 1_638_789_671);
    assert_eq!(open.transaction_ids.len(), 1);
    assert_eq!(partners[1].status, Status::Accepted);
    assert_eq!(partners[1].transaction_ids.len(), 2);

    let data: Vec<Value> = partners
        .iter()
        .map(|p| serde_json::to_value(p).unwrap())
        .collect();
    let again = Reply::new(TOKEN, None, ReplyBody::Data(data));
    assert_eq!(again.to_json_bytes(), bytes);
}

#[test]
fn order_list_keeps_every_field_and_unknown_ones() {
    let bytes = fixture("order_list.json");
    let reply = decode_reply(&bytes).unwrap();
    let orders = reply.orders().unwrap();
    assert_eq!(orders.len(), 2);
    assert_eq!(orders[0].status, Status::Rejected);
    assert_eq!(orders[0].order_type, "dummy_action");
    assert_eq!(
        orders[0].metadata["Special_Parameters"],
        json!(["Operator's note"])
    );
    assert_eq!(orders[1].metadata["Urgent"], json!(true));
    assert_eq!(orders[1].metadata["Drawing"], Value::Null);

    let data: Vec<Value> = orders
        .iter()
        .map(|o| serde_json::to_value(o).unwrap())
        .collect();
    assert_eq!(
        Reply::new(TOKEN, None, ReplyBody::Data(data)).to_json_bytes(),
        bytes
    );

    // A field the chain adds later survives the typed round trip, in place.
    let ReplyBody::Data(items) = &reply.body else {
        panic!("not a list")
    };
    let mut item = items[1].clone();
    item["priority"] = json!({"level": 2});
    let typed: OrderRequest = serde_json::from_value(item.clone()).unwrap();
    assert_eq!(typed.extra["priority"], json!({"level": 2}));
    assert_eq!(serde_json::to_value(&typed).unwrap(), item);
}

#[test]
fn python_literal_fixtures_reencode_as_python_literals() {
    for name in PAIRS {
        let bytes = fixture(&format!("{name}.pylit"));
        let reply = decode_reply(&bytes).unwrap();
        assert_eq!(reply.to_python_literal().into_bytes(), bytes, "{name}");
    }
}

#[test]
fn a_bad_item_is_reported_by_index() {
    let mut value: Value = serde_json::from_slice(&fixture("partner_list.json")).unwrap();
    value[1]["data"][1]["issuing_agent"] = json!("not-a-key");
    let reply = decode_reply(&serde_json::to_vec(&value).unwrap()).unwrap();
    match reply.partners() {
        Err(DecodeError::Item { index: 1, message }) => {
            assert!(message.contains("agent key"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn request_envelopes_match_the_reference() {
    let expected: serde_json::Map<String, Value> =
        serde_json::from_slice(&fixture("requests.json")).unwrap();
    let requests = [
        Request::ListPartners(Page::default()),
        Request::AnswerPartner(AnswerBody {
            id: "9df8888dea6df991f86e0e61b2379e46".parse().unwrap(),
            response: Answer::Accept,
        }),
        Request::ListOrders(Page::default()),
        Request::AnswerOrder(AnswerBody {
            id: "ee8d17bb75deb39650e4f8fce222ef26".parse().unwrap(),
            response: Answer::Reject,
        }),
    ];
    for request in requests {
        let topic = request.topic().name();
        let envelope = request.envelope(TOKEN, None);
        let want = &expected[topic];
        assert_eq!(&envelope.to_value(), want, "{topic}");
        // Same bytes as Python's json.dumps of the reference's list, key order included.
        assert_eq!(envelope.to_bytes(), to_python_json(want), "{topic}");
        // And the simulator reads back what was sent.
        let (head, back) = Request::decode(request.topic(), &envelope.to_bytes()).unwrap();
        assert_eq!(head.auth, TOKEN);
        assert_eq!(back, request);
    }
    assert_eq!(
        String::from_utf8(
            Request::ListPartners(Page::default())
                .envelope(TOKEN, None)
                .to_bytes()
        )
        .unwrap(),
        r#"[{"auth": "4f1c2a9e7b", "start": 0, "limit": 10}]"#
    );
    assert_eq!(Topic::ALL.len(), 6);
}

#[test]
fn a_reply_wrapped_in_a_json_string_is_unwrapped_once() {
    // The original gateway's json.dumps(str(reply)).
    let literal = String::from_utf8(fixture("answer_message.pylit")).unwrap();
    let wrapped = serde_json::to_vec(&literal).unwrap();
    let reply = decode_reply(&wrapped).unwrap();
    assert_eq!(
        reply,
        decode_reply(&fixture("answer_message.json")).unwrap()
    );
    // Twice wrapped is not an envelope.
    let twice = serde_json::to_vec(&String::from_utf8(wrapped).unwrap()).unwrap();
    assert!(matches!(decode_reply(&twice), Err(DecodeError::Shape(_))));
}

#[test]
fn truncated_replies_are_errors_not_panics() {
    for name in PAIRS {
        for ext in ["json", "pylit"] {
            let bytes = fixture(&format!("{name}.{ext}"));
            for cut in 0..bytes.len() {
                assert!(
                    decode_reply(&bytes[..cut]).is_err(),
                    "{name}.{ext} cut at {cut} decoded"
                );
            }
        }
    }
}

#[test]
fn oversized_and_hostile_replies_are_typed_errors() {
    let ten_mib = vec![b'['; 10 * 1024 * 1024];
    assert!(matches!(
        decode_reply(&ten_mib),
        Err(DecodeError::TooLarge { size, limit })
            if size == ten_mib.len() && limit == DEFAULT_MAX_REPLY_BYTES
    ));
    // Let the size through: the depth limits must still hold, in both parsers.
    let limit = 16 * 1024 * 1024;
    assert!(matches!(
        decode_reply_with_limit(&ten_mib, limit),
        Err(DecodeError::Syntax(_))
    ));
    let deep_dict = "{'a': ".repeat(1024 * 1024);
    assert!(matches!(
        decode_reply_with_limit(deep_dict.as_bytes(), limit),
        Err(DecodeError::Syntax(_))
    ));
    // A 10 MiB string inside a valid envelope decodes when allowed, without a panic.
    let big = format!(
        "[{{'auth': 'T'}}, {{'message': '{}'}}]",
        "x".repeat(10 * 1024 * 1024)
    );
    let reply = decode_reply_with_limit(big.as_bytes(), limit).unwrap();
    assert!(
        matches!(reply.body, ReplyBody::Message(Value::String(s)) if s.len() == 10 * 1024 * 1024)
    );
    for hostile in [
        &b"\x00\x01\x02"[..],
        b"[{'auth': 'T'}, {'data': [1, 2, 3,]]}]",
        b"[{'auth': 'T'}, {'data': __import__('os')}]",
        b"[{'auth': 'T'}, {'data': {1, 2}}]",
        b"[{'auth': 'T'}, {'message': b'bytes'}]",
        b"[{'auth': 'T'}, {'message': float('nan')}]",
        b"[{'auth': 'T'}, {'message': '\\ud800'}]",
        b"[{'auth': 'T'}, {'message': 1e999}]",
        b"[{'auth': 'T'}, {'message': 123456789012345678901234567890}]",
        b"\xef\xbb\xbf\xef\xbb\xbf[]",
        b"null",
        b"'just a string'",
    ] {
        assert!(
            decode_reply(hostile).is_err(),
            "{:?} decoded",
            String::from_utf8_lossy(hostile)
        );
    }
}

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        (-1e12f64..1e12).prop_map(|f| json!(f)),
        "\\PC*".prop_map(Value::String),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((any::<String>(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

proptest! {
    // 4096 cases per property by default; PROPTEST_CASES=N runs more (see the note in
    // docs/benchmarks.md for a long run).
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(4096),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Random bytes never panic the reply decoder.
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_reply(&bytes);
    }

    /// Random text near the grammar (quotes, brackets, escapes) never panics either.
    #[test]
    fn random_literal_like_text_never_panics(
        text in "[\\[\\]{}(),:'\"\\\\a-zA-Z0-9 ._+#\n-]{0,256}"
    ) {
        let _ = decode_reply(text.as_bytes());
        let _ = pylit::parse(&text);
    }

    /// Any JSON value written as a Python literal parses back to itself, and so do
    /// its JSON text and its json.dumps-style text.
    #[test]
    fn python_literal_round_trip(value in arb_value()) {
        let literal = pylit::to_string(&value);
        prop_assert_eq!(&pylit::parse(&literal).unwrap(), &value);
        let json = serde_json::to_string(&value).unwrap();
        prop_assert_eq!(&pylit::parse(&json).unwrap(), &value);
        let python_json = String::from_utf8(to_python_json(&value)).unwrap();
        prop_assert!(python_json.is_ascii());
        prop_assert_eq!(&serde_json::from_str::<Value>(&python_json).unwrap(), &value);
    }

    /// A reply with any body round-trips through both writers.
    #[test]
    fn reply_round_trip(
        data in prop::collection::vec(arb_value(), 0..6),
        corr in proptest::option::of("[a-f0-9-]{1,36}"),
    ) {
        let reply = Reply::new(TOKEN, corr.as_deref(), ReplyBody::Data(data));
        prop_assert_eq!(&decode_reply(&reply.to_json_bytes()).unwrap(), &reply);
        prop_assert_eq!(&decode_reply(reply.to_python_literal().as_bytes()).unwrap(), &reply);
    }
}
