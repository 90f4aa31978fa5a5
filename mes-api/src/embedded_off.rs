//! The embedded demo, left out of this build (cargo feature `embedded` off): the
//! server needs a real cluster, and `MES_KAFKA_BROKERS=embedded` (also the default
//! when the setting is not given) is refused at start with one line naming it
//! ([`Settings::check_embedded_built`](crate::config::Settings::check_embedded_built)).

/// The in-process broker and chain, which this build cannot start: the type has no
/// value, and stays so that [`App`](crate::app::App) is the same in both builds.
#[derive(Debug)]
pub enum Embedded {}

impl Embedded {
    /// Stops the in-process broker and chain; never runs, since no value exists.
    pub async fn shutdown(self) {
        match self {}
    }
}
