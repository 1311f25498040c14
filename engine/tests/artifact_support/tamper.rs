//! Taking an artifact apart, changing it and putting it back together: damaged and hostile
//! artifacts for the reader's tests.
//!
//! Hostile streams are built so that the *test* stays small: a record declaring gigabytes
//! is followed by a compressed stream made of one compressed chunk repeated (gzip, xz and
//! zstd readers all accept concatenated streams), so a few hundred kilobytes inflate to
//! gigabytes without the test ever holding more than a megabyte.
//!
//! This file depends only on crates, not on the rest of the test support, so that the API
//! tests can include it too (`#[path = ...] mod tamper;`).

#![allow(dead_code)]

use std::io::{Read, Write};

use sha2::{Digest, Sha256};

/// One member of an artifact's outer tar (or of a header tar).
#[derive(Clone, Debug)]
pub struct Member {
    pub name: String,
    pub data: Vec<u8>,
}

impl Member {
    pub fn new(name: &str, data: impl Into<Vec<u8>>) -> Self {
        Member {
            name: name.to_owned(),
            data: data.into(),
        }
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The members of a tar, in order.
pub fn members(tar_bytes: &[u8]) -> Vec<Member> {
    let mut archive = tar::Archive::new(tar_bytes);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            Member { name, data }
        })
        .collect()
}

/// A tar holding `members`, in order.
pub fn pack(members: &[Member]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for member in members {
        let mut header = tar::Header::new_ustar();
        header.set_size(member.data.len() as u64);
        header.set_mode(0o600);
        builder
            .append_data(&mut header, &member.name, &member.data[..])
            .unwrap();
    }
    builder.into_inner().unwrap()
}

/// A raw tar header block for an entry whose name field holds `name` as is (the `tar`
/// crate's builder refuses `..` and absolute names, which is the point here), of type
/// `kind`, declaring `size` bytes.
pub fn raw_header(name: &[u8], kind: tar::EntryType, size: u64) -> [u8; 512] {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(1_700_000_000);
    let field = &mut header.as_old_mut().name;
    assert!(
        name.len() <= field.len(),
        "name too long for the name field"
    );
    field[..name.len()].copy_from_slice(name);
    header.set_cksum();
    *header.as_bytes()
}

/// Zero bytes that pad `len` bytes to a whole tar block.
pub fn padding(len: u64) -> Vec<u8> {
    vec![0; ((512 - len % 512) % 512) as usize]
}

/// A tar entry: raw header, content, padding.
pub fn raw_entry(name: &[u8], content: &[u8]) -> Vec<u8> {
    let mut out = raw_header(name, tar::EntryType::Regular, content.len() as u64).to_vec();
    out.extend_from_slice(content);
    out.extend(padding(content.len() as u64));
    out
}

/// The two zero blocks that end a tar archive.
pub fn end_of_archive() -> Vec<u8> {
    vec![0; 1024]
}

/// How a member is compressed, by its suffix: `""`, `".gz"`, `".xz"`, `".zst"`.
pub fn compress(suffix: &str, bytes: &[u8]) -> Vec<u8> {
    match suffix {
        "" => bytes.to_vec(),
        ".gz" => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            enc.write_all(bytes).unwrap();
            enc.finish().unwrap()
        }
        ".xz" => {
            let mut enc = xz2::write::XzEncoder::new(Vec::new(), 0);
            enc.write_all(bytes).unwrap();
            enc.finish().unwrap()
        }
        ".zst" => zstd::encode_all(bytes, 19).unwrap(),
        other => panic!("unknown compression suffix {other:?}"),
    }
}

/// The compressed stream `head`, then `mib` MiB of `fill`, then `tail`, built from
/// concatenated compressed streams: a stream that inflates to `mib` MiB while the test
/// holds one MiB.
pub fn bomb(suffix: &str, head: &[u8], fill: u8, mib: u64, tail: &[u8]) -> Vec<u8> {
    let chunk = compress(suffix, &vec![fill; 1024 * 1024]);
    let mut out = compress(suffix, head);
    for _ in 0..mib {
        out.extend_from_slice(&chunk);
    }
    out.extend(compress(suffix, tail));
    out
}

/// A compressed data tar whose first record is a GNU long name (`L`) of `mib` MiB of `a`,
/// then a one-byte file `x`.
pub fn long_name_bomb(suffix: &str, mib: u64) -> Vec<u8> {
    let size = mib * 1024 * 1024;
    let head = raw_header(b"././@LongLink", tar::EntryType::GNULongName, size);
    let mut tail = padding(size);
    tail.extend(raw_entry(b"x", b"x"));
    tail.extend(end_of_archive());
    bomb(suffix, &head, b'a', mib, &tail)
}

/// A compressed data tar holding `files`, raw names and all.
pub fn data_tar(suffix: &str, files: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut tar = Vec::new();
    for (name, content) in files {
        tar.extend(raw_entry(name, content));
    }
    tar.extend(end_of_archive());
    compress(suffix, &tar)
}

/// The member called `name`.
pub fn member<'a>(members: &'a mut [Member], name: &str) -> &'a mut Member {
    members
        .iter_mut()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no member {name}"))
}

/// The name of the member starting with `prefix` (`header.tar`, `data/0000.tar`).
pub fn member_name(members: &[Member], prefix: &str) -> String {
    members
        .iter()
        .find(|m| m.name.starts_with(prefix))
        .unwrap_or_else(|| panic!("no member {prefix}*"))
        .name
        .clone()
}

