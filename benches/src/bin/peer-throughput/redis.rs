//! Redis Streams: `XADD`s pipelined a request's worth at a time, `XREAD COUNT` to read back.

use std::io::{BufReader, Write};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use sluice_benches::resp::{Reply, command, connect, entries, read_reply};

use crate::{BenchResult, Load};

/// One producer's requests: `in_flight` of them written ahead of their replies.
fn producer(server: &str, key: &str, load: &Load, p: u32) -> BenchResult {
    let mut writer = connect(server)?;
    let mut replies = BufReader::new(writer.try_clone()?);
    let value = crate::value(load);
    // The same request every time: each XADD gets a new id (`*`), so the client pays nothing per
    // request but the write.
    let request: Vec<u8> =
        (0..load.batch).flat_map(|_| command(&[b"XADD", key.as_bytes(), b"*", b"v", &value])).collect();
    let (requests, batch, window) = (load.requests_of(p), load.batch, load.in_flight.max(1) as u64);
    let (answered, answers) = channel::<()>();
    let drain = std::thread::spawn(move || -> BenchResult {
        for _ in 0..requests {
            for _ in 0..batch {
                read_reply(&mut replies)?;
            }
            if answered.send(()).is_err() {
                break;
            }
        }
        Ok(())
    });
    for sent in 0..requests {
        // At most `in_flight` requests unanswered.
        if sent >= window && answers.recv().is_err() {
            break;
        }
        writer.write_all(&request)?;
    }
    drain.join().map_err(|_| "reply reader panicked")?
}

pub fn produce(server: &str, key: &str, load: &Load) -> BenchResult<Duration> {
    connect(server)?.write_all(&command(&[b"DEL", key.as_bytes()]))?;
    let started = Instant::now();
    let producers: Vec<_> = (0..load.producers)
        .map(|p| {
            let (server, key, load) = (server.to_owned(), key.to_owned(), load.clone());
            std::thread::spawn(move || producer(&server, &key, &load, p))
        })
        .collect();
    for producer in producers {
        producer.join().map_err(|_| "producer panicked")??;
    }
    Ok(started.elapsed())
}

/// Reads `total` entries from the stream's start, `batch` per `XREAD`; returns the time taken
/// and the value bytes read.
pub fn consume(server: &str, key: &str, total: u64, batch: usize) -> BenchResult<(Duration, u64)> {
    let mut writer = connect(server)?;
    let mut reader = BufReader::new(writer.try_clone()?);
    let count = batch.to_string();
    let (mut last_id, mut received, mut bytes) = (b"0".to_vec(), 0u64, 0u64);
    let started = Instant::now();
    while received < total {
        writer.write_all(&command(&[b"XREAD", b"COUNT", count.as_bytes(), b"STREAMS", key.as_bytes(), &last_id]))?;
        let reply = read_reply(&mut reader)?;
        if matches!(reply, Reply::Other) {
            return Err(format!("the stream {key} ended after {received} of {total} entries").into());
        }
        for (id, value) in entries(reply) {
            last_id = id;
            received += 1;
            bytes += value.len() as u64;
        }
    }
    Ok((started.elapsed(), bytes))
}
