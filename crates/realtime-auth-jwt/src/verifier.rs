//! [`JwtVerifier`]: the [`TokenVerifier`] on jsonwebtoken, and the one mapping from
//! jsonwebtoken's errors to [`AuthError`].

use std::borrow::Cow;
use std::fmt;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use realtime_core::{BearerToken, Identity, RawClaims, UnixMillis};
use realtime_ports::{AuthError, TokenVerifier};
use serde::Deserialize;
use serde_json::Value;

use crate::config::{JwtConfig, JwtConfigError, JwtKey};

/// Longest token looked at, in bytes; longer ones are [`AuthError::Malformed`] without any
/// decoding or signature work.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Verifies JWTs signed with the one configured algorithm and key.
///
/// Built once from a [`JwtConfig`] (the key is parsed and checked then), shared as
/// `Arc<dyn TokenVerifier>`. Verification is CPU work only (no I/O, no blocking): tens of
/// microseconds for RS256/ES256, less for HS256.
#[derive(Clone)]
pub struct JwtVerifier {
    algorithm_name: &'static str,
    key: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithm", &self.algorithm_name)
            .field("issuer", &self.validation.iss)
            .field("audience", &self.validation.aud)
            .field("leeway_secs", &self.validation.leeway)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// Checks `config` and builds the verifier.
    ///
    /// # Errors
    /// [`JwtConfigError::SecretTooShort`] for an HS256 secret under 32 bytes;
    /// [`JwtConfigError::InvalidKey`] for a PEM that is not a public key of the configured
    /// kind (a private key, a P-384 key for ES256, garbage); [`JwtConfigError::KeyTooSmall`]
    /// for an RSA key under 2048 bits; [`JwtConfigError::EmptySetting`] for an empty issuer
    /// or audience.
    pub fn new(config: JwtConfig) -> Result<JwtVerifier, JwtConfigError> {
        let algorithm_name = config.key.algorithm_name();
        let (algorithm, key) = decoding_key(&config.key)?;

        // The algorithm comes from the configuration only, never from a token header.
        let mut validation = Validation::new(algorithm);
        validation.leeway = config.leeway.as_secs();
        validation.reject_tokens_expiring_in_less_than = 0;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        match non_empty(config.issuer, "issuer")? {
            Some(issuer) => {
                validation.set_issuer(&[issuer]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match non_empty(config.audience, "audience")? {
            Some(audience) => {
                validation.validate_aud = true;
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => {
                validation.validate_aud = false;
                validation.aud = None;
            }
        }
        validation.set_required_spec_claims(&required);

        Ok(JwtVerifier { algorithm_name, key, validation })
    }

    /// The pinned JWS algorithm name (`HS256`, `RS256` or `ES256`).
    pub fn algorithm_name(&self) -> &'static str {
        self.algorithm_name
    }

    /// Verifies `token` now (against the system clock) and returns the identity it proves;
    /// the synchronous body of [`TokenVerifier::verify`]. The identity's `expires_at` is `exp`
    /// plus the configured leeway: the moment from which this verifier refuses the token.
    ///
    /// # Errors
    /// The [`AuthError`] that says why the token is refused; it never contains the token.
    pub fn verify_now(&self, token: &BearerToken) -> Result<Identity, AuthError> {
        let raw = token.expose();
        if raw.is_empty() || raw.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed);
        }
        // jsonwebtoken checks the pinned algorithm, the signature, exp/nbf/iss/aud and the
        // presence of exp and sub; what is left is realtime's own claims. Reading them into
        // `Claims` cannot fail on a JSON object, so jsonwebtoken's checks decide first.
        let data = match jsonwebtoken::decode::<Claims>(raw, &self.key, &self.validation) {
            Ok(data) => data,
            Err(error) => {
                // A header naming another algorithm is refused as such, even when
                // jsonwebtoken cannot parse it (`alg: none`). Only refused tokens pay for
                // this second look: a token jsonwebtoken accepted names the pinned one.
                check_header_algorithm(raw, self.algorithm_name)?;
                return Err(auth_error(error.into_kind()));
            }
        };
        let mut identity = Identity::from_claims(data.claims.into_raw()?)?;
        // The connection lives exactly as long as this verifier would admit the token: until
        // `exp` plus the leeway it was just checked with (so a token inside the leeway is not
        // admitted only to be closed with 4001 at once).
        let leeway_ms = self.validation.leeway.saturating_mul(1000);
        identity.expires_at =
            identity.expires_at.map(|exp| UnixMillis(exp.0.saturating_add(leeway_ms)));
        Ok(identity)
    }
}

#[async_trait]
impl TokenVerifier for JwtVerifier {
    async fn verify(&self, token: &BearerToken) -> Result<Identity, AuthError> {
        self.verify_now(token)
    }
}

fn non_empty(
    value: Option<String>,
    setting: &'static str,
) -> Result<Option<String>, JwtConfigError> {
    match value {
        Some(v) if v.is_empty() => Err(JwtConfigError::EmptySetting { setting }),
        other => Ok(other),
    }
}

/// Parses and checks the configured key, so that a bad key fails at startup rather than
/// refusing every token later.
fn decoding_key(key: &JwtKey) -> Result<(Algorithm, DecodingKey), JwtConfigError> {
    match key {
        JwtKey::Hs256 { secret } => {
            if secret.len() < JwtKey::MIN_HS256_SECRET {
                return Err(JwtConfigError::SecretTooShort {
                    len: secret.len(),
                    min: JwtKey::MIN_HS256_SECRET,
                });
            }
            Ok((Algorithm::HS256, DecodingKey::from_secret(secret)))
        }
        JwtKey::Rs256 { public_key_pem } => {
            let invalid =
                |message: String| JwtConfigError::InvalidKey { algorithm: "RS256", message };
            let key = DecodingKey::from_rsa_pem(public_key_pem)
                .map_err(|e| invalid(format!("not a PEM RSA public key ({e})")))?;
            // Parses the DER as a PKCS#1 public key (a private key fails here).
            let jwk = Jwk::from_decoding_key(&key, Some(Algorithm::RS256))
                .map_err(|e| invalid(format!("not an RSA public key ({e})")))?;
            let AlgorithmParameters::RSA(params) = &jwk.algorithm else {
                return Err(invalid("not an RSA public key".to_owned()));
            };
            let modulus = URL_SAFE_NO_PAD
                .decode(&params.n)
                .map_err(|_| invalid("unreadable modulus".to_owned()))?;
            let bits = bit_length(&modulus);
            if bits < JwtKey::MIN_RSA_BITS {
                return Err(JwtConfigError::KeyTooSmall { bits, min: JwtKey::MIN_RSA_BITS });
            }
            Ok((Algorithm::RS256, key))
        }
        JwtKey::Es256 { public_key_pem } => {
            let invalid =
                |message: String| JwtConfigError::InvalidKey { algorithm: "ES256", message };
            let key = DecodingKey::from_ec_pem(public_key_pem)
                .map_err(|e| invalid(format!("not a PEM EC public key ({e})")))?;
            let jwk = Jwk::from_decoding_key(&key, Some(Algorithm::ES256))
                .map_err(|e| invalid(format!("not an EC public key ({e})")))?;
            match &jwk.algorithm {
                AlgorithmParameters::EllipticCurve(params)
                    if params.curve == EllipticCurve::P256 => {}
                AlgorithmParameters::EllipticCurve(params) => {
                    return Err(invalid(format!("needs a P-256 key, not {:?}", params.curve)));
                }
                _ => return Err(invalid("not an EC public key".to_owned())),
            }
            // Building a verifier decodes the point and checks it lies on P-256 (an error
            // here); the empty signature then merely fails to verify (`Ok(false)`).
            jsonwebtoken::crypto::verify("", b"", &key, Algorithm::ES256)
                .map_err(|e| invalid(format!("not a P-256 point ({e})")))?;
            Ok((Algorithm::ES256, key))
        }
    }
}

fn bit_length(big_endian: &[u8]) -> usize {
    let digits = match big_endian.iter().position(|&b| b != 0) {
        Some(first) => &big_endian[first..],
        None => return 0,
    };
    (digits.len() - 1) * 8 + (8 - digits[0].leading_zeros() as usize)
}

/// Refuses a token whose header names any algorithm but the pinned one: so `alg: none`
/// (which jsonwebtoken cannot even parse) is [`AuthError::AlgorithmNotAllowed`] rather than
/// [`AuthError::Malformed`]. `Ok` when the header names the pinned algorithm.
fn check_header_algorithm(raw: &str, expected: &str) -> Result<(), AuthError> {
    /// The one header field looked at (the last `alg` wins, as in a JSON map).
    #[derive(Deserialize)]
    struct AlgOnly<'a> {
        #[serde(borrow, default)]
        alg: Option<Cow<'a, str>>,
    }
    let mut parts = raw.split('.');
    let (Some(header), Some(_payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed);
    };
    let header = URL_SAFE_NO_PAD.decode(header).map_err(|_| AuthError::Malformed)?;
    let header: AlgOnly<'_> = serde_json::from_slice(&header).map_err(|_| AuthError::Malformed)?;
    match header.alg {
        Some(alg) if alg == expected => Ok(()),
        Some(_) => Err(AuthError::AlgorithmNotAllowed),
        None => Err(AuthError::Malformed),
    }
}

