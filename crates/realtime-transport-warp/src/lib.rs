//! realtime-transport-warp
