//! `sluice-server health`: asks a running broker's `/readyz` and exits 0 only if it answers
//! 200. It needs no shell features and no other program, so a container image's HEALTHCHECK
//! can run it under any `/bin/sh` (Debian's is dash, which has no `/dev/tcp`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long the check may take in all.
const TIMEOUT: Duration = Duration::from_secs(2);

/// The address to ask: `http_listen`, with an unspecified address (`0.0.0.0`, `::`) replaced by
/// loopback, since a broker listening on every interface answers on loopback too.
pub fn target(http_listen: SocketAddr) -> SocketAddr {
    match http_listen {
        SocketAddr::V4(a) if a.ip().is_unspecified() => SocketAddr::from(([127, 0, 0, 1], a.port())),
        SocketAddr::V6(a) if a.ip().is_unspecified() => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port())),
        other => other,
    }
}

/// GET /readyz on `addr`: `Ok(status line)` if it answered 200, `Err(why not)` otherwise.
pub fn check(addr: SocketAddr) -> Result<String, String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let io = |e: std::io::Error| format!("talking to {addr}: {e}");
    stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    stream.write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n").map_err(io)?;
    let mut response = String::new();
    stream.take(64 << 10).read_to_string(&mut response).map_err(io)?;
    let status = response.lines().next().unwrap_or_default().to_owned();
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body).trim().to_owned();
    if status.split_whitespace().nth(1) == Some("200") { Ok(status) } else { Err(format!("{status}: {body}")) }
}
