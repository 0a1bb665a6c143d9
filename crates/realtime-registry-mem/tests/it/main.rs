//! Integration tests of `InMemoryRegistry`: the registry contract suite, the model-based
//! property test and the indexing checks, in one test binary.

mod contract;
mod indexing;
mod model;
