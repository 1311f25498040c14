//! Raw HTTP/1.1 over TCP, for clients that misbehave on purpose: bodies that stop halfway,
//! headers that never end, connections that say nothing, readers that stop reading.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Server, MANAGEMENT};

/// The boundary of [`multipart`] bodies.
pub const BOUNDARY: &str = "rollout-test-boundary";

/// A multipart form: text `fields`, then `file` as `(field name, file name, bytes)`, and the
/// closing boundary.
pub fn multipart(fields: &[(&str, &str)], file: Option<(&str, &str, &[u8])>) -> Vec<u8> {
    let mut out = text_parts(fields);
    if let Some((name, filename, bytes)) = file {
        out.extend(file_part_head(name, filename).bytes());
        out.extend_from_slice(bytes);
        out.extend(b"\r\n");
    }
    out.extend(format!("--{BOUNDARY}--\r\n").bytes());
    out
}

/// The parts of text `fields`, without the closing boundary.
pub fn text_parts(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.extend(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .bytes(),
        );
    }
    out
}

/// The boundary and headers that open a file part.
pub fn file_part_head(name: &str, filename: &str) -> String {
    format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
}

impl Server {
    /// `host:port` of the server.
    pub fn authority(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// A new TCP connection to the server.
    pub async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.authority())
            .await
            .expect("connecting to the server")
    }

    /// Connect and send the head of `POST MANAGEMENT + path` with a multipart body of
    /// `content_length` bytes as `tenant`'s user, then `body_start`; the rest is up to the
    /// caller.
    pub async fn start_upload(
        &self,
        token: &str,
        path: &str,
        content_length: usize,
        body_start: &[u8],
    ) -> TcpStream {
        let mut stream = self.connect().await;
        let head = format!(
            "POST {MANAGEMENT}{path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\
             Content-Length: {content_length}\r\n\r\n",
            self.authority()
        );
        stream
            .write_all(head.as_bytes())
            .await
            .expect("sending the head");
        stream
            .write_all(body_start)
            .await
            .expect("sending the body");
        stream
    }
}

/// The status code of the response on `stream` if its status line arrives within `wait`.
pub async fn status_within(stream: &mut TcpStream, wait: Duration) -> Option<u16> {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 1024];
        while !got.windows(2).any(|w| w == b"\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(wait, read).await.ok()?;
    let line = String::from_utf8_lossy(&got);
    line.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Whether the server closes `stream` within `wait` (whatever it sends before). Returns the
/// bytes received before the end.
pub async fn closed_within(stream: &mut TcpStream, wait: Duration) -> Option<usize> {
    let read = async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0;
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n,
            }
        }
    };
    tokio::time::timeout(wait, read).await.ok()
}
