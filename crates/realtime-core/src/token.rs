//! Extraction of the bearer token from the upgrade request: the `token` query parameter or
//! the `bearer.<JWT>` WebSocket subprotocol. Tokens never show in `Debug` output.

use std::fmt;

/// The subprotocol a client names to speak realtime's protocol, version 1.
pub const SUBPROTOCOL: &str = "realtime.v1";
/// Prefix of the subprotocol entry that carries the token: `bearer.<JWT>`.
pub const BEARER_PREFIX: &str = "bearer.";

/// A bearer token as presented by a client, not yet verified.
///
/// Its `Debug` output is redacted, so it can sit in structs that are logged.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(String);

impl BearerToken {
    /// Wraps a raw token.
    pub fn new(raw: impl Into<String>) -> Self {
        BearerToken(raw.into())
    }

    /// The raw token, for the verifier. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BearerToken(<redacted, {} bytes>)", self.0.len())
    }
}

/// Why the query string does not yield a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenQueryError {
    /// No `token` parameter.
    #[error("the `token` query parameter is missing")]
    Missing,
    /// `token=` with nothing after it.
    #[error("the `token` query parameter is empty")]
    Empty,
    /// More than one `token` parameter.
    #[error("the `token` query parameter is given more than once")]
    Duplicated,
    /// A `%` escape that is not two hex digits, or escapes that are not UTF-8.
    #[error("the `token` query parameter is not valid percent-encoded UTF-8")]
    InvalidEncoding,
}

/// Why a named query parameter could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryParamError {
    /// The parameter is given more than once.
    #[error("the query parameter is given more than once")]
    Duplicated,
    /// A `%` escape that is not two hex digits, or escapes that are not UTF-8.
    #[error("the query parameter is not valid percent-encoded UTF-8")]
    InvalidEncoding,
}

/// The percent-decoded value of parameter `name` in a raw query string (without the
/// leading `?`; `+` is a space, as in HTML forms); `Ok(None)` when it is absent.
///
/// # Errors
/// [`QueryParamError`]: given twice, or badly encoded.
pub fn query_param(query: &str, name: &str) -> Result<Option<String>, QueryParamError> {
    let mut found = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(key).as_deref() != Some(name) {
            continue;
        }
        if found.is_some() {
            return Err(QueryParamError::Duplicated);
        }
        found = Some(value);
    }
    found.map(|raw| percent_decode(raw).ok_or(QueryParamError::InvalidEncoding)).transpose()
}

/// Finds the `token` parameter in a raw query string (without the leading `?`) and
/// percent-decodes it (`+` is a space, as in HTML forms).
///
/// # Errors
/// [`TokenQueryError`]: missing, empty, given twice, or badly encoded.
pub fn token_from_query(query: &str) -> Result<BearerToken, TokenQueryError> {
    let token = query_param(query, "token")
        .map_err(|error| match error {
            QueryParamError::Duplicated => TokenQueryError::Duplicated,
            QueryParamError::InvalidEncoding => TokenQueryError::InvalidEncoding,
        })?
        .ok_or(TokenQueryError::Missing)?;
    if token.is_empty() {
        return Err(TokenQueryError::Empty);
    }
    Ok(BearerToken(token))
}

fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = hex(*bytes.get(i + 1)?)?;
                let lo = hex(*bytes.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Why the `Sec-WebSocket-Protocol` header does not yield a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubprotocolError {
    /// A `bearer.` entry was offered without `realtime.v1`.
    #[error("subprotocol `realtime.v1` must be offered with `bearer.<token>`")]
    MissingProtocol,
    /// `bearer.` with nothing after it.
    #[error("the `bearer.` subprotocol carries an empty token")]
    Empty,
    /// More than one `bearer.` entry.
    #[error("more than one `bearer.` subprotocol")]
    Duplicated,
}

/// Reads the token from a `Sec-WebSocket-Protocol` header value such as
/// `realtime.v1, bearer.<JWT>`. `Ok(None)` when no `bearer.` entry is offered (the caller then
/// looks at the query string).
///
/// # Errors
/// [`SubprotocolError`]: no `realtime.v1` beside the token, an empty token, or two tokens.
pub fn token_from_subprotocols(header: &str) -> Result<Option<BearerToken>, SubprotocolError> {
    let mut offers_protocol = false;
    let mut token = None;
    for entry in header.split(',').map(str::trim) {
        if entry == SUBPROTOCOL {
            offers_protocol = true;
        } else if let Some(raw) = entry.strip_prefix(BEARER_PREFIX) {
            if token.is_some() {
                return Err(SubprotocolError::Duplicated);
            }
            if raw.is_empty() {
                return Err(SubprotocolError::Empty);
            }
            token = Some(BearerToken(raw.to_owned()));
        }
    }
    match token {
        Some(_) if !offers_protocol => Err(SubprotocolError::MissingProtocol),
        token => Ok(token),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(query: &str, expected: Result<&str, TokenQueryError>) {
        assert_eq!(
            token_from_query(query).map(|t| t.expose().to_owned()),
            expected.map(str::to_owned)
        );
    }

    #[test]
    fn query_tokens() {
        check("token=abc.def.ghi", Ok("abc.def.ghi"));
        check("a=1&token=x%2Ey&b", Ok("x.y"));
        check("to%6Ben=v", Ok("v"));
        check("token=a+b", Ok("a b"));
        check("", Err(TokenQueryError::Missing));
        check("tokens=1&xtoken=2", Err(TokenQueryError::Missing));
        check("token=", Err(TokenQueryError::Empty));
        check("token", Err(TokenQueryError::Empty));
        check("token=a&token=b", Err(TokenQueryError::Duplicated));
        check("token=a&token=", Err(TokenQueryError::Duplicated));
        check("token=%zz", Err(TokenQueryError::InvalidEncoding));
        check("token=%4", Err(TokenQueryError::InvalidEncoding));
        check("token=%ff%fe", Err(TokenQueryError::InvalidEncoding));
    }

    #[test]
    fn named_query_params() {
        let param = |query: &str| query_param(query, "job_id");
        assert_eq!(param("token=t&job_id=job%2D7"), Ok(Some("job-7".to_owned())));
        assert_eq!(param("job_id="), Ok(Some(String::new())));
        assert_eq!(param("token=t"), Ok(None));
        assert_eq!(param("job_idx=1"), Ok(None));
        assert_eq!(param("job_id=1&job_id=2"), Err(QueryParamError::Duplicated));
        assert_eq!(param("job_id=%zz"), Err(QueryParamError::InvalidEncoding));
    }

    #[test]
    fn subprotocol_tokens() {
        let ok = |h: &str| token_from_subprotocols(h).map(|t| t.map(|t| t.expose().to_owned()));
        assert_eq!(ok("realtime.v1, bearer.abc"), Ok(Some("abc".to_owned())));
        assert_eq!(ok("bearer.abc,realtime.v1"), Ok(Some("abc".to_owned())));
        assert_eq!(ok("realtime.v1"), Ok(None));
        assert_eq!(ok("chat"), Ok(None));
        assert_eq!(ok("bearer.abc"), Err(SubprotocolError::MissingProtocol));
        assert_eq!(ok("realtime.v1, bearer."), Err(SubprotocolError::Empty));
        assert_eq!(ok("realtime.v1, bearer.a, bearer.b"), Err(SubprotocolError::Duplicated));
    }

    #[test]
    fn debug_never_shows_the_token() {
        let token = BearerToken::new("secret.jwt.value");
        assert!(!format!("{token:?}").contains("secret"));
    }
}