/// Replaces the manifest's line for `name` (if any) by one for `new_name` with the sha256
/// of `content` (none if `content` is `None`).
pub fn set_manifest_line(
    members: &mut [Member],
    name: &str,
    new_name: &str,
    content: Option<&[u8]>,
) {
    let manifest = member(members, "manifest");
    let text = String::from_utf8(manifest.data.clone()).unwrap();
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !l.ends_with(&format!("  {name}")))
        .map(str::to_owned)
        .collect();
    if let Some(content) = content {
        lines.push(format!("{}  {new_name}", sha256_hex(content)));
    }
    manifest.data = (lines.join("\n") + "\n").into_bytes();
}

/// Unpacks the (gzip- or un-compressed) header tar, lets `edit` change its files, and
/// packs it back, with its manifest line updated.
pub fn edit_header(members: &mut [Member], edit: impl FnOnce(&mut Vec<Member>)) {
    let mut files = self::members(&header_tar(members));
    edit(&mut files);
    set_header_tar(members, &pack(&files));
}

/// Makes `plain` (an uncompressed tar) the header, compressed like the one it replaces,
/// with its manifest line updated.
pub fn set_header_tar(members: &mut [Member], plain: &[u8]) {
    let name = member_name(members, "header.tar");
    let suffix = name
        .strip_prefix("header.tar")
        .unwrap_or_default()
        .to_owned();
    let data = compress(&suffix, plain);
    member(members, &name).data = data.clone();
    set_manifest_line(members, &name, &name, Some(&data));
}

/// The uncompressed tar of the (gzip- or un-compressed) header.
pub fn header_tar(members: &mut [Member]) -> Vec<u8> {
    let name = member_name(members, "header.tar");
    let header = member(members, &name);
    match name.as_str() {
        "header.tar" => header.data.clone(),
        "header.tar.gz" => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&header.data[..])
                .read_to_end(&mut out)
                .unwrap();
            out
        }
        other => panic!("header_tar handles header.tar and header.tar.gz, not {other}"),
    }
}

/// Lets `edit` change the JSON of header file `file` (`header-info`,
/// `headers/0000/type-info`, …), creating it as `{}` if it is missing.
pub fn edit_header_json(
    members: &mut [Member],
    file: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) {
    edit_header(members, |files| {
        let index = match files.iter().position(|f| f.name == file) {
            Some(index) => index,
            None => {
                files.push(Member::new(file, b"{}".to_vec()));
                files.len() - 1
            }
        };
        let mut json: serde_json::Value = serde_json::from_slice(&files[index].data).unwrap();
        edit(&mut json);
        files[index].data = serde_json::to_vec(&json).unwrap();
    });
}

/// Replaces payload 0 by a data tar holding `files` (raw names), compressed like the one
/// it replaces, and makes the manifest list exactly those files.
pub fn replace_payload(members: &mut [Member], files: &[(&[u8], &[u8])]) {
    let name = member_name(members, "data/0000.tar");
    let suffix = name
        .strip_prefix("data/0000.tar")
        .unwrap_or_default()
        .to_owned();
    member(members, &name).data = data_tar(&suffix, files);
    let manifest = member(members, "manifest");
    let text = String::from_utf8(manifest.data.clone()).unwrap();
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !l.contains("  data/0000/"))
        .map(str::to_owned)
        .collect();
    for (file, content) in files {
        let file = String::from_utf8_lossy(file);
        lines.push(format!("{}  data/0000/{file}", sha256_hex(content)));
    }
    manifest.data = (lines.join("\n") + "\n").into_bytes();
}

/// `stream` with the dictionary size in the LZMA2 filter of its first xz block header
/// raised to 1 GiB (and the header's CRC fixed): a valid stream that asks the decoder for a
/// gigabyte of memory.
pub fn xz_with_huge_dictionary(mut stream: Vec<u8>) -> Vec<u8> {
    const STREAM_HEADER: usize = 12;
    let size = (usize::from(stream[STREAM_HEADER]) + 1) * 4;
    let flags = stream[STREAM_HEADER + 1];
    let mut at = STREAM_HEADER + 2;
    for present in [flags & 0x40 != 0, flags & 0x80 != 0] {
        if present {
            while stream[at] & 0x80 != 0 {
                at += 1;
            }
            at += 1;
        }
    }
    assert_eq!(&stream[at..at + 2], &[0x21, 0x01], "not an LZMA2 filter");
    // Dictionary size byte 36 means 2 << (36 / 2 + 11) = 1 GiB.
    stream[at + 2] = 36;
    let crc_at = STREAM_HEADER + size - 4;
    let mut crc = flate2::Crc::new();
    crc.update(&stream[STREAM_HEADER..crc_at]);
    stream[crc_at..crc_at + 4].copy_from_slice(&crc.sum().to_le_bytes());
    stream
}

/// `frame` (one zstd frame with a window descriptor) asking for a window of 2^`log` bytes.
pub fn zstd_with_window_log(mut frame: Vec<u8>, log: u8) -> Vec<u8> {
    let descriptor = frame[4];
    assert_eq!(
        descriptor & 0x20,
        0,
        "single-segment frame has no window descriptor"
    );
    // Exponent in the high five bits, mantissa 0: a window of 2^(10 + exponent) bytes.
    frame[5] = (log - 10) << 3;
    frame
}
