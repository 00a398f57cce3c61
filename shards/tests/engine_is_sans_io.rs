//! The engine (the shard's logic) stays free of I/O and clocks: time comes in with each
//! event, and everything it wants done goes out as an action. This checks its sources for
//! anything that would break that (a runtime, sockets, files, a clock, threads).

use std::path::Path;

const FORBIDDEN: &[&str] = &[
    "monoio",
    "tokio",
    "local_sync",
    "std::net",
    "std::fs",
    "std::thread",
    "Instant::now",
    "SystemTime",
    "now_ms",
    "async fn",
    ".await",
];

#[test]
fn the_engine_does_no_io_and_reads_no_clock() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/engine");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("src/engine") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "rs") || path.ends_with("tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("source");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for f in FORBIDDEN {
                assert!(
                    !code.contains(f),
                    "{}:{}: the engine must not use `{f}`: {line}",
                    path.display(),
                    n + 1
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} engine files found");
}
