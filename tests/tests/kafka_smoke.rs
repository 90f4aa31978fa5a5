//! Smoke tests of the test broker: proves that tansu, driven by rdkafka the way
//! mes-bridge drives it (idempotent producer, consumer groups, headers), delivers what was
//! produced. When these fail, every other end-to-end test fails for the same reason.
//!
//! Timings are printed (`--nocapture`) for the record, never asserted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use mes_e2e::{
    BROKER_TIMEOUT, TopicStatus, client_config, create_topics, kafka_brokers, unique_topic,
    wait_for_assignment,
};
use rdkafka::{
    consumer::{Consumer, StreamConsumer},
    error::KafkaError,
    message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders, OwnedMessage},
    producer::{FutureProducer, FutureRecord},
    util::Timeout,
};
use tokio::{sync::mpsc, time::timeout};

/// Longest wait for any one record; a broken broker fails the test after this long.
const WAIT: Duration = Duration::from_secs(30);

fn idempotent_producer(brokers: &str) -> FutureProducer {
    client_config(brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "20000")
        .create()
        .expect("creating the producer")
}

fn group_consumer(brokers: &str, offset_reset: &str) -> StreamConsumer {
    client_config(brokers)
        .set("group.id", unique_topic("smoke-group"))
        .set("auto.offset.reset", offset_reset)
        .set("enable.partition.eof", "true")
        .set("session.timeout.ms", "10000")
        .create()
        .expect("creating the consumer")
}

/// Produces one record and returns its offset, failing when the broker does not
/// acknowledge it within [`WAIT`].
async fn produce(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    value: &str,
    headers: &[(&str, &str)],
) -> i64 {
    let headers = headers
        .iter()
        .fold(OwnedHeaders::new(), |all, (key, value)| {
            all.insert(Header {
                key,
                value: Some(*value),
            })
        });
    let record = FutureRecord::to(topic)
        .key(key)
        .payload(value)
        .headers(headers);
    let delivery = timeout(WAIT, producer.send(record, Timeout::After(WAIT)))
        .await
        .expect("the broker did not acknowledge the record in time")
        .map_err(|(error, _)| error)
        .expect("the broker refused the record");
    assert_eq!(delivery.partition, 0, "single-partition topic");
    delivery.offset
}

