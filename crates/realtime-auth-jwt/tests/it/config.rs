//! Configuration checks: weak or wrong keys are refused at construction, and secrets never
//! show in `Debug`.

use std::time::Duration;

use realtime_auth_jwt::{JwtConfig, JwtConfigError, JwtKey, JwtVerifier};

use crate::mint::{SECRET, fixture};

#[track_caller]
fn refused(config: JwtConfig) -> JwtConfigError {
    match JwtVerifier::new(config) {
        Ok(v) => panic!("accepted: {v:?}"),
        Err(e) => e,
    }
}

#[test]
fn short_secret_is_refused() {
    assert_eq!(
        refused(JwtConfig::hs256(vec![7u8; 31])),
        JwtConfigError::SecretTooShort { len: 31, min: 32 }
    );
    assert_eq!(
        refused(JwtConfig::hs256(Vec::new())),
        JwtConfigError::SecretTooShort { len: 0, min: 32 }
    );
    assert!(JwtVerifier::new(JwtConfig::hs256(vec![7u8; 32])).is_ok());
}

#[test]
fn bad_public_keys_are_refused() {
    #[track_caller]
    fn invalid(config: JwtConfig, expected_algorithm: &str) {
        match refused(config) {
            JwtConfigError::InvalidKey { algorithm, message } => {
                assert_eq!(algorithm, expected_algorithm);
                assert!(!message.is_empty());
            }
            other => panic!("expected InvalidKey, got {other:?}"),
        }
    }
    invalid(JwtConfig::rs256_pem(b"not a pem".to_vec()), "RS256");
    invalid(JwtConfig::rs256_pem(Vec::new()), "RS256");
    invalid(JwtConfig::rs256_pem(fixture("rsa_private.pem")), "RS256");
    invalid(JwtConfig::rs256_pem(fixture("ec_public.pem")), "RS256");
    invalid(
        JwtConfig::es256_pem(b"-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n".to_vec()),
        "ES256",
    );
    invalid(JwtConfig::es256_pem(fixture("ec_private.pem")), "ES256");
    invalid(JwtConfig::es256_pem(fixture("rsa_public.pem")), "ES256");
    invalid(JwtConfig::es256_pem(fixture("ec_p384_public.pem")), "ES256");
    assert_eq!(
        refused(JwtConfig::rs256_pem(fixture("rsa1024_public.pem"))),
        JwtConfigError::KeyTooSmall { bits: 1024, min: 2048 }
    );
}

#[test]
fn empty_issuer_or_audience_is_refused() {
    assert_eq!(
        refused(JwtConfig::hs256(SECRET).with_issuer("")),
        JwtConfigError::EmptySetting { setting: "issuer" }
    );
    assert_eq!(
        refused(JwtConfig::hs256(SECRET).with_audience("")),
        JwtConfigError::EmptySetting { setting: "audience" }
    );
}

#[test]
fn good_configs_pin_their_algorithm() {
    let cases = [
        (JwtConfig::hs256(SECRET), "HS256"),
        (JwtConfig::rs256_pem(fixture("rsa_public.pem")), "RS256"),
        (JwtConfig::es256_pem(fixture("ec_public.pem")), "ES256"),
    ];
    for (config, alg) in cases {
        let v = JwtVerifier::new(config).unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(v.algorithm_name(), alg);
    }
}

#[test]
fn default_leeway_is_small() {
    let config = JwtConfig::hs256(SECRET);
    assert_eq!(config.leeway, JwtConfig::DEFAULT_LEEWAY);
    assert!(config.leeway <= Duration::from_secs(30));
    assert_eq!(config.issuer, None);
    assert_eq!(config.audience, None);
}

#[test]
fn debug_never_shows_the_secret() {
    let secret = b"correct-horse-battery-staple-0123456789".to_vec();
    let config = JwtConfig::hs256(secret.clone()).with_issuer("iss").with_audience("aud");
    let as_bytes = format!("{secret:?}"); // `[99, 111, ...]`
    let first_bytes =
        as_bytes.trim_start_matches('[').split(", ").take(4).collect::<Vec<_>>().join(", ");
    let verifier = JwtVerifier::new(config.clone()).unwrap_or_else(|e| panic!("{e}"));
    for shown in [
        format!("{config:?}"),
        format!("{config:#?}"),
        format!("{:?}", config.key),
        format!("{verifier:?}"),
    ] {
        assert!(!shown.contains("correct-horse"), "{shown}");
        assert!(!shown.contains(&first_bytes), "{shown}");
    }
    assert!(format!("{:?}", config.key).contains("redacted"));
    assert!(format!("{:?}", JwtKey::Hs256 { secret }).contains("39 bytes"));
}
