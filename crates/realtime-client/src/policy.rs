//! Why a connection ended and what the client does next: the close-code policy of
//! `docs/protocol.md` (the same table as the JavaScript client's), as a pure function.

use realtime_core::protocol::close;

/// Why a connection (or an attempt at one) ended. Never holds a token.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Disconnect {
    /// The server closed the socket with this close frame (code 1005 when it had no code).
    Closed {
        /// The close code (`realtime_core::protocol::close`).
        code: u16,
        /// The close frame's reason text.
        reason: String,
    },
    /// The socket ended without a close frame (a killed server, a cut network: 1006).
    Lost {
        /// What the socket reported.
        error: String,
    },
    /// The server answered the upgrade with something other than `101`.
    Refused {
        /// The HTTP status.
        status: u16,
        /// The start of the answer's body (the server's error text).
        body: String,
    },
    /// The server could not be reached, or the upgrade did not complete in time.
    Failed {
        /// What went wrong.
        error: String,
    },
    /// The token source failed, or gave a token that cannot travel in a header.
    Token {
        /// What the token source said.
        error: String,
    },
}

/// Why the client stopped for good; the last event.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stop {
    /// The application removed this connection (close code 4003): no automatic reconnect.
    Kicked {
        /// The close frame's reason text.
        reason: String,
    },
    /// The backend revoked the token (close code 4005): a reconnect with the same user's
    /// old tokens is refused.
    Revoked {
        /// The close frame's reason text.
        reason: String,
    },
    /// The upgrade was answered 403: the token is valid but may not connect (a missing
    /// permission, a revoked token); a new token for the same user is refused too.
    Forbidden {
        /// The start of the answer's body.
        body: String,
    },
    /// [`Client::close`](crate::Client::close) was called.
    Closed,
    /// Every [`Client`](crate::Client) and the [`Events`](crate::Events) were dropped.
    Dropped,
}

/// What the client does after a [`Disconnect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Stop for good.
    Stop(Stop),
    /// Get a new token and reconnect at once, without counting an attempt.
    ReconnectNow,
    /// Reconnect after the backoff delay of the current attempt.
    Backoff,
}

/// The policy: 4003 and 4005 stop, a handshake 403 stops, 4001 (token expired) reconnects at
/// once (a new token is fetched before every connect), anything else (1012 restart, 4004
/// heartbeat, 4008 slow consumer, 4010 stream lagged, 4029 rate limited, 1006, a refused or
/// failed handshake, a failing token source) reconnects with backoff.
pub fn next_step(disconnect: &Disconnect) -> Step {
    match disconnect {
        Disconnect::Closed { code: close::DISCONNECTED, reason } => {
            Step::Stop(Stop::Kicked { reason: reason.clone() })
        }
        Disconnect::Closed { code: close::REVOKED, reason } => {
            Step::Stop(Stop::Revoked { reason: reason.clone() })
        }
        Disconnect::Closed { code: close::TOKEN_EXPIRED, .. } => Step::ReconnectNow,
        Disconnect::Refused { status: 403, body } => {
            Step::Stop(Stop::Forbidden { body: body.clone() })
        }
        _ => Step::Backoff,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed(code: u16) -> Disconnect {
        Disconnect::Closed { code, reason: "r".into() }
    }

    #[track_caller]
    fn check(disconnect: Disconnect, expected: Step) {
        assert_eq!(next_step(&disconnect), expected, "{disconnect:?}");
    }

    #[test]
    fn close_codes_decide_the_next_step() {
        check(closed(4003), Step::Stop(Stop::Kicked { reason: "r".into() }));
        check(closed(4005), Step::Stop(Stop::Revoked { reason: "r".into() }));
        check(closed(4001), Step::ReconnectNow);
        for code in [1000, 1005, 1011, 1012, 4004, 4008, 4010, 4029, 4999] {
            check(closed(code), Step::Backoff);
        }
        check(Disconnect::Lost { error: "reset".into() }, Step::Backoff);
        check(Disconnect::Failed { error: "refused".into() }, Step::Backoff);
        check(Disconnect::Token { error: "down".into() }, Step::Backoff);
        check(
            Disconnect::Refused { status: 403, body: "forbidden".into() },
            Step::Stop(Stop::Forbidden { body: "forbidden".into() }),
        );
        // 401: get a new token and retry; 503: the server is busy or draining.
        for status in [400, 401, 503] {
            check(Disconnect::Refused { status, body: String::new() }, Step::Backoff);
        }
    }

    /// The rows of the close-code table of `docs/protocol.md`: each code and what its last
    /// column says the client does.
    fn documented_close_codes() -> Vec<(u16, String)> {
        let doc = include_str!("../../../docs/protocol.md");
        let section =
            doc.split("\n## Close codes\n").nth(1).unwrap_or_else(|| panic!("no section"));
        let section = section.split("\n## ").next().unwrap_or_default();
        section
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.trim().trim_matches('|').split('|').collect();
                let code = cells.first()?.trim().parse().ok()?;
                Some((code, cells.last()?.trim().to_owned()))
            })
            .collect()
    }

    /// Every code of `realtime_core::protocol::close`, read from its source.
    fn protocol_close_codes() -> Vec<u16> {
        let source = include_str!("../../realtime-core/src/protocol.rs");
        let module = source.split("pub mod close {").nth(1).unwrap_or_else(|| panic!("no close"));
        let module = module.split("\n}").next().unwrap_or_default();
        module
            .lines()
            .filter_map(|line| line.trim().strip_prefix("pub const ")?.split("= ").nth(1))
            .map(|value| value.trim_end_matches(';').parse().unwrap_or_else(|e| panic!("{e}")))
            .collect()
    }

    /// docs/protocol.md's close-code table lists every code of `protocol::close`, and says of
    /// each what [`next_step`] does.
    #[test]
    fn the_close_code_table_of_protocol_md_is_the_policy() {
        let table = documented_close_codes();
        let codes = protocol_close_codes();
        assert!(codes.len() >= 15, "{codes:?}");
        for code in &codes {
            assert!(table.iter().any(|(c, _)| c == code), "{code} is not in the table");
        }
        for (code, does) in table {
            let step = next_step(&closed(code));
            let documented = if does.starts_with("stops") {
                matches!(step, Step::Stop(_))
            } else if does.starts_with("reconnects at once with a new token") {
                step == Step::ReconnectNow
            } else if does.starts_with("reconnects with backoff") {
                step == Step::Backoff
            } else {
                panic!("{code}: the table says {does:?}, not one of the three answers")
            };
            assert!(documented, "{code}: the table says {does:?}, next_step says {step:?}");
        }
    }
}
