//! Hostile artifact uploads against the real server: decompression bombs, header fields
//! over their limits, payload files outside their directory. Each is refused with a short
//! 400, nothing is stored, and the server's memory stays bounded.

mod common;
#[path = "../../engine/tests/artifact_support/tamper.rs"]
mod tamper;

use common::{Server, Workdir};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tamper::*;

const TENANT: &str = "acme";

/// The longest error message these tests accept: the reader's bound on error text
/// (`MAX_ERROR_TEXT_LEN`, 1024 characters) and a prefix.
const SHORT: usize = 1200;

/// The members of a v3 rootfs-image artifact `mender-artifact` writes.
fn rootfs(work: &Workdir, name: &str) -> Vec<Member> {
    members(&work.rootfs(name, &["dev-a"], &[]).bytes())
}

/// Uploads `parts`, packed; asserts a 400 with a short message and nothing listed, counted
/// or kept; returns the message.
async fn assert_refused(server: &Server, parts: &[Member]) -> String {
    let api = server.as_user(TENANT);
    let work = Workdir::new();
    let file = work.file("hostile.mender", &pack(parts));
    let message = api.upload_refused(&file, StatusCode::BAD_REQUEST).await;
    assert!(
        message.len() <= SHORT,
        "a {}-byte error message",
        message.len()
    );
    assert_eq!(api.artifacts().await, Vec::<Value>::new());
    assert_eq!(api.storage().await["usage"], json!(0));
    assert!(
        server.blob_files().is_empty(),
        "the refused upload left a blob"
    );
    message
}

#[tokio::test]
async fn decompression_bombs_are_refused_with_bounded_memory() {
    let server = Server::start().await;
    let work = Workdir::new();
    let parts = rootfs(&work, "bomb");
    let before = server.peak_rss_kib();
    // GNU long names of 2 GiB (about 100 KiB of zstd) and 1 GiB (about 1 MiB of gzip) in
    // front of a payload file: the reader used to hold them whole.
    for (suffix, mib) in [(".zst", 2048), (".gz", 1024)] {
        let mut hostile = parts.clone();
        let name = format!("data/0000.tar{suffix}");
        *hostile.last_mut().unwrap() = Member::new(&name, long_name_bomb(suffix, mib));
        let message = assert_refused(&server, &hostile).await;
        assert_eq!(
            message,
            format!(
                "invalid artifact: {name} has more than 65536 bytes of tar headers (PAX \
                 records, GNU long names) in front of one entry, or of padding after its last \
                 entry"
            )
        );
    }
    // A long name within that bound is quoted cut short, not echoed whole.
    let long = "n".repeat(60_000);
    let mut tar = raw_header(b"././@LongLink", tar::EntryType::GNULongName, 60_000).to_vec();
    tar.extend(long.as_bytes());
    tar.extend(padding(60_000));
    tar.extend(raw_entry(b"x", b"x"));
    tar.extend(end_of_archive());
    let mut hostile = parts.clone();
    *hostile.last_mut().unwrap() = Member::new("data/0000.tar.gz", compress(".gz", &tar));
    set_manifest_line(
        &mut hostile,
        "data/0000/bomb.ext4",
        &format!("data/0000/{long}"),
        Some(b"x"),
    );
    let message = assert_refused(&server, &hostile).await;
    assert!(message.contains("is longer than 255 bytes"), "{message}");

    let growth = server.peak_rss_kib().saturating_sub(before);
    assert!(
        growth < 64 * 1024,
        "the server's peak RSS grew by {growth} KiB"
    );
}

#[tokio::test]
async fn header_fields_over_their_limits_are_refused() {
    let server = Server::start().await;
    let work = Workdir::new();
    let parts = rootfs(&work, "fields");
    let set = |edit: &dyn Fn(&mut Value)| {
        let mut hostile = parts.clone();
        edit_header_json(&mut hostile, "header-info", edit);
        hostile
    };
    // The upload: an 8 MB artifact name, 8 KiB on the wire.
    let huge_name = set(&|v| v["artifact_provides"]["artifact_name"] = json!("n".repeat(8 << 20)));
    let message = assert_refused(&server, &huge_name).await;
    assert!(
        message.starts_with("invalid artifact: header-info is too large: ")
            && message.ends_with(" bytes, the limit is 1048576 bytes"),
        "{message}"
    );
    let long_name = set(&|v| v["artifact_provides"]["artifact_name"] = json!("n".repeat(257)));
    let message = assert_refused(&server, &long_name).await;
    assert_eq!(
        message,
        "invalid artifact: the artifact name has 257 bytes, more than the limit of 256"
    );
    let devices: Vec<String> = (0..129).map(|i| format!("dev-{i}")).collect();
    let many_devices = set(&|v| v["artifact_depends"]["device_type"] = json!(devices));
    let message = assert_refused(&server, &many_devices).await;
    assert_eq!(
        message,
        "invalid artifact: the device type list has 129 entries, more than the limit of 128"
    );
}

#[tokio::test]
async fn payload_files_must_be_plain_names_and_a_rootfs_image_holds_one() {
    let server = Server::start().await;
    let work = Workdir::new();
    let parts = rootfs(&work, "paths");
    for name in [&b"../../etc/passwd"[..], b"/etc/shadow"] {
        let mut hostile = parts.clone();
        replace_payload(&mut hostile, &[(name, b"root::0:0::/:/bin/sh\n")]);
        let message = assert_refused(&server, &hostile).await;
        assert_eq!(
            message,
            format!(
                "invalid artifact: malformed artifact: the payload file name {:?} in \
                 data/0000.tar.gz may hold only ASCII letters, digits and the characters . , _ -",
                String::from_utf8_lossy(name)
            )
        );
    }
    let mut empty = parts.clone();
    replace_payload(&mut empty, &[]);
    let message = assert_refused(&server, &empty).await;
    assert_eq!(
        message,
        "invalid artifact: malformed artifact: payload 0 is a rootfs-image with 0 files; a \
         rootfs-image holds exactly one"
    );
}
