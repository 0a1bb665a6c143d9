//! Criterion micro-benchmark of the publish hot path: encoding one publish into a `Frame`
//! (serialised once, shared by every recipient).

use criterion::{Criterion, criterion_group, criterion_main};
use realtime_core::{Envelope, Frame};
use std::hint::black_box;

fn frame_encode(c: &mut Criterion) {
    let envelope = Envelope::from_parts(
        "notification",
        serde_json::json!({
            "message": "New order #1234 received",
            "order_id": 1234,
            "total": "99.90",
            "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}],
        }),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    c.bench_function("frame_encode_notification", |b| {
        b.iter(|| Frame::encode(black_box(&envelope)))
    });
    let frame = Frame::encode(&envelope);
    c.bench_function("frame_clone_per_recipient", |b| b.iter(|| black_box(&frame).clone()));
}

criterion_group!(benches, frame_encode);
criterion_main!(benches);
