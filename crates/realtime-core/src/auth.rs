//! Identities built from verified token claims, and the pure authorization decision.

use std::collections::BTreeSet;

use serde::Deserialize;

use crate::ids::{
    InvalidPermission, InvalidRole, InvalidTopicName, InvalidUserId, Permission, Role, UserId,
};
use crate::stream::TopicPattern;
use crate::time::UnixMillis;

/// The claims realtime reads from a verified token, before validation.
///
/// A token verifier deserialises the verified claims into this and calls
/// [`Identity::from_claims`]. Unknown claims are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RawClaims {
    /// The subject; becomes the [`UserId`]. Required.
    #[serde(default)]
    pub sub: Option<String>,
    /// Roles, an array of strings. Optional; absent means none.
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    /// Permissions, an array of strings. Optional; absent means none.
    #[serde(default)]
    pub permissions: Option<Vec<String>>,
    /// Expiry, in seconds since the Unix epoch (RFC 7519 `NumericDate`).
    #[serde(default)]
    pub exp: Option<u64>,
    /// Topics the token may subscribe to, an array of [`TopicPattern`]s (`orders`,
    /// `chat:*`). Optional; absent means none.
    #[serde(default)]
    pub topics: Option<Vec<String>>,
    /// When the token was issued, in seconds since the Unix epoch. Optional.
    #[serde(default)]
    pub iat: Option<u64>,
}

/// Why verified claims do not make an [`Identity`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimsError {
    /// There is no `sub` claim.
    #[error("token has no `sub` claim")]
    MissingSubject,
    /// The `sub` claim is not a valid user id.
    #[error("invalid `sub` claim: {0}")]
    InvalidSubject(InvalidUserId),
    /// An entry of `roles` is not a valid role.
    #[error("invalid role at index {index}: {error}")]
    InvalidRole {
        /// Position in the `roles` array.
        index: usize,
        /// What is wrong with it.
        error: InvalidRole,
    },
    /// An entry of `permissions` is not a valid permission.
    #[error("invalid permission at index {index}: {error}")]
    InvalidPermission {
        /// Position in the `permissions` array.
        index: usize,
        /// What is wrong with it.
        error: InvalidPermission,
    },
    /// An entry of `topics` is not a valid topic pattern.
    #[error("invalid topic at index {index}: {error}")]
    InvalidTopic {
        /// Position in the `topics` array.
        index: usize,
        /// What is wrong with it.
        error: InvalidTopicName,
    },
    /// More roles, permissions or topics than [`Identity::MAX_GRANTS`].
    #[error("too many roles, permissions or topics: {count}, at most {max}")]
    TooManyGrants {
        /// How many were given.
        count: usize,
        /// The limit.
        max: usize,
    },
}

/// Who is connecting: built from verified claims, so every field is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token subject.
    pub user_id: UserId,
    /// Roles granted by the token (deduplicated, sorted).
    pub roles: BTreeSet<Role>,
    /// Permissions granted by the token (deduplicated, sorted).
    pub permissions: BTreeSet<Permission>,
    /// When the connection must end, if the token expires: the moment from which the
    /// verifier that built this identity refuses the token, so it includes the clock-skew
    /// leeway the verifier applied to `exp` (a JWT's `exp` plus the leeway). The transport
    /// closes the connection then (4001). [`Identity::from_claims`] sets it to `exp` itself;
    /// a verifier with a leeway adds it.
    pub expires_at: Option<UnixMillis>,
    /// Topics the token may subscribe to (the `topics` claim, in its order).
    pub topics: Vec<TopicPattern>,
    /// When the token was issued (`iat`), if it says.
    pub issued_at: Option<UnixMillis>,
}

impl Identity {
    /// Most roles, most permissions, and most topic patterns one identity may carry.
    pub const MAX_GRANTS: usize = 256;

    /// An identity with a user id and nothing else.
    pub fn new(user_id: UserId) -> Self {
        Identity {
            user_id,
            roles: BTreeSet::new(),
            permissions: BTreeSet::new(),
            expires_at: None,
            topics: Vec::new(),
            issued_at: None,
        }
    }

    /// Adds roles (builder style).
    pub fn with_roles(mut self, roles: impl IntoIterator<Item = Role>) -> Self {
        self.roles.extend(roles);
        self
    }

    /// Adds topic patterns (builder style).
    pub fn with_topics(mut self, topics: impl IntoIterator<Item = TopicPattern>) -> Self {
        self.topics.extend(topics);
        self
    }

    /// Validates verified claims into an identity.
    ///
    /// # Errors
    /// [`ClaimsError`] names the first claim that is missing or invalid.
    pub fn from_claims(claims: RawClaims) -> Result<Self, ClaimsError> {
        let sub = claims.sub.ok_or(ClaimsError::MissingSubject)?;
        let user_id = UserId::new(sub).map_err(ClaimsError::InvalidSubject)?;
        let roles = collect(claims.roles, Role::new, |index, error| ClaimsError::InvalidRole {
            index,
            error,
        })?;
        let permissions = collect(claims.permissions, Permission::new, |index, error| {
            ClaimsError::InvalidPermission { index, error }
        })?;
        let topics = collect(
            claims.topics,
            |raw| TopicPattern::parse(&raw),
            |index, error| ClaimsError::InvalidTopic { index, error },
        )?;
        Ok(Identity {
            user_id,
            roles,
            permissions,
            expires_at: claims.exp.map(UnixMillis::from_secs),
            topics,
            issued_at: claims.iat.map(UnixMillis::from_secs),
        })
    }
}

