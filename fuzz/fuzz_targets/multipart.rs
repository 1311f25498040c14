//! The multipart upload parser on arbitrary bodies: the first line is the boundary, the
//! rest the body, cut into chunks at the positions the input's last bytes pick so that
//! part boundaries fall across reads. Parsing ends in parts or an error, never a panic,
//! and memory stays within the parser's bound (libFuzzer's -rss_limit_mb).
#![no_main]

use std::sync::OnceLock;

use api::multipart::Form;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

fn chunks(body: &[u8], cut: u8) -> Vec<Result<Bytes, std::io::Error>> {
    let step = usize::from(cut).max(1);
    body.chunks(step)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, data)) = data.split_last() else {
        return;
    };
    let (boundary, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b"X"[..], data),
    };
    let boundary = String::from_utf8_lossy(boundary).into_owned();
    let stream = futures_util::stream::iter(chunks(body, cut));
    runtime().block_on(async move {
        let mut form = Form::new(boundary, stream);
        while let Ok(Some(_part)) = form.next_part().await {
            while let Ok(Some(_data)) = form.chunk().await {}
        }
    });
});
