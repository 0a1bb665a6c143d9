//! The compression scenario, realtime-server only: permessage-deflate off (the default)
//! against on (`REALTIME_WEBSOCKET_COMPRESSION=true`, 256-byte threshold), with the same
//! clients both times: raw WebSocket clients in this process that offer the extension as
//! browsers do (`permessage-deflate; client_max_window_bits`) and inflate what comes
//! compressed (flate2), so that the server with it off declines and the server with it on
//! agrees. For three realistic payloads (a notification under the threshold, an activity item
//! and a dashboard update), broadcasts are published in closed loop (the next once every
//! client has the last) and measured: bytes on the wire per delivery (everything the
//! clients read from their sockets), server CPU per delivery, the clients' CPU per delivery
//! (this process: inflating, parsing), and delivery latency. Every client checks that it
//! gets every publication of each payload once, in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use realtime_bench::hist::{Summary, new_hist, record};
use realtime_bench::wire::{mint_token, unix_micros};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use crate::procfs::cpu_seconds;
use crate::report::median;
use crate::results::{CompressionRep, CompressionResult, CompressionRow, Plan};
use crate::session::Paths;
use crate::streams::{Server, start_server};

/// What the clients offer: Chromium's offer.
const OFFER: &str = "permessage-deflate; client_max_window_bits";
/// Longest wait for one broadcast to reach every client.
const ROUND_WAIT: Duration = Duration::from_secs(20);
/// Handshakes in flight while connecting.
const CONNECT_CONCURRENCY: usize = 64;
/// The payloads, in the order they are measured.
pub const KINDS: [&str; 3] = ["notification", "activity", "dashboard"];

/// The message of publication `seq` of payload `kind` (0, 1, 2 of [`KINDS`]), its send time
/// in it; the contents change with `seq` as live data does.
fn message(kind: usize, seq: u32, sent_us: u64) -> Value {
    let mut payload = match kind {
        0 => json!({
            "title": "New comment on your post",
            "body": format!("Alice replied: \"Thanks! ({seq})\""),
            "url": format!("https://app.example/posts/{}#c{seq}", 1000 + seq % 97),
        }),
        1 => json!({
            "actor": {"id": format!("u{}", seq % 500), "name": "Alice Martin", "avatar": "https://cdn.example/a/alice.png"},
            "verb": "commented",
            "object": {"type": "issue", "id": 4000 + seq, "title": "Checkout fails when the cart holds more than 50 items"},
            "target": {"type": "project", "id": 12, "name": "web-shop"},
            "excerpt": "I can reproduce it on staging with the seed data; the request times out after 30 s and the cart is emptied.",
            "at": "2026-12-03T14:00:00Z",
        }),
        _ => json!({
            "rows": (0..40u32).map(|n| json!({
                "metric": format!("orders.region.{n}"),
                "value": seq * 7 + n * 13,
                "change": f64::from((seq + n) % 200) / 10.0 - 10.0,
                "status": if (seq + n).is_multiple_of(9) { "alert" } else { "ok" },
            })).collect::<Vec<_>>(),
        }),
    };
    payload["k"] = json!(kind);
    payload["s"] = json!(seq);
    payload["t"] = json!(sent_us);
    json!({"target": "broadcast", "message": {"type": "dash", "payload": payload}})
}

/// What every client tells the scenario.
struct Shared {
    /// Bytes read from the sockets, all clients.
    wire_bytes: AtomicU64,
    /// Text bytes of the frames (inflated), all clients.
    text_bytes: AtomicU64,
    /// Frames that came compressed.
    compressed: AtomicU64,
    /// Per payload: how many clients have the publication being measured.
    got: [AtomicU32; KINDS.len()],
    /// Woken when a round completes.
    round_done: Notify,
    clients: u32,
    latency: [std::sync::Mutex<Histogram<u64>>; KINDS.len()],
    /// Publications a client got again, or after a later one.
    extra: AtomicU64,
}

/// The part of a frame's JSON a client reads.
#[derive(Deserialize)]
struct Incoming {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    payload: Option<BenchFields>,
}

#[derive(Deserialize)]
struct BenchFields {
    k: Option<usize>,
    s: Option<u32>,
    t: Option<u64>,
}

/// A client after its upgrade: the socket, what was read past the head, whether the server
/// agreed to compression.
struct Client {
    stream: TcpStream,
    buffer: Vec<u8>,
    agreed: bool,
}

