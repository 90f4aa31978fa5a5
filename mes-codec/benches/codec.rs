//! Where the codec's time goes: decoding replies (JSON, Python literal, wrapped),
//! encoding requests, and signing/verifying envelopes.
//!
//! Run with `cargo bench -p mes-codec --bench codec`; figures go to docs/benchmarks.md.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mes_codec::codec::{AnswerBody, Page, Reply, ReplyBody, Request, decode_reply};
use mes_codec::domain::Answer;
use mes_codec::signing::{SigningKey, verify_envelope};
use serde_json::Value;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures")
            .join(name),
    )
    .unwrap()
}

/// A list of `n` orders, built from the fixture's items, as one reply.
fn order_list(n: usize) -> Reply {
    let reply = decode_reply(&fixture("order_list.json")).unwrap();
    let ReplyBody::Data(items) = &reply.body else {
        unreachable!()
    };
    let data: Vec<Value> = items.iter().cycle().take(n).cloned().collect();
    Reply::new(
        "4f1c2a9e7b",
        Some("0b6f7c1e-3a35-4d35-9f58-1c1d4e7e0a11"),
        ReplyBody::Data(data),
    )
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_reply");
    for (name, bytes) in [
        ("partner_list_2.json", fixture("partner_list.json")),
        ("partner_list_2.pylit", fixture("partner_list.pylit")),
        ("answer_message.json", fixture("answer_message.json")),
        ("answer_message.pylit", fixture("answer_message.pylit")),
        ("order_list_100.json", order_list(100).to_json_bytes()),
        (
            "order_list_100.pylit",
            order_list(100).to_python_literal().into_bytes(),
        ),
        (
            "order_list_100.wrapped",
            serde_json::to_vec(&order_list(100).to_python_literal()).unwrap(),
        ),
    ] {
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| decode_reply(black_box(&bytes)).unwrap())
        });
    }
    group.finish();

    let reply = order_list(100);
    c.bench_function("typed_orders_100", |b| {
        b.iter(|| black_box(&reply).orders().unwrap())
    });
}

fn encode(c: &mut Criterion) {
    let list = Request::ListPartners(Page::default());
    c.bench_function("encode/list_request", |b| {
        b.iter(|| {
            black_box(&list)
                .envelope("4f1c2a9e7b", Some("corr"))
                .to_bytes()
        })
    });
    let answer = Request::AnswerOrder(AnswerBody {
        id: "ee8d17bb75deb39650e4f8fce222ef26".parse().unwrap(),
        response: Answer::Accept,
    });
    c.bench_function("encode/answer_request", |b| {
        b.iter(|| {
            black_box(&answer)
                .envelope("4f1c2a9e7b", Some("corr"))
                .to_bytes()
        })
    });
}

fn signatures(c: &mut Criterion) {
    let key = SigningKey::generate();
    let answer = Request::AnswerPartner(AnswerBody {
        id: "9df8888dea6df991f86e0e61b2379e46".parse().unwrap(),
        response: Answer::Accept,
    });
    c.bench_function("sign/answer_request", |b| {
        b.iter(|| {
            let mut env = answer.envelope("4f1c2a9e7b", Some("corr"));
            key.sign_envelope(&mut env);
            env
        })
    });
    let mut reply = order_list(100);
    key.sign_envelope(reply.envelope_mut());
    let expected = key.agent_key();
    c.bench_function("verify/order_list_100", |b| {
        b.iter(|| verify_envelope(black_box(reply.envelope()), Some(&expected)).unwrap())
    });
}

criterion_group!(benches, decode, encode, signatures);
criterion_main!(benches);
