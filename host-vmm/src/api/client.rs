//! A client of the management API for `cvmm ctl` and the launcher: one request per
//! connection (`Connection: close`), over the Unix socket.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket did not accept the connection.
    #[error("cannot connect to {path}")]
    Connect {
        /// The socket.
        path: String,
        /// Why not.
        #[source]
        source: std::io::Error,
    },
    /// Writing the request or reading the answer failed.
    #[error("the API at {path} did not answer")]
    Io {
        /// The socket.
        path: String,
        /// Why not.
        #[source]
        source: std::io::Error,
    },
    /// The answer is not HTTP.
    #[error("the API at {path} answered something that is not HTTP")]
    NotHttp {
        /// The socket.
        path: String,
    },
}

/// An answer: its status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// The body.
    pub body: String,
}

/// Sends `method path` (with `body`, if any) to the API at `socket`, waiting at most
/// `timeout` for each step.
pub fn request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<Reply, ClientError> {
    let name = socket.display().to_string();
    let io = |source| ClientError::Io {
        path: name.clone(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        path: name.clone(),
        source,
    })?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(io)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(io)?;
    parse_reply(&raw).ok_or(ClientError::NotHttp { path: name })
}

/// `GET path`.
pub fn get(socket: &Path, path: &str) -> Result<Reply, ClientError> {
    request(socket, "GET", path, None, Duration::from_secs(5))
}

/// Splits an HTTP/1.1 answer read to its end into status and body (a body of known
/// length is cut to it; chunked bodies are joined).
fn parse_reply(raw: &[u8]) -> Option<Reply> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines
        .next()?
        .strip_prefix("HTTP/1.")?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let header = |name: &str| {
        head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_string())
        })
    };
    let body = if header("Transfer-Encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(body)?
    } else if let Some(len) = header("Content-Length").and_then(|v| v.parse::<usize>().ok()) {
        body.get(..len).unwrap_or(body).to_string()
    } else {
        body.to_string()
    };
    Some(Reply { status, body })
}

fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size..)?.strip_prefix("\r\n")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_of_known_length_and_chunked_ones_parse() {
        let plain = b"HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\nhello!!";
        assert_eq!(
            parse_reply(plain),
            Some(Reply {
                status: 404,
                body: "hello".into()
            })
        );
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_reply(chunked).unwrap().body, "abcde");
        assert_eq!(parse_reply(b"garbage"), None);
        assert_eq!(parse_reply(b"SSH-2.0\r\n\r\n"), None);
    }
}
