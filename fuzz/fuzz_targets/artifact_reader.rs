//! Any byte string given to the artifact reader as an upload ends in metadata or an
//! error: never a panic, a hang or unbounded memory (libFuzzer's -rss_limit_mb catches
//! the last).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = engine::artifact::read_artifact(std::io::Cursor::new(data));
});
