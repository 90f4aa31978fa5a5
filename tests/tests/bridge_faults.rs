//! The bridge against a real broker when things go wrong: a silent chain, too many
//! callers, noise on the reply topic, a broker that goes away and comes back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use kafka_bridge::Error;
use kafka_bridge::bridge::{Bridge, BridgeConfig, CorrelationMode, DropReason, Shape};
use kafka_bridge::kafka::{Detached, KafkaConfig, TopicNames};
use mes_core::codec::{Page, Reply, ReplyBody, Request, Topic};
use mes_e2e::{PrivateBroker, kafka_brokers};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use tokio::task::JoinHandle;

const TOKEN: &str = "fault-token";

fn config(brokers: &str, topics: &TopicNames) -> BridgeConfig {
    let mut config = BridgeConfig::new(KafkaConfig::new(brokers));
    config.topics = topics.clone();
    config
}

fn topics() -> TopicNames {
    TopicNames::with_prefix(&format!("t{}_", uuid::Uuid::new_v4().simple()))
}

/// A minimal gateway for these tests: answers every list request with `data: [start]`,
/// echoing `corr` when asked to. (The full simulator is `chain-sim`.)
fn tiny_gateway(brokers: &str, topics: &TopicNames, echo: bool) -> JoinHandle<()> {
    let consumer: StreamConsumer = mes_e2e::client_config(brokers)
        .set("group.id", format!("gw-{}", uuid::Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "5")
        .create()
        .unwrap();
    consumer
        .subscribe(&[
            topics.request(Topic::PartnerList),
            topics.request(Topic::OrderList),
        ])
        .unwrap();
    let producer: FutureProducer = mes_e2e::client_config(brokers)
        .set("linger.ms", "0")
        .create()
        .unwrap();
    // Aborting the task drops these on a runtime worker; a group consumer's drop waits
    // for its group to close, which a restarted broker can hold up indefinitely.
    let (consumer, producer) = (Detached::new(consumer), Detached::new(producer));
    let reply_topic = topics.reply.clone();
    let order_topic = topics.request(Topic::OrderList).to_owned();
    tokio::spawn(async move {
        loop {
            let Ok(message) = consumer.recv().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let topic = if message.topic() == order_topic {
                Topic::OrderList
            } else {
                Topic::PartnerList
            };
            let Ok((head, request)) = Request::decode(topic, message.payload().unwrap_or_default())
            else {
                continue;
            };
            let start = match request {
                Request::ListPartners(p) | Request::ListOrders(p) => p.start,
                _ => continue,
            };
            let corr = if echo { head.corr.as_deref() } else { None };
            let reply = Reply::new(&head.auth, corr, ReplyBody::Data(vec![json!(start)]));
            let bytes = reply.to_json_bytes();
            let _ = producer
                .send(
                    FutureRecord::<(), [u8]>::to(&reply_topic).payload(bytes.as_slice()),
                    Duration::from_secs(5),
                )
                .await;
        }
    })
}

fn start_of(items: &[serde_json::Value]) -> u32 {
    u32::try_from(items[0].as_u64().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_chain_gives_timeout_to_every_queued_caller_within_one_deadline() {
    let topics = topics();
    let mut config = config(&kafka_brokers(), &topics);
    config.request_timeout = Duration::from_secs(1);
    config.correlation = CorrelationMode::Legacy;
    let bridge = Bridge::connect(config).await.unwrap();

    let started = Instant::now();
    let calls: Vec<_> = (0..16)
        .map(|i| {
            let bridge = bridge.clone();
            tokio::spawn(async move {
                // Distinct pages: no sharing, so every caller queues for the legacy slot.
                bridge
                    .list_partners(
                        TOKEN,
                        Page {
                            start: i,
                            limit: 10,
                        },
                    )
                    .await
            })
        })
        .collect();
    // The first request times out and its reply is outstanding: the callers queued
    // behind it are told at once that the chain is behind (or reach their own deadline
    // first), and the silent chain is sent nothing more.
    // (On a loaded machine the broker may acknowledge the one request later than the
    // producer's 1 s message timeout: then the callers are told the broker is
    // unavailable, also at once.)
    let (mut timeouts, mut unavailable) = (0, 0);
    for call in calls {
        match call.await.unwrap() {
            Err(Error::Timeout(_)) => timeouts += 1,
            Err(Error::ChainBehind { shape, .. }) => assert_eq!(shape, Shape::List),
            Err(Error::BrokerUnavailable(_)) => unavailable += 1,
            other => panic!("{other:?}"),
        }
    }
    let elapsed = started.elapsed();
    // Everyone within about one deadline (1 s), not 16 of them; generous bounds.
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    let metrics = bridge.metrics();
    assert!(timeouts + unavailable >= 1);
    assert_eq!(metrics.requests(Topic::PartnerList), 1, "{metrics:?}");
    // Counted once per call, whichever timer fired first (the call's or its request's).
    assert_eq!(metrics.timeouts, timeouts);
    // A call refused with chain_behind just as its own deadline passed reads as a
    // timeout to its caller: counted in both.
    assert!(
        metrics.chain_behind >= 16 - timeouts - unavailable,
        "{metrics:?}"
    );
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_requests_in_flight_are_refused_at_once() {
    let topics = topics();
    let mut config = config(&kafka_brokers(), &topics);
    config.request_timeout = Duration::from_secs(2);
    config.correlation = CorrelationMode::Id;
    config.max_in_flight = 2;
    let bridge = Bridge::connect(config).await.unwrap();
    let a = tokio::spawn({
        let b = bridge.clone();
        async move { b.list_partners(TOKEN, Page { start: 1, limit: 1 }).await }
    });
    let b = tokio::spawn({
        let b = bridge.clone();
        async move { b.list_orders(TOKEN, Page { start: 2, limit: 1 }).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let third = bridge
        .list_partners(TOKEN, Page { start: 3, limit: 1 })
        .await;
    assert!(matches!(third, Err(Error::Overloaded(2))), "{third:?}");
    assert!(started.elapsed() < Duration::from_millis(500));
    // The same list as one in flight is not a new request: it shares the first one.
    let shared = bridge
        .list_partners(TOKEN, Page { start: 1, limit: 1 })
        .await;
    assert!(matches!(shared, Err(Error::Timeout(_))), "{shared:?}");
    assert!(matches!(a.await.unwrap(), Err(Error::Timeout(_))));
    assert!(matches!(b.await.unwrap(), Err(Error::Timeout(_))));
    let metrics = bridge.metrics();
    assert_eq!(metrics.overloaded, 1);
    assert_eq!(metrics.coalesced, 1);
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noise_on_the_reply_topic_is_counted_and_never_delivered() {
    let brokers = kafka_brokers();
    let topics = topics();
    let mut config = config(&brokers, &topics);
    config.correlation = CorrelationMode::Id;
    config.max_reply_bytes = 64 * 1024;
    let bridge = Bridge::connect(config).await.unwrap();
    let gateway = tiny_gateway(&brokers, &topics, true);

    let noise: FutureProducer = mes_e2e::client_config(&brokers).create().unwrap();
    let send_noise = |bytes: Vec<u8>, header: Option<&'static str>| {
        let noise = noise.clone();
        let topic = topics.reply.clone();
        async move {
            let mut record = FutureRecord::<(), [u8]>::to(&topic).payload(bytes.as_slice());
            if let Some(corr) = header {
                record = record.headers(OwnedHeaders::new().insert(Header {
                    key: "correlation_id",
                    value: Some(corr),
                }));
            }
            noise
                .send(record, Duration::from_secs(5))
                .await
                .map_err(|(e, _)| e)
                .unwrap();
        }
    };
    send_noise(b"\x00\xffgarbage".to_vec(), None).await;
    send_noise(b"[{'auth': 'T'}, {'data': [1, 2".to_vec(), None).await;
    // Over the bridge's size limit (set to 64 KiB below), under the broker's.
    send_noise(vec![b'['; 100 * 1024], None).await;
    let other = Reply::new("someone-else", None, ReplyBody::Data(vec![json!(99)]));
    send_noise(other.to_json_bytes(), None).await;
    let unknown = Reply::new(
        TOKEN,
        Some("not-a-request"),
        ReplyBody::Data(vec![json!(98)]),
    );
    send_noise(unknown.to_json_bytes(), None).await;
    let header_only = Reply::new(TOKEN, None, ReplyBody::Data(vec![json!(97)]));
    send_noise(header_only.to_json_bytes(), Some("also-unknown")).await;

    for start in 0..20 {
        let items = bridge
            .list_partners(TOKEN, Page { start, limit: 5 })
            .await
            .unwrap();
        assert_eq!(start_of(&items), start);
    }
    // The noise was read before or while the requests ran; give it a moment anyway.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = bridge.metrics();
        let done = m.dropped(DropReason::Undecodable) == 3
            && m.dropped(DropReason::OtherToken) == 1
            && m.dropped(DropReason::UnknownCorr) == 2;
        if done || Instant::now() > deadline {
            assert!(done, "{m:?}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(bridge.metrics().delivered, 20);
    gateway.abort();
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_goes_away_gives_typed_errors_and_service_resumes_when_it_returns() {
    let mut broker = PrivateBroker::start().unwrap();
    let brokers = broker.brokers();
    let topics = topics();
    let mut config = config(&brokers, &topics);
    config.request_timeout = Duration::from_secs(8);
    config.message_timeout = Duration::from_secs(2);
    let bridge = Bridge::connect(config).await.unwrap();
    let gateway = tiny_gateway(&brokers, &topics, true);
    let items = bridge
        .list_partners(TOKEN, Page { start: 7, limit: 1 })
        .await
        .unwrap();
    assert_eq!(start_of(&items), 7);

    broker.stop();
    let started = Instant::now();
    let down = bridge
        .list_partners(TOKEN, Page { start: 8, limit: 1 })
        .await;
    assert!(
        matches!(
            down,
            Err(Error::BrokerUnavailable(_)) | Err(Error::Timeout(_))
        ),
        "{down:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10), "no hang");
    let down = bridge.list_orders(TOKEN, Page { start: 9, limit: 1 }).await;
    assert!(matches!(down, Err(Error::BrokerUnavailable(_))), "{down:?}");

    broker.restart().unwrap();
    gateway.abort();
    let gateway = tiny_gateway(&brokers, &topics, true);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut start = 100;
    let recovered = loop {
        start += 1;
        match bridge.list_partners(TOKEN, Page { start, limit: 1 }).await {
            Ok(items) => break items,
            Err(e) if Instant::now() < deadline => {
                eprintln!("not yet recovered: {e}");
            }
            Err(e) => panic!("the bridge did not recover within 60 s: {e}"),
        }
    };
    assert_eq!(start_of(&recovered), start);
    assert!(bridge.metrics().broker_errors >= 1);
    gateway.abort();
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_gateway_behind_auto_mode_stays_one_at_a_time_and_correct() {
    let brokers = kafka_brokers();
    let topics = topics();
    let bridge = Bridge::connect(config(&brokers, &topics)).await.unwrap();
    let gateway = tiny_gateway(&brokers, &topics, false);
    let calls: Vec<_> = (0..24)
        .map(|start| {
            let bridge = bridge.clone();
            tokio::spawn(async move {
                let page = Page { start, limit: 1 };
                let items = if start % 2 == 0 {
                    bridge.list_partners(TOKEN, page).await
                } else {
                    bridge.list_orders(TOKEN, page).await
                };
                (start, items)
            })
        })
        .collect();
    for call in calls {
        let (start, items) = call.await.unwrap();
        assert_eq!(start_of(&items.unwrap()), start);
    }
    assert_eq!(bridge.echo(), kafka_bridge::bridge::Echo::Silent);
    gateway.abort();
    bridge.shutdown().await;
}
