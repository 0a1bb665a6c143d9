//! All four routings reach exactly the intended sockets and no others: two users with several
//! connections each, overlapping roles, a user without roles; over HTTP and from Rust.

use std::collections::BTreeMap;

use realtime_core::{ConnectionId, Envelope, Role, UserId};
use serde_json::{Value, json};

use crate::support::{self, Ws};

/// The clients: name, user, roles.
const CLIENTS: [(&str, &str, &[&str]); 5] = [
    ("alice1", "alice", &["user"]),
    ("alice2", "alice", &["user", "ops"]),
    ("bob1", "bob", &["user", "admin"]),
    ("bob2", "bob", &["admin", "ops"]),
    ("carol", "carol", &[]),
];

/// Reads `note` messages until the `end` broadcast and returns their sequence numbers.
async fn notes_until_end(ws: &mut Ws) -> Vec<u64> {
    let mut seen = Vec::new();
    loop {
        let message = support::next_json(ws).await;
        match message["type"].as_str() {
            Some("end") => return seen,
            Some("note") => seen.push(message["payload"]["seq"].as_u64().unwrap_or(u64::MAX)),
            _ => panic!("unexpected {message}"),
        }
    }
}

async fn connect_all(addr: std::net::SocketAddr) -> BTreeMap<&'static str, (Ws, ConnectionId)> {
    let mut clients = BTreeMap::new();
    for (name, user, roles) in CLIENTS {
        clients.insert(name, support::connect(addr, &support::token(user, roles)).await);
    }
    clients
}

#[tokio::test]
async fn every_routing_reaches_exactly_the_intended_sockets_over_http() {
    let running = support::start(support::config()).await;
    let addr = running.addr;
    let mut clients = connect_all(addr).await;
    let id = |name: &str| clients[name].1.to_string();
    let cases: Vec<(Value, &[&str])> = vec![
        (json!("broadcast"), &["alice1", "alice2", "bob1", "bob2", "carol"]),
        (json!({"user": "alice"}), &["alice1", "alice2"]),
        (json!({"user": "bob"}), &["bob1", "bob2"]),
        (json!({"user": "carol"}), &["carol"]),
        (json!({"user": "nobody"}), &[]),
        (json!({"role": "admin"}), &["bob1", "bob2"]),
        (json!({"role": "ops"}), &["alice2", "bob2"]),
        (json!({"role": "user"}), &["alice1", "alice2", "bob1"]),
        (json!({"role": "nobody"}), &[]),
        (json!({"connection": id("alice2")}), &["alice2"]),
        (json!({"connection": id("carol")}), &["carol"]),
        (json!({"connection": uuid::Uuid::new_v4().to_string()}), &[]),
    ];
    let mut expected: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (seq, (target, recipients)) in cases.iter().enumerate() {
        let seq = seq as u64;
        let body = json!({"target": target, "message": {"type": "note", "payload": {"seq": seq}}});
        assert_eq!(support::delivered(addr, &body).await, recipients.len() as u64, "{target}");
        for name in *recipients {
            expected.entry(name).or_default().push(seq);
        }
    }
    let end = json!({"target": "broadcast", "message": {"type": "end"}});
    assert_eq!(support::delivered(addr, &end).await, 5);
    for (name, (ws, _)) in &mut clients {
        let got = notes_until_end(ws).await;
        assert_eq!(&got, expected.get(name).unwrap_or(&Vec::new()), "{name}");
    }
    drop(clients);
    support::stop(running).await;
}

#[tokio::test]
async fn every_routing_reaches_exactly_the_intended_sockets_from_rust() {
    let running = support::start(support::config()).await;
    let mut clients = connect_all(running.addr).await;
    let api = running.api.clone();
    let note = |seq: u64| {
        Envelope::from_parts("note", json!({"seq": seq})).unwrap_or_else(|e| panic!("{e}"))
    };
    let user = |u: &str| UserId::new(u).unwrap_or_else(|e| panic!("{e}"));
    let role = |r: &str| Role::new(r).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(api.send_to_user(&user("bob"), &note(0)).await, Ok(2));
    assert_eq!(api.send_to_role(&role("ops"), &note(1)).await, Ok(2));
    assert_eq!(api.send_to_connection(clients["alice1"].1, &note(2)).await, Ok(1));
    assert_eq!(api.broadcast(&note(3)).await, Ok(5));
    let end = Envelope::from_parts("end", json!({})).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(api.broadcast(&end).await, Ok(5));
    let expected: [(&str, &[u64]); 5] = [
        ("alice1", &[2, 3]),
        ("alice2", &[1, 3]),
        ("bob1", &[0, 3]),
        ("bob2", &[0, 1, 3]),
        ("carol", &[3]),
    ];
    for (name, seqs) in expected {
        let (ws, _) = clients.get_mut(name).unwrap_or_else(|| panic!("{name}"));
        assert_eq!(notes_until_end(ws).await, seqs, "{name}");
    }
    drop(clients);
    support::stop(running).await;
}
