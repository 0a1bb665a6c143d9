//! Prints what a realtime server sends one user, and the messages of a topic, until the
//! client stops: `cargo run -p realtime-client --example notifications -- ws://127.0.0.1:3000/ws`
//! with the JWT in `REALTIME_TOKEN` (the development server prints one).

use realtime_client::{Client, ClientConfig, Event};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args().nth(1).unwrap_or_else(|| "ws://127.0.0.1:3000/ws".to_owned());
    // Asked before every connect and before the token expires: fetch a fresh one here
    // (from your auth service); this example reads the same one each time.
    let tokens = || async { std::env::var("REALTIME_TOKEN") };
    let (client, mut events) = Client::start(ClientConfig::new(url), tokens)?;

    let subscriber = client.clone();
    tokio::spawn(async move {
        match subscriber.subscribe("demo:news").await {
            Ok(subscription) => eprintln!("subscribed to {}", subscription.topic()),
            Err(error) => eprintln!("subscribe: {error}"),
        }
    });

    while let Some(event) = events.next_event().await {
        match event {
            Event::Connected(hello) => eprintln!("connected as {}", hello.user_id),
            Event::Message(message) => eprintln!("{}: {}", message.kind, message.payload),
            Event::Unrecovered { stream, .. } => eprintln!("missed messages of {stream}"),
            Event::Disconnected { reason, reconnect_in } => {
                eprintln!("disconnected ({reason:?}), again in {reconnect_in:?}");
            }
            Event::Stopped(reason) => eprintln!("stopped: {reason:?}"),
            _ => {}
        }
    }
    Ok(())
}
