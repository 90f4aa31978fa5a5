//! A private tansu broker per test, for the tests that take the broker away and bring it
//! back (the shared one from `./scripts/test` must stay up for everyone else).
//!
//! Clients reach the broker through a TCP relay on the port they were given. Taking the
//! broker away closes the relay: every connection is cut and new ones are refused, as
//! when a broker process dies. Bringing it back opens the relay again on the same port,
//! and the broker behind it still holds its topics, their ids, logs and groups, as a real
//! cluster keeps them across a restart.
//!
//! Killing tansu itself would not do: its memory storage forgets the topics, and the
//! topics a test makes again get new topic ids under the same names. librdkafka 2.12's
//! metadata cache can be corrupted by such a change and crash the whole test process
//! (SIGSEGV in `rd_kafka_metadata_cache_find`, from `rd_kafka_metadata_update_op`;
//! confluentinc/librdkafka#4964 and #5280), which CI hit in one run out of many. A broker
//! that keeps its topics is also what the tests mean to model.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::sync::oneshot;

/// Environment variable holding the path of the tansu binary (set by `./scripts/test`).
pub const TANSU_BIN_ENV: &str = "MES_TEST_TANSU_BIN";

/// A tansu process of a test's own (memory storage) behind a relay the test can close
/// and open again; both go on drop.
#[derive(Debug)]
pub struct PrivateBroker {
    child: Child,
    dir: PathBuf,
    /// Where clients connect, and what the broker advertises in its metadata.
    public: SocketAddr,
    /// Where tansu itself listens.
    upstream: SocketAddr,
    relay: Option<Relay>,
}

impl PrivateBroker {
    /// Starts a broker on free ports, waits until it accepts connections, and opens the
    /// relay to it.
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
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let public = listener.local_addr()?;
        let upstream = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?;
        let dir = std::env::temp_dir().join(format!("mes-e2e-tansu-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::File::create(dir.join("tansu.log"))?;
        let advertised = format!("tcp://{public}");
        let child = Command::new(&bin)
            .args(["broker", "--cluster-id", "mes-e2e-private"])
            .args(["--listener-url", &format!("tcp://{upstream}")])
            .args(["--advertised-listener-url", &advertised])
            .args(["--storage-engine", "memory://tansu/"])
            .current_dir(&dir)
            .env("RUST_LOG", "warn")
            .env_remove("SCHEMA_REGISTRY")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut broker = PrivateBroker {
            child,
            dir,
            public,
            upstream,
            relay: None,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&upstream, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline {
                bail!("private tansu did not accept connections on {upstream} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        broker.relay = Some(Relay::open(listener, upstream)?);
        Ok(broker)
    }

    /// `host:port` of this broker, as clients reach it.
    pub fn brokers(&self) -> String {
        self.public.to_string()
    }

    /// Takes the broker away, like a crash: cuts every client connection and refuses new
    /// ones until [`PrivateBroker::restart`]. Returns once the port is closed.
    pub fn stop(&mut self) {
        if let Some(relay) = self.relay.take() {
            relay.close();
        }
    }

    /// Brings the broker back on the same port, with the topics, logs and groups it held.
    ///
    /// # Errors
    ///
    /// When the port cannot be bound again.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let listener = TcpListener::bind(self.public)
            .with_context(|| format!("binding {} again", self.public))?;
        self.relay = Some(Relay::open(listener, self.upstream)?);
        Ok(())
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.stop();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A thread that copies bytes between each client and the broker until it is closed.
///
/// It runs its own single-threaded runtime, so closing it does not depend on the test's
/// runtime: when the thread ends, its runtime drops the listener and every connection.
#[derive(Debug)]
struct Relay {
    close: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

impl Relay {
    fn open(listener: TcpListener, upstream: SocketAddr) -> anyhow::Result<Relay> {
        listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (close, closed) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("broker-relay".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    tokio::select! {
                        _ = closed => {}
                        () = accept(listener, upstream) => {}
                    }
                });
                // Dropping the runtime drops every connection task with its sockets.
                drop(runtime);
            })?;
        Ok(Relay { close, thread })
    }

    fn close(self) {
        let _ = self.close.send(());
        let _ = self.thread.join();
    }
}

async fn accept(listener: tokio::net::TcpListener, upstream: SocketAddr) {
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            // Out of descriptors, say: try again without spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        tokio::spawn(async move {
            if let Ok(mut broker) = tokio::net::TcpStream::connect(upstream).await {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
            }
        });
    }
}