/// Parses every entry of a claim array, naming the first bad one by its index.
fn collect<T, E, C: FromIterator<T>>(
    raw: Option<Vec<String>>,
    parse: impl Fn(String) -> Result<T, E>,
    wrap: impl Fn(usize, E) -> ClaimsError,
) -> Result<C, ClaimsError> {
    let raw = raw.unwrap_or_default();
    if raw.len() > Identity::MAX_GRANTS {
        return Err(ClaimsError::TooManyGrants { count: raw.len(), max: Identity::MAX_GRANTS });
    }
    raw.into_iter()
        .enumerate()
        .map(|(index, value)| parse(value).map_err(|e| wrap(index, e)))
        .collect()
}

/// The record's `connection-authorized?`: true when `identity` holds every permission in
/// `required` (and so always true when nothing is required).
pub fn connection_authorized(identity: &Identity, required: &[Permission]) -> bool {
    required.iter().all(|p| identity.permissions.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(json: &str) -> RawClaims {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("bad test claims {json}: {e}"))
    }

    /// user, roles, permissions, exp
    type Expected<'a> = (&'a str, &'a [&'a str], &'a [&'a str], Option<u64>);

    #[track_caller]
    fn check(json: &str, expected: Result<Expected<'_>, ClaimsError>) {
        let got = Identity::from_claims(claims(json));
        let got = got.map(|i| {
            (
                i.user_id.to_string(),
                i.roles.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                i.permissions.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                i.expires_at,
            )
        });
        let expected = expected.map(|(u, r, p, e)| {
            (
                u.to_owned(),
                r.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                p.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                e.map(UnixMillis::from_secs),
            )
        });
        assert_eq!(got, expected);
    }

    #[test]
    fn claims_to_identity() {
        check(r#"{"sub":"u1"}"#, Ok(("u1", &[], &[], None)));
        check(
            r#"{"sub":"u1","roles":["b","a","a"],"permissions":["x:read"],"exp":10,"other":1}"#,
            Ok(("u1", &["a", "b"], &["x:read"], Some(10))),
        );
        check(r#"{"roles":["a"]}"#, Err(ClaimsError::MissingSubject));
        check(r#"{"sub":""}"#, Err(ClaimsError::InvalidSubject(InvalidUserId::Empty)));
        check(
            r#"{"sub":"u","roles":["ok","bad role"]}"#,
            Err(ClaimsError::InvalidRole { index: 1, error: InvalidRole::InvalidCharacter(' ') }),
        );
        check(
            r#"{"sub":"u","permissions":[""]}"#,
            Err(ClaimsError::InvalidPermission { index: 0, error: InvalidPermission::Empty }),
        );
        let many: Vec<String> = (0..257).map(|i| format!("\"r{i}\"")).collect();
        check(
            &format!(r#"{{"sub":"u","roles":[{}]}}"#, many.join(",")),
            Err(ClaimsError::TooManyGrants { count: 257, max: 256 }),
        );
    }

    #[test]
    fn topics_and_issued_at() {
        let identity = Identity::from_claims(claims(
            r#"{"sub":"u","topics":["orders","chat:*","*","orders"],"iat":1767225600}"#,
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let pattern = |raw: &str| TopicPattern::parse(raw).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            identity.topics,
            vec![pattern("orders"), pattern("chat:*"), pattern("*"), pattern("orders")]
        );
        assert_eq!(identity.issued_at, Some(UnixMillis(1_767_225_600_000)));
        let bare =
            Identity::from_claims(claims(r#"{"sub":"u"}"#)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((bare.topics, bare.issued_at), (Vec::new(), None));
        assert_eq!(
            Identity::from_claims(claims(r#"{"sub":"u","topics":["ok","a*b"]}"#)),
            Err(ClaimsError::InvalidTopic {
                index: 1,
                error: InvalidTopicName::InvalidCharacter('*')
            })
        );
        assert_eq!(
            Identity::from_claims(claims(r#"{"sub":"u","topics":[""]}"#)),
            Err(ClaimsError::InvalidTopic { index: 0, error: InvalidTopicName::Empty })
        );
        let many: Vec<String> = (0..257).map(|i| format!("\"t{i}\"")).collect();
        assert_eq!(
            Identity::from_claims(claims(&format!(
                r#"{{"sub":"u","topics":[{}]}}"#,
                many.join(",")
            ))),
            Err(ClaimsError::TooManyGrants { count: 257, max: 256 })
        );
        let alice = UserId::new("alice").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(Identity::new(alice).with_topics([pattern("x")]).topics, vec![pattern("x")]);
        assert!(serde_json::from_str::<RawClaims>(r#"{"sub":"u","topics":"orders"}"#).is_err());
        assert!(serde_json::from_str::<RawClaims>(r#"{"sub":"u","iat":"1"}"#).is_err());
    }

    #[test]
    fn exp_as_string_is_not_claims() {
        assert!(serde_json::from_str::<RawClaims>(r#"{"sub":"u","exp":"10"}"#).is_err());
        assert!(serde_json::from_str::<RawClaims>(r#"{"sub":"u","roles":"admin"}"#).is_err());
    }

    #[test]
    fn authorization_requires_every_permission() {
        let identity = Identity::from_claims(claims(r#"{"sub":"u","permissions":["a","b"]}"#))
            .unwrap_or_else(|e| panic!("{e}"));
        let p = |s: &str| Permission::new(s).unwrap_or_else(|e| panic!("{e}"));
        assert!(connection_authorized(&identity, &[]));
        assert!(connection_authorized(&identity, &[p("a")]));
        assert!(connection_authorized(&identity, &[p("a"), p("b")]));
        assert!(!connection_authorized(&identity, &[p("a"), p("c")]));
    }
}