async fn connect(addr: std::net::SocketAddr, token: &str) -> anyhow::Result<Client> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let request = format!(
        "GET /ws?token={token} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Extensions: {OFFER}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut data = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            bail!("connection closed during the upgrade");
        }
        data.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 101") {
        bail!("upgrade refused: {}", head.lines().next().unwrap_or_default());
    }
    let agreed = head.lines().any(|line| {
        line.starts_with("sec-websocket-extensions:") && line.contains("permessage-deflate")
    });
    Ok(Client { stream, buffer: data[end + 4..].to_vec(), agreed })
}

/// One server frame from the front of `data`: (fin+opcode byte, payload range end, header
/// length); `None` while incomplete.
fn frame_at(data: &[u8]) -> Option<(u8, usize, usize)> {
    let (&first, &second) = (data.first()?, data.get(1)?);
    let (len, header) = match second & 0x7f {
        126 => (usize::from(u16::from_be_bytes([*data.get(2)?, *data.get(3)?])), 4),
        127 => {
            let bytes: [u8; 8] = data.get(2..10)?.try_into().ok()?;
            (usize::try_from(u64::from_be_bytes(bytes)).ok()?, 10)
        }
        short => (usize::from(short), 2),
    };
    (data.len() >= header + len).then_some((first, header + len, header))
}

/// A compressed message's payload inflated (no context takeover: a fresh context each).
fn inflate(inflater: &mut flate2::Decompress, payload: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut input = payload.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    inflater.reset(false);
    let mut out = Vec::with_capacity(payload.len() * 8 + 64);
    loop {
        let read = usize::try_from(inflater.total_in())?;
        inflater.decompress_vec(&input[read..], &mut out, flate2::FlushDecompress::Sync)?;
        if usize::try_from(inflater.total_in())? == input.len() && out.len() < out.capacity() {
            return Ok(out);
        }
        out.reserve(out.capacity().max(1024));
    }
}

/// Reads and checks every frame until the socket ends.
async fn read_loop(mut client: Client, shared: Arc<Shared>) {
    let mut inflater = flate2::Decompress::new(false);
    let mut next_seq = [0u32; KINDS.len()];
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        while let Some((first, end, header)) = frame_at(&client.buffer) {
            let opcode = first & 0x0f;
            let payload = &client.buffer[header..end];
            match opcode {
                0x1 => {
                    let text = if first & 0x40 != 0 {
                        shared.compressed.fetch_add(1, Ordering::Relaxed);
                        match inflate(&mut inflater, payload) {
                            Ok(text) => text,
                            Err(_) => return,
                        }
                    } else {
                        payload.to_vec()
                    };
                    shared.text_bytes.fetch_add(text.len() as u64, Ordering::Relaxed);
                    on_text(&text, &shared, &mut next_seq);
                }
                0x9 => {
                    // A ping: the pong, masked (key 0), with its payload.
                    let mut pong = vec![0x8a, 0x80 | payload.len() as u8, 0, 0, 0, 0];
                    pong.extend_from_slice(payload);
                    if client.stream.write_all(&pong).await.is_err() {
                        return;
                    }
                }
                0x8 => return,
                _ => {}
            }
            client.buffer.drain(..end);
        }
        match client.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(read) => {
                shared.wire_bytes.fetch_add(read as u64, Ordering::Relaxed);
                client.buffer.extend_from_slice(&chunk[..read]);
            }
        }
    }
}

fn on_text(text: &[u8], shared: &Shared, next_seq: &mut [u32; KINDS.len()]) {
    let Ok(incoming) = serde_json::from_slice::<Incoming>(text) else { return };
    if incoming.kind != "dash" {
        return;
    }
    let Some(BenchFields { k: Some(kind), s: Some(seq), t: Some(sent) }) = incoming.payload else {
        return;
    };
    if kind >= KINDS.len() {
        return;
    }
    // A publication skipped is counted where its round ends short of a delivery.
    if seq < next_seq[kind] {
        shared.extra.fetch_add(1, Ordering::Relaxed);
        return;
    }
    next_seq[kind] = seq + 1;
    if let Ok(mut h) = shared.latency[kind].lock() {
        record(&mut h, unix_micros().saturating_sub(sent));
    }
    if shared.got[kind].fetch_add(1, Ordering::AcqRel) + 1 == shared.clients {
        shared.round_done.notify_one();
    }
}

