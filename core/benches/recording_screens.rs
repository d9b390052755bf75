//! The reviewer console's player on a 100 MB recording: the screens of a 60-second range at
//! the start, the middle and the end (what opening the session and seeking ask the server
//! for), each timed, with the process's peak memory, which must stay far below the file's
//! size (the recording is streamed, never held); then the same seeks again from the
//! checkpoints the first ones took (as the console keeps them), where the recording up to
//! the checkpoint is read but not drawn.
//! Run: `cargo bench -p gatehouse-core --bench recording_screens` (a release build).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufReader, BufWriter, Write};
use std::time::Instant;

use gatehouse_core::recording::{CastReader, Checkpoint, Replay, frames_from};

/// Size of the generated recording.
const SIZE: u64 = 100 * 1024 * 1024;

/// Peak resident memory of this process, in MiB (Linux).
fn peak_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

fn main() {
    let dir = std::env::temp_dir().join(format!("gatehouse-screens-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("big.cast");
    // A busy terminal: a line of output every 10 ms, a prompt and a command now and then.
    let mut w = BufWriter::new(std::fs::File::create(&path).unwrap());
    writeln!(
        w,
        r#"{{"version":2,"width":120,"height":40,"timestamp":0}}"#
    )
    .unwrap();
    let (mut written, mut t, mut n) = (0u64, 0.0f64, 0u64);
    while written < SIZE {
        t += 0.01;
        n += 1;
        let line = if n % 500 == 0 {
            format!("[{t:.3},\"o\",\"\\r\\n$ tail -f /var/log/app-{n}.log\\r\\n\"]\n")
        } else {
            format!(
                "[{t:.3},\"o\",\"{n:>9} 2026-03-01T12:00:00Z INFO request served path=/api/v1/items/{n} status=200 bytes=5120 duration_ms=12 user=alice trace={n:016x}\\r\\n\"]\n"
            )
        };
        written += line.len() as u64;
        w.write_all(line.as_bytes()).unwrap();
    }
    w.flush().unwrap();
    drop(w);
    let end = t;
    println!(
        "recording: {} MiB, {n} events, {end:.0} s long; peak memory before reading: {} MiB",
        written / (1024 * 1024),
        peak_mib()
    );
    let start = Instant::now();
    let file = std::fs::File::open(&path).unwrap();
    let mut reader = CastReader::new(BufReader::new(file)).unwrap();
    let mut events = 0u64;
    while reader.next_event().unwrap().is_some() {
        events += 1;
    }
    println!(
        "{:<20} {:>7.0} ms  ({events} events parsed, none drawn)",
        "read only",
        start.elapsed().as_secs_f64() * 1000.0
    );
    let mut kept: Vec<Checkpoint> = Vec::new();
    for round in ["first", "again"] {
        for (name, from) in [
            ("open (0 s)", 0.0),
            ("seek to the middle", end / 2.0),
            ("seek to the end", end - 60.0),
        ] {
            let start = Instant::now();
            let file = std::fs::File::open(&path).unwrap();
            let mut reader = CastReader::new(BufReader::new(file)).unwrap();
            let resume = kept.iter().rev().find(|c| c.time < from).cloned();
            let replay = Replay {
                from,
                to: from + 60.0,
                min_gap: 0.04,
                max: 600,
                resume: resume.as_ref(),
                checkpoint_every: 60.0,
            };
            let (f, taken) = frames_from(&mut reader, &replay).unwrap();
            let took = start.elapsed();
            kept.extend(taken);
            kept.sort_by(|a, b| a.time.total_cmp(&b.time));
            kept.dedup_by(|a, b| a.time == b.time);
            let json = serde_json::to_vec(&f.frames).unwrap();
            println!(
                "{round:<6} {name:<20} {:>7.0} ms  {:>3} frames  {:>4} KiB of JSON  peak memory {} MiB",
                took.as_secs_f64() * 1000.0,
                f.frames.len(),
                json.len() / 1024,
                peak_mib()
            );
        }
    }
    let dumps: usize = kept.iter().map(|c| c.dump.len()).sum();
    println!(
        "checkpoints kept: {} ({} KiB of terminal state)",
        kept.len(),
        dumps / 1024
    );
    let _ = std::fs::remove_dir_all(&dir);
}
