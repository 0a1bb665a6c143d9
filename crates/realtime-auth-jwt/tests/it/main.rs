//! Integration tests of realtime-auth-jwt: real tokens minted with jsonwebtoken, verified
//! through the `TokenVerifier` port.

mod config;
mod mint;
mod refuse;
mod verify;
