//! The in-process adapters of the stream ports, the default of a single node:
//! [`InMemoryBroker`] ([`Broker`](realtime_ports::Broker)) and [`InMemoryPresence`]
//! ([`Presence`](realtime_ports::Presence)). `cargo run -p realtime-server` needs nothing else.
//!
//! History lives as long as the process: a restart draws new epochs, so clients that
//! reconnect with old positions are told `recovered: false`, never given a silent gap.
//!
//! **Architecture Invariant:** neither adapter awaits or does I/O; [`InMemoryBroker`] calls
//! the node's `LocalDelivery` while it holds the stream's lock, so publications of one stream
//! are delivered in offset order.

mod broker;
mod presence;

pub use broker::{InMemoryBroker, InMemoryBrokerConfig};
pub use presence::InMemoryPresence;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use realtime_ports::{Broker, Presence};

    use super::*;

    realtime_testkit::broker_contract_tests!(|history| {
        let config = InMemoryBrokerConfig { history, ..InMemoryBrokerConfig::default() };
        Arc::new(InMemoryBroker::new(config)) as Arc<dyn Broker>
    });

    realtime_testkit::presence_contract_tests!(
        || Arc::new(InMemoryPresence::new()) as Arc<dyn Presence>
    );
}
