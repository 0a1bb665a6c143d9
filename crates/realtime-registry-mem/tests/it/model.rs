//! Model-based property test: `InMemoryRegistry` agrees with `realtime_core::route` over a
//! naive `Vec<Connection>` after every step of random operation sequences.

use std::sync::Arc;

use realtime_ports::ConnectionRegistry;
use realtime_registry_mem::InMemoryRegistry;

#[test]
fn registry_agrees_with_the_routing_model() {
    realtime_testkit::check_registry_against_model(|| {
        Arc::new(InMemoryRegistry::new()) as Arc<dyn ConnectionRegistry>
    });
}