/// The claims realtime reads, as handed over by jsonwebtoken once it has verified the token.
///
/// Each is read as any JSON value and its type checked by [`Claims::into_raw`], so that a
/// claim of the wrong type is refused as [`AuthError::InvalidClaim`] naming it (after
/// jsonwebtoken's own checks) rather than as a malformed token. Other claims are skipped; a
/// repeated claim makes the claims unreadable (RFC 7519 allows refusing it).
#[derive(Deserialize)]
struct Claims {
    sub: Option<Value>,
    exp: Option<Value>,
    iat: Option<Value>,
    roles: Option<Value>,
    permissions: Option<Value>,
    topics: Option<Value>,
}

impl Claims {
    /// The claims as [`RawClaims`]; a claim of the wrong type is named in
    /// [`AuthError::InvalidClaim`] (checked in the order `sub`, `exp`, `iat`, `roles`,
    /// `permissions`, `topics`). `null` counts as absent.
    fn into_raw(self) -> Result<RawClaims, AuthError> {
        let string = |value| match value {
            Value::String(s) => Some(s),
            _ => None,
        };
        Ok(RawClaims {
            sub: claim(self.sub, "sub", string)?,
            exp: claim(self.exp, "exp", |value| value.as_u64())?,
            iat: claim(self.iat, "iat", issued_at)?,
            roles: claim(self.roles, "roles", strings)?,
            permissions: claim(self.permissions, "permissions", strings)?,
            topics: claim(self.topics, "topics", strings)?,
        })
    }
}

