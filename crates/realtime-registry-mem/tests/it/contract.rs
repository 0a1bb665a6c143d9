//! The shared `ConnectionRegistry` contract suite, run against `InMemoryRegistry`.

use std::sync::Arc;

use realtime_ports::ConnectionRegistry;
use realtime_registry_mem::InMemoryRegistry;

realtime_testkit::registry_contract_tests!(
    || Arc::new(InMemoryRegistry::new()) as Arc<dyn ConnectionRegistry>
);

/// The same suite through `Default`, all checks in one run.
#[test]
fn contract_holds_for_a_default_registry() {
    realtime_testkit::registry_contract::run_all(|| {
        Arc::new(InMemoryRegistry::default()) as Arc<dyn ConnectionRegistry>
    });
}
