//! realtime-auth-jwt
