//! Integration tests of the Redis broker, against a `redis-server` each test starts itself
//! (`realtime_testkit::RedisProcess`, on a free port, killed at the end).

mod contract;
mod failures;
mod faults;
mod nodes;
mod presence;
mod probe;
mod support;
