//! realtime-server
fn main() {}
