//! realtime-testkit
