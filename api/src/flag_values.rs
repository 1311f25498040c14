//! Parsers for `rollout serve` flag values that operators write by hand: listen addresses
//! (`8080`, `:8080`, `localhost:8080`), sizes with units (`10G`) and durations with units
//! (`1d`). A plain number keeps meaning what it always did (bytes, seconds).

use std::net::{SocketAddr, ToSocketAddrs};

/// `HOST:PORT` (a name is resolved, the first address wins), `PORT` (on 127.0.0.1, like
/// the default) or `:PORT` (on every interface).
pub(crate) fn listen_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Some(port) = s.strip_prefix(':').and_then(|p| p.parse::<u16>().ok()) {
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let hint = "give HOST:PORT (127.0.0.1:8080, localhost:8080, [::1]:8080), PORT or :PORT";
    let mut found = s
        .to_socket_addrs()
        .map_err(|e| format!("{s:?}: {e}; {hint}"))?;
    found
        .next()
        .ok_or_else(|| format!("{s:?} resolves to no address; {hint}"))
}

/// Bytes: a number, optionally with `K`, `M`, `G` or `T` (powers of 1024; `KiB`, `KB` and
/// lower case are read the same).
pub(crate) fn bytes(s: &str) -> Result<u64, String> {
    const UNITS: &[(&[&str], u64)] = &[
        (&["", "b"], 1),
        (&["k", "kb", "kib"], 1 << 10),
        (&["m", "mb", "mib"], 1 << 20),
        (&["g", "gb", "gib"], 1 << 30),
        (&["t", "tb", "tib"], 1 << 40),
    ];
    scaled(s, UNITS, "a size (try 1048576, 512K, 10G)", "K, M, G or T")
}

/// Seconds: a number, optionally with `s`, `m`, `h` or `d`.
pub(crate) fn seconds(s: &str) -> Result<u64, String> {
    const UNITS: &[(&[&str], u64)] = &[
        (&["", "s"], 1),
        (&["m"], 60),
        (&["h"], 3600),
        (&["d"], 24 * 3600),
    ];
    scaled(
        s,
        UNITS,
        "a duration (try 90, 15m, 12h, 7d)",
        "s, m, h or d",
    )
}

/// A whole number times the factor of its unit (matched without regard to case).
fn scaled(s: &str, units: &[(&[&str], u64)], what: &str, known: &str) -> Result<u64, String> {
    let (number, unit) = split_unit(s);
    let n: u64 = number.parse().map_err(|_| format!("{s:?} is not {what}"))?;
    let unit = unit.to_ascii_lowercase();
    let factor = units
        .iter()
        .find(|(names, _)| names.contains(&unit.as_str()))
        .map(|(_, f)| *f)
        .ok_or_else(|| format!("{s:?}: unknown unit {unit:?} (use {known})"))?;
    n.checked_mul(factor)
        .ok_or_else(|| format!("{s:?} is out of range"))
}

/// Seconds, at least one.
pub(crate) fn positive_seconds(s: &str) -> Result<u64, String> {
    match seconds(s)? {
        0 => Err(format!("{s:?}: must be at least 1 second")),
        n => Ok(n),
    }
}

fn split_unit(s: &str) -> (&str, &str) {
    let s = s.trim();
    let at = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(at);
    (number, unit.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_take_a_port_a_wildcard_port_or_a_host_name() {
        assert_eq!(listen_addr("8080"), Ok("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(listen_addr(":8080"), Ok("0.0.0.0:8080".parse().unwrap()));
        assert_eq!(listen_addr("[::1]:0"), Ok("[::1]:0".parse().unwrap()));
        let local = listen_addr("localhost:8080").unwrap();
        assert!(local.ip().is_loopback() && local.port() == 8080, "{local}");
        let err = listen_addr("localhost").unwrap_err();
        assert!(err.contains("HOST:PORT"), "{err}");
        assert!(listen_addr("99999").is_err());
    }

    #[test]
    fn sizes_and_durations_take_units_and_plain_numbers_keep_their_meaning() {
        assert_eq!(bytes("1048576"), Ok(1 << 20));
        assert_eq!(bytes("512K"), Ok(512 << 10));
        assert_eq!(bytes("10G"), Ok(10 << 30));
        assert_eq!(bytes("2 GiB"), Ok(2 << 30));
        assert_eq!(bytes("1t"), Ok(1 << 40));
        assert!(bytes("10X").unwrap_err().contains("unknown unit"));
        assert!(bytes("-1").is_err() && bytes("").is_err());
        assert!(bytes("99999999999T").unwrap_err().contains("out of range"));
        assert_eq!(seconds("90"), Ok(90));
        assert_eq!(seconds("15m"), Ok(900));
        assert_eq!(seconds("1d"), Ok(86400));
        assert!(seconds("1w").unwrap_err().contains("unknown unit"));
        assert_eq!(
            positive_seconds("0"),
            Err("\"0\": must be at least 1 second".into())
        );
    }
}
