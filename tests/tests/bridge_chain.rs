//! The bridge against `chain-sim` on the real broker: concurrency in every correlation
//! mode, several bridges on one reply topic, slow and legacy gateways, shared lists.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use chain_sim::{DEFAULT_TOKEN, SimConfig, SimHandle, SimTopics, Simulator};
use kafka_bridge::Error;
use kafka_bridge::bridge::{
    Bridge, BridgeConfig, CallOptions, CorrelationMode, DropReason, Echo, Listing,
};
use kafka_bridge::kafka::KafkaConfig;
use mes_core::codec::{Page, Topic};
use mes_core::domain::{Answer, RequestId, Status};
use mes_core::signing::SigningKey;
use mes_e2e::kafka_brokers;
use serde_json::Value;

struct Gateway {
    echo: bool,
    python_literal: bool,
    delay: Duration,
    demo: usize,
}

impl Default for Gateway {
    fn default() -> Self {
        Gateway {
            echo: true,
            python_literal: false,
            delay: Duration::ZERO,
            demo: 0,
        }
    }
}

async fn simulator(gateway: Gateway) -> SimHandle {
    let suffix = format!("-{}", uuid::Uuid::new_v4().simple());
    let mut config = SimConfig::new(kafka_brokers());
    config.topics = SimTopics::with_suffix(&suffix);
    config.group_id = format!("chain-sim{suffix}");
    config.gateway.no_echo = !gateway.echo;
    config.gateway.python_literal = gateway.python_literal;
    config.delay = gateway.delay;
    config.demo = gateway.demo;
    Simulator::start(config).await.unwrap()
}

fn bridge_config(sim: &SimHandle, mode: CorrelationMode) -> BridgeConfig {
    let mut config = BridgeConfig::new(KafkaConfig::new(kafka_brokers()));
    config.topics = sim.topics().chain.clone();
    config.correlation = mode;
    config
}

fn id_of(item: &Value, key: &str) -> String {
    item[key].as_str().unwrap().to_owned()
}

/// Every partner and order id, in the simulator's list order.
async fn full_lists(bridge: &Bridge) -> (Vec<String>, Vec<String>) {
    let all = Page {
        start: 0,
        limit: 10_000,
    };
    let partners = bridge.list_partners(DEFAULT_TOKEN, all).await.unwrap();
    let orders = bridge.list_orders(DEFAULT_TOKEN, all).await.unwrap();
    (
        partners
            .iter()
            .map(|p| id_of(p, "partner_request_id"))
            .collect(),
        orders.iter().map(|o| id_of(o, "abs_action_id")).collect(),
    )
}

