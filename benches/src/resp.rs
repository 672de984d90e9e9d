//! Just enough RESP (the Redis protocol) for the Redis Streams peers: commands out, replies in,
//! over a plain socket with no client library, so the client adds as little as it can.

use std::io::BufRead;
use std::net::TcpStream;

pub type RespResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A RESP reply, as far as XADD and XREAD need.
#[derive(Debug)]
pub enum Reply {
    /// A bulk string.
    Bulk(Vec<u8>),
    /// An array of replies.
    Array(Vec<Reply>),
    /// Anything else (integers, simple strings, nulls).
    Other,
}

pub fn read_reply(reader: &mut impl BufRead) -> RespResult<Reply> {
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line)?;
    let (Some(&kind), Some(body)) = (line.first(), line.get(1..line.len().saturating_sub(2))) else {
        return Err("connection closed".into());
    };
    let number = || -> RespResult<i64> { Ok(std::str::from_utf8(body)?.parse()?) };
    Ok(match kind {
        b'-' => return Err(format!("redis: {}", String::from_utf8_lossy(body)).into()),
        b'$' => match usize::try_from(number()?) {
            Ok(len) => {
                let mut bytes = vec![0; len + 2];
                reader.read_exact(&mut bytes)?;
                bytes.truncate(len);
                Reply::Bulk(bytes)
            }
            Err(_) => Reply::Other,
        },
        b'*' => match usize::try_from(number()?) {
            Ok(len) => Reply::Array((0..len).map(|_| read_reply(reader)).collect::<RespResult<_>>()?),
            Err(_) => Reply::Other,
        },
        _ => Reply::Other,
    })
}

pub fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

pub fn connect(server: &str) -> RespResult<TcpStream> {
    let stream = TcpStream::connect(server)?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The entries of an XREAD reply: `[[stream, [[id, [field, value, ...]], ...]]]`, as
/// (id, first field's value).
pub fn entries(reply: Reply) -> Vec<(Vec<u8>, Vec<u8>)> {
    let Reply::Array(streams) = reply else { return Vec::new() };
    let mut out = Vec::new();
    for stream in streams {
        let Reply::Array(mut parts) = stream else { continue };
        let Some(Reply::Array(list)) = parts.pop() else { continue };
        for entry in list {
            let Reply::Array(mut entry) = entry else { continue };
            let (Some(Reply::Array(mut fields)), Some(Reply::Bulk(id))) = (entry.pop(), entry.pop()) else { continue };
            if fields.len() >= 2
                && let Reply::Bulk(stamp) = fields.swap_remove(1)
            {
                out.push((id, stamp));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_an_array_of_bulk_strings() {
        assert_eq!(command(&[b"XADD", b"k", b"*"]), b"*3\r\n$4\r\nXADD\r\n$1\r\nk\r\n$1\r\n*\r\n".to_vec());
    }

    #[test]
    fn an_xread_reply_yields_each_entry_id_and_first_value() {
        let reply = b"*1\r\n*2\r\n$1\r\nk\r\n*2\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nv\r\n$2\r\nab\r\n*2\r\n$3\r\n2-0\r\n*2\r\n$1\r\nv\r\n$0\r\n\r\n";
        let parsed = read_reply(&mut &reply[..]).unwrap();
        assert_eq!(entries(parsed), vec![(b"1-0".to_vec(), b"ab".to_vec()), (b"2-0".to_vec(), Vec::new())]);
    }

    #[test]
    fn an_error_reply_is_an_error_and_a_null_reply_is_other() {
        let error = read_reply(&mut &b"-ERR no such key\r\n"[..]).unwrap_err().to_string();
        assert!(error.contains("no such key"), "{error}");
        assert!(matches!(read_reply(&mut &b"*-1\r\n"[..]).unwrap(), Reply::Other));
        assert!(read_reply(&mut &b""[..]).is_err(), "a closed connection");
    }
}
