//! realtime-service
