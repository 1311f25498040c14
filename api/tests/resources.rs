//! The server under the cheap attacks of the hardening issue: stalled uploads, silent and
//! half-sent connections, clients that stop reading, and a flood past the file descriptor
//! limit. In each, a normal request must still be answered in time, and the server's
//! threads, descriptors, memory and CPU must stay within stated bounds.

mod common;

use std::time::{Duration, Instant};

use common::raw::{closed_within, file_part_head, status_within, text_parts};
use common::{send, Server, Workdir};
use reqwest::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// How long a normal request may take while an attack is going on.
const ANSWER_TIME: Duration = Duration::from_secs(2);
/// Bound on the server's peak resident memory through each attack.
const MAX_RSS_KIB: u64 = 128 * 1024;

/// A field of `/proc/PID/status`, in its unit (kB for memory).
fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Open file descriptors of `pid`.
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// CPU time `pid` has used (user + system).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // CLK_TCK is 100 on every Linux this runs on.
    Duration::from_millis(ticks * 10)
}

fn assert_peak_rss(server: &Server) {
    let peak = proc_status(server.pid(), "VmHWM");
    eprintln!("peak RSS {peak} KiB");
    assert!(
        peak <= MAX_RSS_KIB,
        "peak RSS {peak} KiB is over {MAX_RSS_KIB} KiB"
    );
}

/// `GET /health` on a fresh connection, answered 200 within [`ANSWER_TIME`].
async fn assert_healthy_in_time(server: &Server) {
    let started = Instant::now();
    let resp = tokio::time::timeout(ANSWER_TIME, send(server.http().get(server.url("/health"))))
        .await
        .unwrap_or_else(|_| panic!("/health took more than {ANSWER_TIME:?}"));
    assert_eq!(resp.status(), StatusCode::OK);
    eprintln!("/health answered in {:?}", started.elapsed());
}

/// A server with another tenant's artifact and a download link to it.
async fn with_download(server: &Server) -> (String, Vec<u8>) {
    let work = Workdir::new();
    let built = work.rootfs("victim", &["dev-a"], &[]);
    let api = server.as_user("victim");
    let id = api.upload_ok(&built.path, "").await;
    (api.link_uri(&id).await, built.bytes())
}

async fn assert_download_in_time(server: &Server, uri: &str, expected: &[u8]) {
    let download = async {
        let resp = send(server.http().get(uri)).await;
        assert_eq!(resp.status(), StatusCode::OK);
        resp.bytes().await.unwrap()
    };
    let got = tokio::time::timeout(ANSWER_TIME, download)
        .await
        .unwrap_or_else(|_| panic!("the download took more than {ANSWER_TIME:?}"));
    assert!(got == expected, "the download differs from the artifact");
}

/// Stalled uploads, each 700 bytes into its artifact part, then silence.
const STALLED_UPLOADS: usize = 600;
const UPLOAD_SLOTS: usize = 4;