/// Runs the scenario: for each repetition, off and on in alternating order.
pub async fn run_compression(paths: &Paths, plan: &Plan) -> anyhow::Result<CompressionResult> {
    let mut r = CompressionResult {
        n: plan.compression_n,
        broadcasts: plan.compression_broadcasts,
        ..CompressionResult::default()
    };
    for rep in 0..plan.compression_reps {
        for on in if rep % 2 == 1 { [true, false] } else { [false, true] } {
            let reps = one_server(paths, plan, rep, on, &mut r.notes)
                .await
                .with_context(|| format!("compression {} rep {rep}", on_off(on)))?;
            for x in &reps {
                r.missing += x.missing;
                r.extra += x.extra;
            }
            r.reps.extend(reps);
        }
    }
    r.rows = KINDS
        .iter()
        .map(|kind| {
            let med = |on: bool, f: fn(&CompressionRep) -> f64| {
                median(r.reps.iter().filter(|x| x.on == on && x.kind == *kind).map(f).collect())
            };
            CompressionRow {
                kind: (*kind).to_owned(),
                frame_bytes: med(false, |x| x.text_bytes_per_delivery),
                off_wire_bytes: med(false, |x| x.wire_bytes_per_delivery),
                on_wire_bytes: med(true, |x| x.wire_bytes_per_delivery),
                on_compressed_share: med(true, |x| x.compressed_share),
                off_server_cpu_s_per_million: med(false, |x| x.server_cpu_s_per_million),
                on_server_cpu_s_per_million: med(true, |x| x.server_cpu_s_per_million),
                off_client_cpu_s_per_million: med(false, |x| x.client_cpu_s_per_million),
                on_client_cpu_s_per_million: med(true, |x| x.client_cpu_s_per_million),
                off_latency_p99_ms: med(false, |x| x.latency.p99_us as f64 / 1000.0),
                on_latency_p99_ms: med(true, |x| x.latency.p99_us as f64 / 1000.0),
            }
        })
        .collect();
    Ok(r)
}

/// The scenario's counters at one moment, to take differences of.
#[derive(Clone, Copy)]
struct Counts {
    wire: u64,
    text: u64,
    compressed: u64,
    extra: u64,
}

impl Counts {
    fn of(shared: &Shared) -> Counts {
        Counts {
            wire: shared.wire_bytes.load(Ordering::Relaxed),
            text: shared.text_bytes.load(Ordering::Relaxed),
            compressed: shared.compressed.load(Ordering::Relaxed),
            extra: shared.extra.load(Ordering::Relaxed),
        }
    }
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

/// One server (compression `on` or off), its clients, every payload measured in turn.
async fn one_server(
    paths: &Paths,
    plan: &Plan,
    rep: usize,
    on: bool,
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<CompressionRep>> {
    let n = plan.compression_n;
    let env = [("REALTIME_WEBSOCKET_COMPRESSION", on.to_string())];
    let name = format!("realtime-server-compression-{}-rep{rep}", on_off(on));
    let mut server = start_server(paths, &name, n, &env).await?;
    let shared = Arc::new(Shared {
        wire_bytes: AtomicU64::new(0),
        text_bytes: AtomicU64::new(0),
        compressed: AtomicU64::new(0),
        got: std::array::from_fn(|_| AtomicU32::new(0)),
        round_done: Notify::new(),
        clients: n,
        latency: std::array::from_fn(|_| std::sync::Mutex::new(new_hist())),
        extra: AtomicU64::new(0),
    });
    let result = async {
        let readers = open_clients(&server, n, on, &shared).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut reps = Vec::new();
        for kind in 0..KINDS.len() {
            reps.push(measure(&mut server, &shared, plan, (rep, on, kind), notes).await?);
        }
        for reader in readers {
            reader.abort();
        }
        anyhow::Ok(reps)
    }
    .await;
    let _ = server.running.child.kill().await;
    result
}

/// Opens `n` clients to `server` (each offers compression) and starts their read loops;
/// fails unless every one agreed to compression with it `on` and none with it off.
async fn open_clients(
    server: &Server,
    n: u32,
    on: bool,
    shared: &Arc<Shared>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut opening = Vec::new();
    for index in 0..n {
        let token = mint_token(server.secret_text.as_bytes(), &format!("c{index}"), &[], 3600)?;
        let gate = Arc::clone(&gate);
        let addr = server.running.addr;
        opening.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await;
            connect(addr, &token).await
        }));
    }
    let mut agreed = 0;
    let mut readers = Vec::new();
    for task in opening {
        let client = task.await??;
        agreed += u32::from(client.agreed);
        readers.push(tokio::spawn(read_loop(client, Arc::clone(shared))));
    }
    if agreed != if on { n } else { 0 } {
        bail!("{agreed} of {n} clients agreed to compression with it {}", on_off(on));
    }
    Ok(readers)
}