/// `n` concurrent single-item list calls, partners and orders mixed, each checked
/// against the item at its own `start`.
async fn every_caller_gets_its_own_reply(bridge: &Bridge, n: u32) {
    let (partners, orders) = full_lists(bridge).await;
    assert!(partners.len() >= n as usize && orders.len() >= n as usize);
    let calls: Vec<_> = (0..n)
        .map(|start| {
            let bridge = bridge.clone();
            tokio::spawn(async move {
                let page = Page { start, limit: 1 };
                if start % 2 == 0 {
                    let items = bridge.list_partners(DEFAULT_TOKEN, page).await;
                    (start, "partner_request_id", items)
                } else {
                    let items = bridge.list_orders(DEFAULT_TOKEN, page).await;
                    (start, "abs_action_id", items)
                }
            })
        })
        .collect();
    for call in calls {
        let (start, key, items) = call.await.unwrap();
        let items = items.unwrap_or_else(|e| panic!("call {start}: {e}"));
        assert_eq!(items.len(), 1, "call {start}");
        let expected = if key == "partner_request_id" {
            &partners[start as usize]
        } else {
            &orders[start as usize]
        };
        assert_eq!(
            &id_of(&items[0], key),
            expected,
            "call {start} got another reply"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_requests_in_auto_mode_each_get_their_own_reply() {
    let sim = simulator(Gateway {
        demo: 500,
        ..Gateway::default()
    })
    .await;
    let bridge = Bridge::connect(bridge_config(&sim, CorrelationMode::Auto))
        .await
        .unwrap();
    every_caller_gets_its_own_reply(&bridge, 500).await;
    // The first reply showed that the gateway echoes: the rest ran concurrently.
    assert_eq!(bridge.echo(), Echo::Echoes);
    assert_eq!(bridge.metrics().timeouts, 0);
    bridge.shutdown().await;
    sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_requests_behind_a_legacy_python_literal_gateway_in_auto_and_legacy_mode()
 {
    let sim = simulator(Gateway {
        echo: false,
        python_literal: true,
        demo: 100,
        ..Gateway::default()
    })
    .await;
    for mode in [CorrelationMode::Auto, CorrelationMode::Legacy] {
        let bridge = Bridge::connect(bridge_config(&sim, mode)).await.unwrap();
        every_caller_gets_its_own_reply(&bridge, 100).await;
        assert_eq!(bridge.echo(), Echo::Silent, "{mode}");
        let metrics = bridge.metrics();
        assert_eq!(metrics.timeouts, 0, "{mode}");
        assert_eq!(metrics.dropped(DropReason::Undecodable), 0, "{mode}");
        bridge.shutdown().await;
    }
    sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_bridges_on_one_reply_topic_each_get_only_their_own_replies() {
    let sim = simulator(Gateway {
        demo: 100,
        ..Gateway::default()
    })
    .await;
    let a = Bridge::connect(bridge_config(&sim, CorrelationMode::Auto))
        .await
        .unwrap();
    let b = Bridge::connect(bridge_config(&sim, CorrelationMode::Auto))
        .await
        .unwrap();
    let (ra, rb) = tokio::join!(
        every_caller_gets_its_own_reply(&a, 100),
        every_caller_gets_its_own_reply(&b, 100)
    );
    let _ = (ra, rb);
    // Each saw the other's replies on the shared topic and dropped them (the faster
    // bridge may still be reading the slower one's last replies: wait for them).
    for bridge in [&a, &b] {
        let seen = Instant::now() + Duration::from_secs(30);
        while bridge.metrics().dropped(DropReason::UnknownCorr) < 100 && Instant::now() < seen {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let metrics = bridge.metrics();
        assert!(
            metrics.dropped(DropReason::UnknownCorr) >= 100,
            "{metrics:?}"
        );
        assert_eq!(metrics.timeouts, 0);
    }
    a.shutdown().await;
    b.shutdown().await;
    sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_legacy_chain_times_some_answers_out_and_never_hands_a_reply_to_another_caller() {
    let delay = Duration::from_millis(400);
    let sim = simulator(Gateway {
        echo: false,
        delay,
        ..Gateway::default()
    })
    .await;
    let ids: Vec<RequestId> = sim.with_ledger(|ledger| {
        (0..64)
            .map(|i| {
                ledger
                    .add_partner(
                        SigningKey::generate().agent_key(),
                        Status::Open,
                        1_700_000_000 + i,
                    )
                    .unwrap()
            })
            .collect()
    });
    let mut config = bridge_config(&sim, CorrelationMode::Legacy);
    config.legacy_fence_max = Duration::from_secs(30);
    let bridge = Bridge::connect(config).await.unwrap();
    // First, one call that certainly ends before its reply: sent at once (the slot is
    // free), given half the chain's delay. Its reply, when it comes, is nobody's.
    let (first, ids) = ids.split_first().unwrap();
    let early = CallOptions {
        timeout: Some(delay / 2),
        ..CallOptions::default()
    };
    let ended = bridge
        .answer(
            DEFAULT_TOKEN,
            Listing::Partners,
            first.clone(),
            Answer::Accept,
            early,
        )
        .await;
    assert!(matches!(ended, Err(Error::Timeout(_))), "{ended:?}");
    assert_eq!(bridge.fence_counts().raised, 1, "its shape is fenced");
    let calls: Vec<_> = ids
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, id)| {
            let bridge = bridge.clone();
            tokio::spawn(async move {
                // One request at a time, each answered after the chain's delay. Most
                // deadlines are spread 137 ms apart, less than one slot's 400 ms, so
                // the callers that reach the slot in time mostly time out just before
                // their reply arrives (the most dangerous moment); every fourth caller
                // can wait for all the others and always gets through.
                let timeout = if i % 4 == 3 {
                    Duration::from_secs(60)
                } else {
                    Duration::from_millis(300 + 137 * i as u64)
                };
                // An operator told "the chain is behind" tries again once it caught up;
                // nothing was sent for that call.
                let mut behind = 0;
                loop {
                    let options = CallOptions {
                        timeout: Some(timeout),
                        ..CallOptions::default()
                    };
                    let answered = bridge
                        .answer(
                            DEFAULT_TOKEN,
                            Listing::Partners,
                            id.clone(),
                            Answer::Accept,
                            options,
                        )
                        .await;
                    if !matches!(answered, Err(Error::ChainBehind { .. })) {
                        return (id, answered, behind);
                    }
                    behind += 1;
                    while !bridge.fences().is_empty() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect();
    let (mut ok, mut timed_out, mut behind) = (0, 0, 0);
    for call in calls {
        let (id, answered, was_behind) = call.await.unwrap();
        behind += was_behind;
        match answered {
            Ok(answered) => {
                let text = answered.message.as_str().unwrap().to_owned();
                assert!(text.contains(id.as_str()), "{id} got {text:?}");
                ok += 1;
            }
            Err(Error::Timeout(_)) => timed_out += 1,
            Err(e) => panic!("{id}: {e}"),
        }
    }
    assert!(ok > 0, "no answer got through");
    assert!(
        timed_out > 0,
        "nothing timed out: the test did not test anything"
    );
    // Each timeout of the slot's holder fences answers until its reply comes. Whether a
    // caller then tries while fenced (and is told `chain_behind`) depends on the
    // machine's timing; that the fence went up and its reply went to nobody does not.
    assert!(
        bridge.fence_counts().raised > 0,
        "no fence went up: the test did not test it"
    );
    // The late replies lift their fence and are counted, never delivered.
    let deadline = Instant::now() + Duration::from_secs(10);
    while bridge.metrics().dropped(DropReason::Late) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(bridge.metrics().dropped(DropReason::Late) > 0);
    eprintln!("{ok} answered, {timed_out} timed out, {behind} told the chain is behind");
    bridge.shutdown().await;
    sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_identical_list_calls_cost_the_chain_one_request() {
    let sim = simulator(Gateway {
        echo: false,
        delay: Duration::from_millis(1000),
        demo: 5,
        ..Gateway::default()
    })
    .await;
    let bridge = Bridge::connect(bridge_config(&sim, CorrelationMode::Auto))
        .await
        .unwrap();
    let before = sim.counters();
    let started = Instant::now();
    let calls: Vec<_> = (0..64)
        .map(|_| {
            let bridge = bridge.clone();
            tokio::spawn(async move { bridge.list_partners(DEFAULT_TOKEN, Page::default()).await })
        })
        .collect();
    let mut lists = Vec::new();
    for call in calls {
        lists.push(call.await.unwrap().unwrap());
    }
    let elapsed = started.elapsed();
    assert!(lists.iter().all(|l| l == &lists[0] && l.len() == 5));
    // About one chain round trip (1 s), not 64 of them; a generous bound.
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    let after = sim.counters();
    let seen = |c: &chain_sim::Counters| {
        c.by_topic
            .get(Topic::PartnerList.name())
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(
        seen(&after) - seen(&before),
        1,
        "the chain saw more than one request"
    );
    assert_eq!(bridge.metrics().coalesced, 63);
    bridge.shutdown().await;
    sim.shutdown().await.unwrap();
}
