//! A private tansu broker per test, for the tests that stop and restart the broker
//! (the shared one from `./scripts/test` must stay up for everyone else).

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// Environment variable holding the path of the tansu binary (set by `./scripts/test`).
pub const TANSU_BIN_ENV: &str = "MES_TEST_TANSU_BIN";

/// A tansu process on a loopback port of its own, in-memory storage; killed on drop.
///
/// tansu's memory storage forgets topics when it stops, so after [`PrivateBroker::restart`]
/// the test recreates its topics, as a real cluster would have kept them (and, where a
/// client keeps reading at its old position, their offsets: [`LogEnd`]).
#[derive(Debug)]
pub struct PrivateBroker {
    bin: PathBuf,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateBroker {
    /// Starts a broker on a free port and waits until it accepts connections.
    ///
    /// # Errors
    ///
    /// When [`TANSU_BIN_ENV`] is unset or the broker does not come up within 30 s.
    pub fn start() -> anyhow::Result<PrivateBroker> {
        let bin = std::env::var(TANSU_BIN_ENV)
            .map(PathBuf::from)
            .with_context(|| {
                format!("{TANSU_BIN_ENV} is not set: run the tests with ./scripts/test")
            })?;
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let dir = std::env::temp_dir().join(format!("mes-e2e-tansu-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        let mut broker = PrivateBroker {
            bin,
            port,
            dir,
            child: None,
        };
        broker.spawn()?;
        Ok(broker)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::File::create(self.dir.join("tansu.log"))?;
        let child = Command::new(&self.bin)
            .args(["broker", "--cluster-id", "mes-e2e-private"])
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .current_dir(&self.dir)
            .env("RUST_LOG", "warn")
            .env_remove("SCHEMA_REGISTRY")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.child = Some(child);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline {
                bail!("private tansu did not accept connections on {addr} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// `host:port` of this broker.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the broker (like a crash: no clean shutdown) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same port (empty: memory storage).
    ///
    /// # Errors
    ///
    /// As [`PrivateBroker::start`].
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where each partition of a topic ends, read before a [`PrivateBroker`] stops, to make
/// the topic end there again after [`PrivateBroker::restart`].
///
/// A real cluster keeps a topic's log across a restart, and a consumer goes on from its
/// position. tansu's memory storage starts the recreated topic at offset 0, and a
/// consumer positioned past the new end (the bridge's reply consumer, assigned at the
/// old end) waits there: tansu answers such a fetch with no records instead of
/// `OFFSET_OUT_OF_RANGE`, so the consumer never resets and misses every record until
/// the log has grown back to its position. [`LogEnd::restore`] fills the gap with
/// empty records, which a reader drops as undecodable.
#[derive(Debug, Clone)]
pub struct LogEnd {
    topic: String,
    ends: Vec<(i32, i64)>,
}

impl LogEnd {
    /// The end (high watermark) of every partition of `topic` on `brokers`.
    ///
    /// # Errors
    ///
    /// When the broker does not answer within [`crate::BROKER_TIMEOUT`].
    pub async fn read(brokers: &str, topic: &str) -> anyhow::Result<LogEnd> {
        let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = crate::client_config(&brokers).create()?;
            let metadata = consumer.fetch_metadata(Some(&topic), crate::BROKER_TIMEOUT)?;
            let mut ends = Vec::new();
            for partition in metadata
                .topics()
                .iter()
                .filter(|t| t.name() == topic)
                .flat_map(|t| t.partitions())
            {
                let (_, high) =
                    consumer.fetch_watermarks(&topic, partition.id(), crate::BROKER_TIMEOUT)?;
                ends.push((partition.id(), high));
            }
            if ends.is_empty() {
                bail!("topic {topic} has no partitions on {brokers}");
            }
            Ok(LogEnd { topic, ends })
        })
        .await?
        .context("reading where the log ends")
    }

    /// Appends empty records to each partition of the (recreated) topic on `brokers`
    /// until it ends where it ended when read.
    ///
    /// # Errors
    ///
    /// When the broker refuses a record or does not answer.
    pub async fn restore(&self, brokers: &str) -> anyhow::Result<()> {
        let now = LogEnd::read(brokers, &self.topic).await?;
        let producer: FutureProducer = crate::client_config(brokers)
            .set("linger.ms", "0")
            .create()?;
        for &(partition, end) in &self.ends {
            let from = now
                .ends
                .iter()
                .find(|(p, _)| *p == partition)
                .map(|(_, high)| *high)
                .with_context(|| format!("{} has no partition {partition}", self.topic))?;
            for _ in from..end {
                producer
                    .send(
                        FutureRecord::<(), ()>::to(&self.topic).partition(partition),
                        crate::BROKER_TIMEOUT,
                    )
                    .await
                    .map_err(|(e, _)| e)
                    .with_context(|| format!("padding {}/{partition}", self.topic))?;
            }
        }
        Ok(())
    }
}