fn headers_of(message: &impl Message) -> Vec<(String, String)> {
    message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|header| {
                    (
                        header.key.to_owned(),
                        String::from_utf8(header.value.unwrap_or_default().to_vec()).unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn text(bytes: Option<&[u8]>) -> String {
    String::from_utf8(bytes.expect("field is present").to_vec()).unwrap()
}

#[tokio::test]
async fn records_round_trip_through_a_consumer_group() {
    let brokers = kafka_brokers();
    let topic = unique_topic("smoke");

    let started = Instant::now();
    let created = create_topics(&brokers, &[&topic], 1).await.unwrap();
    eprintln!(
        "create_topics (incl. metadata wait): {:?}",
        started.elapsed()
    );
    assert_eq!(created, [TopicStatus::Created]);
    let again = create_topics(&brokers, &[&topic], 1).await.unwrap();
    assert_eq!(
        again,
        [TopicStatus::AlreadyExists],
        "creating an existing topic is reported, not an error"
    );

    let producer = idempotent_producer(&brokers);
    let sent: Vec<(String, String, String)> = (0..5)
        .map(|i| {
            (
                format!("key-{i}"),
                format!("{{\"n\": {i}}}"),
                uuid::Uuid::new_v4().to_string(),
            )
        })
        .collect();
    let started = Instant::now();
    let mut offsets = Vec::new();
    for (i, (key, value, correlation)) in sent.iter().enumerate() {
        let index = i.to_string();
        let headers = [("correlation_id", correlation.as_str()), ("index", &index)];
        offsets.push(produce(&producer, &topic, key, value, &headers).await);
    }
    eprintln!("5 acknowledged produces: {:?}", started.elapsed());
    assert!(
        offsets.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "offsets are consecutive: {offsets:?}"
    );

    let consumer = group_consumer(&brokers, "earliest");
    consumer.subscribe(&[&topic]).unwrap();
    let started = Instant::now();
    let mut received: Vec<OwnedMessage> = Vec::new();
    while received.len() < sent.len() {
        match timeout(WAIT, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of 5 records within {WAIT:?}", received.len()))
        {
            Ok(message) => received.push(message.detach()),
            Err(KafkaError::PartitionEOF(_)) => {}
            Err(error) => panic!("consumer error: {error}"),
        }
    }
    eprintln!(
        "group consumer: subscribe -> 5 records: {:?}",
        started.elapsed()
    );

    for (i, (message, (key, value, correlation))) in received.iter().zip(&sent).enumerate() {
        assert_eq!(message.topic(), topic);
        assert_eq!(message.offset(), offsets[i], "record {i} in produce order");
        assert_eq!(text(message.key()), *key);
        assert_eq!(text(message.payload()), *value);
        assert_eq!(
            headers_of(message),
            [
                ("correlation_id".to_owned(), correlation.clone()),
                ("index".to_owned(), i.to_string()),
            ]
        );
    }
}

/// What the task that drives the consumer saw.
#[derive(Debug)]
enum Event {
    Record(OwnedMessage),
    EndOfPartition(i32),
}

fn event(received: Result<BorrowedMessage<'_>, KafkaError>) -> Event {
    match received {
        Ok(message) => Event::Record(message.detach()),
        Err(KafkaError::PartitionEOF(partition)) => Event::EndOfPartition(partition),
        Err(error) => panic!("consumer error: {error}"),
    }
}

async fn next_event(events: &mut mpsc::UnboundedReceiver<Event>) -> Event {
    timeout(WAIT, events.recv())
        .await
        .expect("no consumer event in time")
        .expect("the consumer task ended")
}

/// The reply consumer's situation: it joins its group on an existing topic, starting at
/// the end (`latest`), and must receive what is produced once it is ready. Ready means
/// assigned AND positioned: the end-of-partition event says the start offset is known.
#[tokio::test]
async fn consumer_that_joined_first_receives_a_later_record() {
    let brokers = kafka_brokers();
    let topic = unique_topic("smoke-late");
    create_topics(&brokers, &[&topic], 1).await.unwrap();
    let producer = idempotent_producer(&brokers);
    // A record from before the consumer joined, which `latest` must skip.
    produce(&producer, &topic, "old", "before", &[]).await;

    let consumer = Arc::new(group_consumer(&brokers, "latest"));
    consumer.subscribe(&[&topic]).unwrap();
    let joined = Instant::now();
    let (sender, mut events) = mpsc::unbounded_channel();
    let driver = tokio::spawn({
        let consumer = Arc::clone(&consumer);
        async move {
            loop {
                let event = event(consumer.recv().await);
                if sender.send(event).is_err() {
                    break;
                }
            }
        }
    });

    let assignment = wait_for_assignment(consumer.as_ref(), BROKER_TIMEOUT)
        .await
        .unwrap();
    eprintln!("group join -> assignment: {:?}", joined.elapsed());
    assert_eq!(assignment.count(), 1);
    match next_event(&mut events).await {
        Event::EndOfPartition(0) => {}
        other => panic!("expected end of partition 0 (nothing new yet), got {other:?}"),
    }
    eprintln!("group join -> positioned at end: {:?}", joined.elapsed());

    let correlation = uuid::Uuid::new_v4().to_string();
    let produced = Instant::now();
    let offset = produce(
        &producer,
        &topic,
        "reply",
        "after",
        &[("correlation_id", &correlation)],
    )
    .await;
    let message = loop {
        match next_event(&mut events).await {
            Event::Record(message) => break message,
            Event::EndOfPartition(_) => {}
        }
    };
    eprintln!("produce -> consumed: {:?}", produced.elapsed());
    driver.abort();

    assert_eq!(
        message.offset(),
        offset,
        "the record produced after joining"
    );
    assert_eq!(text(message.key()), "reply");
    assert_eq!(text(message.payload()), "after");
    assert_eq!(
        headers_of(&message),
        [("correlation_id".to_owned(), correlation)]
    );
}