/// Publishes payload `kind` `plan.compression_broadcasts` times in closed loop and measures
/// it (the repetition, whether compression is on, the payload).
async fn measure(
    server: &mut Server,
    shared: &Shared,
    plan: &Plan,
    (rep, on, kind): (usize, bool, usize),
    notes: &mut Vec<String>,
) -> anyhow::Result<CompressionRep> {
    let (n, name) = (shared.clients, KINDS[kind]);
    let before = Counts::of(shared);
    let server0 = cpu_seconds(server.running.pid).unwrap_or(0.0);
    let client0 = cpu_seconds(std::process::id()).unwrap_or(0.0);
    let started = Instant::now();
    let mut delivered = 0u64;
    for seq in 0..plan.compression_broadcasts {
        shared.got[kind].store(0, Ordering::Release);
        let body = message(kind, seq, unix_micros()).to_string();
        let response = server.http.post_json("/api/publish", body.as_bytes()).await?;
        if response.status != 200 {
            bail!("publish answered HTTP {}", response.status);
        }
        let done = tokio::time::timeout(ROUND_WAIT, async {
            while shared.got[kind].load(Ordering::Acquire) < n {
                shared.round_done.notified().await;
            }
        })
        .await;
        let got = shared.got[kind].load(Ordering::Acquire);
        if done.is_err() {
            notes.push(format!(
                "compression {} rep {rep} {name} #{seq}: {got} of {n} clients within {ROUND_WAIT:?}",
                on_off(on)
            ));
        }
        delivered += u64::from(got.min(n));
    }
    let seconds = started.elapsed().as_secs_f64();
    let server_cpu = cpu_seconds(server.running.pid).unwrap_or(0.0) - server0;
    let client_cpu = cpu_seconds(std::process::id()).unwrap_or(0.0) - client0;
    let after = Counts::of(shared);
    let per = |v: f64| if delivered == 0 { 0.0 } else { v / delivered as f64 };
    let latency = shared.latency[kind].lock().map(|h| Summary::of(&h)).unwrap_or_default();
    let expected = u64::from(n) * u64::from(plan.compression_broadcasts);
    let x = CompressionRep {
        rep,
        on,
        kind: name.to_owned(),
        deliveries: delivered,
        seconds,
        wire_bytes_per_delivery: per((after.wire - before.wire) as f64),
        text_bytes_per_delivery: per((after.text - before.text) as f64),
        compressed_share: per((after.compressed - before.compressed) as f64),
        server_cpu_s_per_million: per(server_cpu) * 1e6,
        client_cpu_s_per_million: per(client_cpu) * 1e6,
        latency,
        missing: expected.saturating_sub(delivered),
        extra: after.extra - before.extra,
    };
    eprintln!(
        "  compression {} rep {rep} {name}: {:.0} B frame, {:.1} B/delivery on the wire ({:.0}% compressed), server {:.2} / clients {:.2} CPU-s per million, p99 {:.1} ms (missing {}, extra {})",
        on_off(on),
        x.text_bytes_per_delivery,
        x.wire_bytes_per_delivery,
        x.compressed_share * 100.0,
        x.server_cpu_s_per_million,
        x.client_cpu_s_per_million,
        x.latency.p99_us as f64 / 1000.0,
        x.missing,
        x.extra
    );
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payloads_fall_below_and_above_the_threshold() {
        // The frame is the message as published (type and payload), whatever the sequence
        // number and the clock.
        for seq in [0, 99_999] {
            let size = |kind| message(kind, seq, unix_micros())["message"].to_string().len();
            assert!(size(0) < 240, "{}", size(0));
            assert!((400..1000).contains(&size(1)), "{}", size(1));
            assert!(size(2) > 2000, "{}", size(2));
        }
    }

    #[test]
    fn frames_are_cut_from_the_stream_and_inflate() {
        let text = br#"{"type":"dash","payload":{"k":2,"s":3,"t":4}}"#.repeat(10);
        let mut compress = flate2::Compress::new(flate2::Compression::fast(), false);
        let mut packed = Vec::with_capacity(text.len() + 64);
        compress
            .compress_vec(&text, &mut packed, flate2::FlushCompress::Sync)
            .unwrap_or_else(|e| panic!("{e}"));
        packed.truncate(packed.len() - 4);
        let mut frame = vec![0xc1, 126];
        frame.extend_from_slice(&(packed.len() as u16).to_be_bytes());
        frame.extend_from_slice(&packed);
        assert_eq!(frame_at(&frame[..frame.len() - 1]), None);
        let (first, end, header) = frame_at(&frame).unwrap_or_else(|| panic!("no frame"));
        assert_eq!((first, end, header), (0xc1, frame.len(), 4));
        let mut inflater = flate2::Decompress::new(false);
        assert_eq!(inflate(&mut inflater, &frame[header..end]).ok(), Some(text.clone()));
        assert_eq!(inflate(&mut inflater, &frame[header..end]).ok(), Some(text), "reusable");
    }
}
