//! Development mode: a random JWT secret and API key, and ready-to-use tokens.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::RngCore;

/// What a development server generated, so a person (or a test) can connect and publish.
#[derive(Clone)]
pub struct DevCredentials {
    /// The generated HS256 secret.
    pub jwt_secret: String,
    /// A token for user `admin` with roles `admin` and `user`, valid for 24 hours.
    pub admin_token: String,
    /// A token for user `alice` with role `user`, valid for 24 hours.
    pub user_token: String,
}

impl fmt::Debug for DevCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DevCredentials(<redacted>)")
    }
}

/// `bytes` random bytes, hex-encoded.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Mints the development tokens with `secret`.
pub(crate) fn credentials(secret: String) -> anyhow::Result<DevCredentials> {
    let iat = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let exp = iat + 24 * 3600;
    let mint = |sub: &str, roles: &[&str]| {
        // Both may subscribe to the demo's topics (`demo:news`).
        let claims = serde_json::json!({
            "sub": sub, "roles": roles, "topics": ["demo:*"], "iat": iat, "exp": exp
        });
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
    };
    Ok(DevCredentials {
        admin_token: mint("admin", &["admin", "user"])?,
        user_token: mint("alice", &["user"])?,
        jwt_secret: secret,
    })
}
