//! The embedded demo: an in-process Kafka broker (librdkafka's mock cluster) and an
//! in-process chain ([`chain_sim`]) with demo partners and orders, so that
//! `cargo run -p mes-api` shows the whole flow with nothing installed. Only with the
//! cargo feature `embedded` (on by default): a server built without it refuses
//! `MES_KAFKA_BROKERS=embedded` at start.
//!
//! The mock cluster is not a real broker (no persistence, no admin API): it is used
//! only here, never as proof of Kafka behaviour; the test suite runs against tansu.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use chain_sim::{SimConfig, SimHandle, SimTopics, Simulator};
use kafka_bridge::kafka::TopicNames;
use rdkafka::mocking::MockCluster;

use crate::config::ConfigError;

/// The in-process broker and chain; [`Embedded::shutdown`] stops both.
pub struct Embedded {
    brokers: String,
    sim: Option<SimHandle>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded")
            .field("brokers", &self.brokers)
            .finish_non_exhaustive()
    }
}

fn setting_error(message: impl Into<String>) -> ConfigError {
    ConfigError::new("MES_KAFKA_BROKERS=embedded", message)
}

impl Embedded {
    /// Starts the mock cluster with every topic of `topics` (plus the simulator's ERP
    /// topics), then the simulator, which accepts `token`, seeds `demo` partner
    /// requests and orders, and signs its replies with its key (`sim().public_key()`).
    pub async fn start(
        topics: &TopicNames,
        token: &str,
        demo: usize,
    ) -> Result<Embedded, ConfigError> {
        let sim_topics = SimTopics {
            chain: topics.clone(),
            ..SimTopics::default()
        };
        let names: Vec<String> = sim_topics.all().iter().map(|t| (*t).to_owned()).collect();
        // The mock cluster holds a raw pointer (not Send): it lives on its own thread
        // until told to stop.
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String, String>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("mock-kafka".into())
            .spawn(move || {
                let cluster = match MockCluster::new(1) {
                    Ok(cluster) => cluster,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("cannot start the mock cluster: {e}")));
                        return;
                    }
                };
                for name in &names {
                    // The mock cluster has no admin API: its own call creates topics.
                    if let Err(e) = cluster.create_topic(name, 1, 1) {
                        let _ = ready_tx.send(Err(format!("cannot create topic {name}: {e}")));
                        return;
                    }
                }
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                let _ = stop_rx.recv();
                drop(cluster);
            })
            .map_err(|e| setting_error(format!("cannot start the mock cluster thread: {e}")))?;
        let brokers = rocket::tokio::task::spawn_blocking(move || ready_rx.recv())
            .await
            .map_err(|e| setting_error(e.to_string()))?
            .map_err(|_| setting_error("the mock cluster thread stopped"))?
            .map_err(setting_error)?;

        let mut config = SimConfig::new(brokers.clone());
        config.topics = sim_topics;
        config.tokens = vec![token.to_owned()];
        config.demo = demo;
        // Signed and bound to their requests, so the demo verifies its replies.
        config.gateway.sign_replies = true;
        config.create_topics = false;
        config.start_timeout = Duration::from_secs(20);
        let sim = Simulator::start(config)
            .await
            .map_err(|e| setting_error(format!("cannot start the simulated chain: {e}")))?;
        Ok(Embedded {
            brokers,
            sim: Some(sim),
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// `bootstrap.servers` of the mock cluster.
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// The simulated chain, e.g. to look at its ledger in tests.
    pub fn sim(&self) -> Option<&SimHandle> {
        self.sim.as_ref()
    }

    /// Stops the simulator, then the mock cluster.
    pub async fn shutdown(mut self) {
        if let Some(sim) = self.sim.take()
            && let Err(e) = sim.shutdown().await
        {
            tracing::warn!("stopping the simulated chain: {e}");
        }
        self.stop_cluster();
    }

    fn stop_cluster(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
