//! realtime-registry-mem