#[tokio::test]
async fn stalled_uploads_do_not_starve_downloads_threads_or_memory() {
    let server = Server::start_with(&[
        "--max-concurrent-uploads",
        &UPLOAD_SLOTS.to_string(),
        "--body-read-timeout",
        "3",
    ])
    .await;
    let (uri, artifact) = with_download(&server).await;
    let token = server.user_token("attacker");
    let mut start = text_parts(&[("description", "")]);
    start.extend(file_part_head("artifact", "a.mender").bytes());
    start.extend(&artifact[..700]);

    let threads_before = proc_status(server.pid(), "Threads");
    let mut stalled = Vec::new();
    for _ in 0..STALLED_UPLOADS {
        stalled.push(
            server
                .start_upload(&token, "/artifacts", 10_000_000, &start)
                .await,
        );
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;

    assert_healthy_in_time(&server).await;
    assert_download_in_time(&server, &uri, &artifact).await;
    // The parsers of stalled uploads do not pile up as threads: one per upload slot, plus
    // a few blocking-pool threads for the blob writes.
    let threads = proc_status(server.pid(), "Threads");
    assert!(
        threads <= threads_before + 2 * UPLOAD_SLOTS as u64 + 16,
        "{threads} threads with {STALLED_UPLOADS} stalled uploads, {threads_before} before"
    );

    // Uploads past the slots are refused as busy; those holding a slot end with 408 once
    // their body stalls for the read timeout (uploads that arrive after that find free
    // slots, and stall in turn).
    let mut statuses = std::collections::BTreeMap::<Option<u16>, usize>::new();
    for stream in &mut stalled {
        let status = status_within(stream, Duration::from_secs(20)).await;
        *statuses.entry(status).or_default() += 1;
    }
    let timed_out = statuses.remove(&Some(408)).unwrap_or(0);
    let busy = statuses.remove(&Some(503)).unwrap_or(0);
    assert!(statuses.is_empty(), "other answers: {statuses:?}");
    assert!(
        (UPLOAD_SLOTS..=3 * UPLOAD_SLOTS).contains(&timed_out),
        "{timed_out} uploads timed out, {busy} were refused as busy"
    );
    assert_eq!(timed_out + busy, STALLED_UPLOADS);
    assert!(server.as_user("attacker").artifacts().await.is_empty());
    assert_peak_rss(&server);
}

#[tokio::test]
async fn silent_and_half_sent_connections_are_bounded_and_closed() {
    const SLOTS: usize = 50;
    let server = Server::start_with(&[
        "--max-connections",
        &SLOTS.to_string(),
        "--header-read-timeout",
        "1",
        "--idle-timeout",
        "2",
    ])
    .await;
    let before = open_files(server.pid());
    let mut flood: Vec<TcpStream> = Vec::new();
    for i in 0..300 {
        let mut stream = server.connect().await;
        if i % 3 == 0 {
            stream
                .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await
                .unwrap();
        }
        flood.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Connections past the bound wait in the listen backlog, not in the server.
    let during = open_files(server.pid());
    assert!(
        during <= before + SLOTS + 5,
        "{during} open files with the flood, {before} before, {SLOTS} connections allowed"
    );
    // Every flood connection is closed once the server gets to it: 300 at 50 a second.
    let started = Instant::now();
    for stream in &mut flood {
        assert!(
            closed_within(stream, Duration::from_secs(20))
                .await
                .is_some(),
            "a silent connection was not closed after {:?}",
            started.elapsed()
        );
    }
    drop(flood);
    assert_healthy_in_time(&server).await;
    assert_peak_rss(&server);
}

#[tokio::test]
async fn a_kept_alive_connection_is_closed_once_idle() {
    let server = Server::start_with(&["--header-read-timeout", "1", "--idle-timeout", "2"]).await;
    let mut stream = server.connect().await;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(status_within(&mut stream, ANSWER_TIME).await, Some(200));
    assert!(closed_within(&mut stream, Duration::from_secs(5))
        .await
        .is_some());
}

#[tokio::test]
async fn a_client_that_stops_reading_a_download_is_disconnected() {
    let server = Server::start_with(&["--idle-timeout", "2"]).await;
    let work = Workdir::new();
    // Larger than what the kernel buffers on both sides, so the server's writes stall.
    let payload = work.random_file("big.ext4", 24 * 1024 * 1024);
    let built = work.rootfs_with("big", &["dev-a"], &payload, &[]);
    let api = server.as_user("acme");
    let id = api.upload_ok(&built.path, "").await;
    let uri = api.link_uri(&id).await;
    let path = uri.trim_start_matches(&server.base);

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket
        .connect(server.authority().parse().unwrap())
        .await
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    // Read nothing for longer than the idle timeout.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let received = closed_within(&mut stream, Duration::from_secs(10))
        .await
        .expect("the stalled download was not disconnected");
    assert!(
        received < built.bytes().len(),
        "the whole artifact went through ({received} bytes): the test did not stall the server"
    );
    assert_healthy_in_time(&server).await;
}

#[tokio::test]
async fn running_out_of_file_descriptors_neither_spins_nor_floods_the_log() {
    let server = Server::start_with(&["--header-read-timeout", "1"]).await;
    let pid = server.pid();
    // Leave the server a few descriptors more than it uses.
    let limit = open_files(pid) + 20;
    let status = std::process::Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={limit}:{limit}"))
        .status()
        .expect("running prlimit");
    assert!(status.success());

    let cpu_before = cpu_time(pid);
    let mut flood = Vec::new();
    for _ in 0..200 {
        flood.push(server.connect().await);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu = cpu_time(pid) - cpu_before;
    assert!(
        cpu < Duration::from_millis(1000),
        "{cpu:?} of CPU in 3 s of EMFILE"
    );
    let warnings = server.log_text().matches("accept failed").count();
    assert!(
        (1..=10).contains(&warnings),
        "{warnings} accept warnings in 3 s"
    );
    drop(flood);
    // Once the flood is gone the server serves again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_healthy_in_time(&server).await;
    assert_peak_rss(&server);
}