/// `iat` in whole seconds: a non-negative integer, or a non-negative number with a
/// fraction (RFC 7519 allows one; it is cut to the second). `iat` is informative, so it is
/// read leniently where `exp`, which decides, must be an integer.
fn issued_at(value: Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        let secs = value.as_f64()?;
        // `u64::MAX as f64` rounds up to 2^64, so `<` keeps the cast in range.
        (secs.is_finite() && secs >= 0.0 && secs < u64::MAX as f64).then_some(secs as u64)
    })
}

/// Reads a claim with `read`, which says `None` for a value of the wrong type.
fn claim<T>(
    value: Option<Value>,
    name: &str,
    read: impl FnOnce(Value) -> Option<T>,
) -> Result<Option<T>, AuthError> {
    value.map(|v| read(v).ok_or_else(|| AuthError::InvalidClaim(name.to_owned()))).transpose()
}

/// An array of strings (`roles`, `permissions`, `topics`); `None` for anything else.
fn strings(value: Value) -> Option<Vec<String>> {
    let Value::Array(items) = value else { return None };
    items
        .into_iter()
        .map(|item| match item {
            Value::String(s) => Some(s),
            _ => None,
        })
        .collect()
}

/// The one mapping from jsonwebtoken's failures to [`AuthError`]. No arm copies text from
/// the token: claim names come from this crate's own validation settings.
fn auth_error(kind: ErrorKind) -> AuthError {
    match kind {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidSignature => AuthError::InvalidSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm => AuthError::AlgorithmNotAllowed,
        ErrorKind::InvalidIssuer => AuthError::InvalidIssuer,
        ErrorKind::InvalidAudience => AuthError::InvalidAudience,
        ErrorKind::InvalidSubject => AuthError::InvalidClaim("sub".to_owned()),
        ErrorKind::MissingRequiredClaim(claim) | ErrorKind::InvalidClaimFormat(claim) => {
            AuthError::InvalidClaim(claim)
        }
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => AuthError::Malformed,
        // The configured key or the crypto backend failed: not the token's fault. Keys are
        // checked in `JwtVerifier::new`, so these are not expected.
        ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat
        | ErrorKind::MissingAlgorithm
        | ErrorKind::RsaFailedSigning
        | ErrorKind::Signing(_)
        | ErrorKind::Provider(_) => {
            AuthError::Unavailable("JWT key or crypto backend failed".to_owned())
        }
        // `ErrorKind` is non-exhaustive: a failure added later still refuses the token.
        _ => AuthError::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(kind: ErrorKind, expected: AuthError) {
        assert_eq!(auth_error(kind), expected);
    }

    #[test]
    fn every_jsonwebtoken_error_maps() {
        let unavailable = AuthError::Unavailable("JWT key or crypto backend failed".to_owned());
        let json = serde_json::from_str::<serde_json::Value>("{").err().map(std::sync::Arc::new);
        let json = json.unwrap_or_else(|| panic!("`{{` parsed as JSON"));
        let utf8 = String::from_utf8(vec![0xff]).err().unwrap_or_else(|| panic!("0xff is UTF-8"));
        check(ErrorKind::ExpiredSignature, AuthError::Expired);
        check(ErrorKind::ImmatureSignature, AuthError::NotYetValid);
        check(ErrorKind::InvalidSignature, AuthError::InvalidSignature);
        check(ErrorKind::InvalidAlgorithm, AuthError::AlgorithmNotAllowed);
        check(ErrorKind::InvalidAlgorithmName, AuthError::AlgorithmNotAllowed);
        check(ErrorKind::UnsupportedAlgorithm, AuthError::AlgorithmNotAllowed);
        check(ErrorKind::InvalidIssuer, AuthError::InvalidIssuer);
        check(ErrorKind::InvalidAudience, AuthError::InvalidAudience);
        check(ErrorKind::InvalidSubject, AuthError::InvalidClaim("sub".into()));
        check(ErrorKind::MissingRequiredClaim("exp".into()), AuthError::InvalidClaim("exp".into()));
        check(ErrorKind::InvalidClaimFormat("nbf".into()), AuthError::InvalidClaim("nbf".into()));
        check(ErrorKind::InvalidToken, AuthError::Malformed);
        check(ErrorKind::Base64(base64::DecodeError::InvalidLength(1)), AuthError::Malformed);
        check(ErrorKind::Json(json), AuthError::Malformed);
        check(ErrorKind::Utf8(utf8), AuthError::Malformed);
        check(ErrorKind::InvalidEcdsaKey, unavailable.clone());
        check(ErrorKind::InvalidEddsaKey, unavailable.clone());
        check(ErrorKind::InvalidRsaKey("x".into()), unavailable.clone());
        check(ErrorKind::InvalidKeyFormat, unavailable.clone());
        check(ErrorKind::MissingAlgorithm, unavailable.clone());
        check(ErrorKind::RsaFailedSigning, unavailable.clone());
        check(ErrorKind::Signing("x".into()), unavailable.clone());
        check(ErrorKind::Provider("x".into()), unavailable);
    }

    #[test]
    fn header_algorithm_is_checked_first() {
        let b64 = |s: &str| URL_SAFE_NO_PAD.encode(s);
        let token = |header: &str| format!("{}.{}.", b64(header), b64("{}"));
        let check = |raw: &str, expected: Result<(), AuthError>| {
            assert_eq!(check_header_algorithm(raw, "HS256"), expected, "{raw}");
        };
        check(&token(r#"{"alg":"HS256"}"#), Ok(()));
        check(&token(r#"{"alg":"none"}"#), Err(AuthError::AlgorithmNotAllowed));
        check(&token(r#"{"alg":"hs256"}"#), Err(AuthError::AlgorithmNotAllowed));
        check(&token(r#"{"alg":"RS256"}"#), Err(AuthError::AlgorithmNotAllowed));
        check(&token(r#"{"alg":null}"#), Err(AuthError::Malformed));
        check(&token(r#"{"typ":"JWT"}"#), Err(AuthError::Malformed));
        check(&token("[]"), Err(AuthError::Malformed));
        check(&format!("{}.x", b64(r#"{"alg":"HS256"}"#)), Err(AuthError::Malformed));
        check(&format!("{}.x.y.z", b64(r#"{"alg":"HS256"}"#)), Err(AuthError::Malformed));
        check("!!.x.y", Err(AuthError::Malformed));
        check("", Err(AuthError::Malformed));
    }

    /// Reads `json` as [`Claims`] and converts them, as `verify_now` does.
    fn raw_claims(json: &str) -> Result<RawClaims, AuthError> {
        let claims: Claims = serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
        claims.into_raw()
    }

    #[test]
    fn claim_types() {
        let check = |json: &str, expected: Result<(), AuthError>| {
            assert_eq!(raw_claims(json).map(|_| ()), expected, "{json}");
        };
        let claim = |name: &str| Err(AuthError::InvalidClaim(name.to_owned()));
        check(r#"{"sub":"u","exp":1,"roles":["a"],"permissions":[],"x":{}}"#, Ok(()));
        check(r#"{"sub":"u","roles":null}"#, Ok(()));
        check(r#"{"sub":1}"#, claim("sub"));
        check(r#"{"sub":"u","exp":"1"}"#, claim("exp"));
        check(r#"{"sub":"u","exp":1.5}"#, claim("exp"));
        check(r#"{"sub":"u","exp":1.0}"#, claim("exp"));
        check(r#"{"sub":"u","exp":-1}"#, claim("exp"));
        check(r#"{"sub":"u","exp":18446744073709551616}"#, claim("exp"));
        check(r#"{"sub":"u","exp":true}"#, claim("exp"));
        check(r#"{"sub":"u","roles":"admin"}"#, claim("roles"));
        check(r#"{"sub":"u","roles":["a",1]}"#, claim("roles"));
        check(r#"{"sub":"u","roles":["a",null]}"#, claim("roles"));
        check(r#"{"sub":"u","roles":["a",["b"]]}"#, claim("roles"));
        check(r#"{"sub":"u","roles":[{"a":1},"b"]}"#, claim("roles"));
        check(r#"{"sub":"u","permissions":{}}"#, claim("permissions"));
        check(r#"{"sub":"u","permissions":{"a":[1,{"b":null}]}}"#, claim("permissions"));
        check(r#"{"sub":"u","iat":"1"}"#, claim("iat"));
        check(r#"{"sub":"u","iat":-1}"#, claim("iat"));
        check(r#"{"sub":"u","iat":-0.5}"#, claim("iat"));
        check(r#"{"sub":"u","iat":1e300}"#, claim("iat"));
        check(r#"{"sub":"u","iat":true}"#, claim("iat"));
        check(r#"{"sub":"u","topics":"orders"}"#, claim("topics"));
        check(r#"{"sub":"u","topics":["a",1]}"#, claim("topics"));
        // The first wrong claim in the order sub, exp, roles, permissions is named.
        check(r#"{"permissions":1,"roles":1,"exp":"x","sub":1}"#, claim("sub"));
        check(r#"{"permissions":1,"roles":1,"exp":"x","sub":"u"}"#, claim("exp"));
        check(r#"{"permissions":1,"roles":1,"sub":"u"}"#, claim("roles"));
    }

    #[test]
    fn claim_values() {
        let check = |json: &str, expected: RawClaims| {
            assert_eq!(raw_claims(json), Ok(expected), "{json}");
        };
        let strings = |items: &[&str]| Some(items.iter().map(|s| (*s).to_owned()).collect());
        check("{}", RawClaims::default());
        check(
            r#"{"sub":"u","exp":7,"roles":["b","a"],"permissions":["x:read"]}"#,
            RawClaims {
                sub: Some("u".into()),
                exp: Some(7),
                roles: strings(&["b", "a"]),
                permissions: strings(&["x:read"]),
                ..RawClaims::default()
            },
        );
        check(
            r#"{"sub":"u","iat":5,"topics":["orders","chat:*"]}"#,
            RawClaims {
                sub: Some("u".into()),
                iat: Some(5),
                topics: strings(&["orders", "chat:*"]),
                ..RawClaims::default()
            },
        );
        check(r#"{"iat":0}"#, RawClaims { iat: Some(0), ..RawClaims::default() });
        check(
            r#"{"sub":null,"exp":null,"iat":null,"roles":null,"permissions":null,"topics":null}"#,
            RawClaims::default(),
        );
        // Escapes are decoded; other claims of any type are skipped.
        check(
            r#"{"iat":1.5,"x":{"sub":1},"y":[[],{}],"z":null,"sub":"\u00e9\n","roles":["\"a\""]}"#,
            RawClaims {
                sub: Some("é\n".into()),
                roles: strings(&["\"a\""]),
                // A fractional `iat` is cut to the second.
                iat: Some(1),
                ..RawClaims::default()
            },
        );
    }

    #[test]
    fn repeated_claims_are_unreadable() {
        for json in
            [r#"{"sub":"a","sub":"b"}"#, r#"{"exp":"x","exp":5}"#, r#"{"roles":[],"roles":[]}"#]
        {
            assert!(serde_json::from_str::<Claims>(json).is_err(), "{json}");
        }
    }

    #[test]
    fn claims_must_be_an_object() {
        for json in ["[]", r#"["u"]"#, "1", r#""sub""#, "null"] {
            assert!(serde_json::from_str::<Claims>(json).is_err(), "{json}");
        }
    }

    #[test]
    fn bit_lengths() {
        assert_eq!(bit_length(&[]), 0);
        assert_eq!(bit_length(&[0, 0]), 0);
        assert_eq!(bit_length(&[1]), 1);
        assert_eq!(bit_length(&[0, 0x80, 0]), 16);
        assert_eq!(bit_length(&[0x7f; 256]), 2047);
    }
}
