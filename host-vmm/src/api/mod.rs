//! The management API: HTTP/1.1 with JSON bodies on a Unix socket (`--api-socket PATH`),
//! for operators and their monitoring. No network port: the socket's file mode is the
//! access control, and it is created 0600 (only its owner may connect).
//!
//! | method and path | answer |
//! |---|---|
//! | `GET /v1/status` | nodes, their state, VPs and where each runs, memory per node, config epoch |
//! | `GET /v1/stats` | the `--stats-json` counters, live |
//! | `GET /metrics` | the same in the Prometheus text format |
//! | `PUT /v1/vps` | `{"node": N, "vps": K}`: set node N's online VPs (two-phase, paper 4.10) |
//! | `PUT /v1/memory` | `{"node": N, "mib": M}`: set the logical memory node N homes |
//!
//! The other changes (`POST /v1/nodes`, `DELETE /v1/nodes/{id}`) are not built yet:
//! they answer 501 and change nothing. Every error is `{"error": "..."}`
//! with a 4xx or 5xx status, and a refused change changes nothing.
//!
//! One thread serves requests one at a time, which also keeps changes one at a time;
//! reads are computed from counters, and a change waits for the guest's acknowledgements
//! (bounded by [`crate::server::reconfig::ACK_TIMEOUT`]).

pub mod client;
pub mod metrics;
pub mod node;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use tiny_http::{Header, Method, Request, Response, Server};

/// Longest request body the API reads; a longer one is refused (413) unread.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A change that was refused or failed: the HTTP status and one sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status (4xx, or 5xx when the server could not do a valid change).
    pub status: u16,
    /// What went wrong.
    pub message: String,
}

impl Refusal {
    /// A refusal with `status`.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Refusal {
            status,
            message: message.into(),
        }
    }
}

/// The body of `PUT /v1/vps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetVps {
    /// The node.
    pub node: u32,
    /// Its VP count afterwards.
    pub vps: u32,
}

/// The body of `PUT /v1/memory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetMemory {
    /// The node.
    pub node: u32,
    /// The logical memory it homes afterwards, in MiB.
    pub mib: u64,
}

/// A change of the running server, as the API received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// `PUT /v1/vps`.
    Vps(SetVps),
    /// `PUT /v1/memory`.
    Memory(SetMemory),
}

impl Change {
    /// The node the change is for.
    pub fn node(&self) -> u32 {
        match self {
            Change::Vps(c) => c.node,
            Change::Memory(c) => c.node,
        }
    }

    /// Its method, path and JSON body, to send it on.
    pub fn request(&self) -> (&'static str, &'static str, String) {
        match self {
            Change::Vps(c) => (
                "PUT",
                "/v1/vps",
                serde_json::json!({ "node": c.node, "vps": c.vps }).to_string(),
            ),
            Change::Memory(c) => (
                "PUT",
                "/v1/memory",
                serde_json::json!({ "node": c.node, "mib": c.mib }).to_string(),
            ),
        }
    }
}

/// What the API serves: a node's view, or the launcher's view of all its nodes.
pub trait ApiSource: Send + Sync {
    /// `GET /v1/status`.
    fn status(&self) -> serde_json::Value;
    /// `GET /v1/stats`: `{"nodes": [counters...]}` as `--stats-json` writes it.
    fn stats(&self) -> serde_json::Value;
    /// A change (`PUT /v1/vps`, `PUT /v1/memory`): what it did, or why not.
    fn change(&self, change: Change) -> Result<serde_json::Value, Refusal> {
        let _ = change;
        Err(Refusal::new(501, "this API cannot change the server"))
    }
}

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Something else is at the path.
    #[error("{} exists and is not a stale socket; remove it or choose another path", .0.display())]
    PathTaken(PathBuf),
    /// The socket could not be created.
    #[error("cannot listen on {}: {reason}", path.display())]
    Listen {
        /// The path.
        path: PathBuf,
        /// Why not.
        reason: String,
    },
    /// Its mode could not be set to 0600.
    #[error("cannot make {} private (mode 0600)", path.display())]
    Mode {
        /// The path.
        path: PathBuf,
        /// Why not.
        #[source]
        source: std::io::Error,
    },
    /// The serving thread did not start.
    #[error("cannot start the API thread")]
    Thread(#[source] std::io::Error),
}

/// A running API; stops (and removes its socket) when dropped.
pub struct ApiServer {
    server: Arc<Server>,
    path: PathBuf,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// True when `path` is a socket nobody listens on (left by a process that died).
fn stale_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
        && std::os::unix::net::UnixStream::connect(path).is_err()
}

impl ApiServer {
    /// Serves `source` on a new socket at `path` (mode 0600).
    pub fn start(path: &Path, source: Arc<dyn ApiSource>) -> Result<Self, ApiError> {
        if std::fs::symlink_metadata(path).is_ok() {
            if !stale_socket(path) {
                return Err(ApiError::PathTaken(path.to_path_buf()));
            }
            let _ = std::fs::remove_file(path);
        }
        let server = Server::http_unix(path).map_err(|e| ApiError::Listen {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        // Before the first request is accepted: nothing is served until the thread runs.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
            |source| ApiError::Mode {
                path: path.to_path_buf(),
                source,
            },
        )?;
        let server = Arc::new(server);
        let serving = server.clone();
        let thread = std::thread::Builder::new()
            .name("api".into())
            .spawn(move || {
                for request in serving.incoming_requests() {
                    answer(request, source.as_ref());
                }
            })
            .map_err(ApiError::Thread)?;
        Ok(ApiServer {
            server,
            path: path.to_path_buf(),
            thread: Some(thread),
        })
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// An answer: status code, content type, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

impl Answer {
    fn json(status: u16, value: &serde_json::Value) -> Self {
        let mut body = serde_json::to_string_pretty(value).expect("JSON values serialize");
        body.push('\n');
        Answer {
            status,
            content_type: "application/json",
            body,
        }
    }

    fn error(status: u16, message: impl Into<String>) -> Self {
        Self::json(status, &serde_json::json!({ "error": message.into() }))
    }
}

/// The changes a later version serves, by method and path prefix.
const NOT_BUILT: [(&str, &str); 2] = [("POST", "/v1/nodes"), ("DELETE", "/v1/nodes/")];

/// Routes one request (`body_len`: its declared length, for the size limit; `body`: the
/// body read, empty when it was too long).
pub fn route(
    method: &str,
    url: &str,
    body_len: Option<usize>,
    body: &[u8],
    source: &dyn ApiSource,
) -> Answer {
    if body_len.is_some_and(|len| len > MAX_BODY_BYTES) {
        return Answer::error(
            413,
            format!("the body is larger than {MAX_BODY_BYTES} bytes"),
        );
    }
    let path = url.split('?').next().unwrap_or(url);
    match (method, path) {
        ("GET", "/v1/status") => Answer::json(200, &source.status()),
        ("GET", "/v1/stats") => Answer::json(200, &source.stats()),
        ("GET", "/metrics") => Answer {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: metrics::render(&source.stats()),
        },
        (_, "/v1/status" | "/v1/stats" | "/metrics") => {
            Answer::error(405, format!("{path} answers GET only"))
        }
        ("PUT", "/v1/vps") => match serde_json::from_slice::<SetVps>(body) {
            Err(err) => Answer::error(
                400,
                format!("the body must be {{\"node\": N, \"vps\": K}}: {err}"),
            ),
            Ok(change) => changed(source, Change::Vps(change)),
        },
        ("PUT", "/v1/memory") => match serde_json::from_slice::<SetMemory>(body) {
            Err(err) => Answer::error(
                400,
                format!("the body must be {{\"node\": N, \"mib\": M}}: {err}"),
            ),
            Ok(change) => changed(source, Change::Memory(change)),
        },
        (_, "/v1/vps" | "/v1/memory") => Answer::error(405, format!("{path} answers PUT only")),
        _ if NOT_BUILT.iter().any(|(m, p)| {
            *m == method && (path == *p || (p.ends_with('/') && path.starts_with(p)))
        }) =>
        {
            Answer::error(
                501,
                format!(
                    "{method} {path}: changing a running virtual server (hotplug) is not \
                     built yet; nothing was changed"
                ),
            )
        }
        _ => Answer::error(404, format!("no such endpoint: {method} {path}")),
    }
}

fn changed(source: &dyn ApiSource, change: Change) -> Answer {
    match source.change(change) {
        Ok(done) => Answer::json(200, &done),
        Err(refusal) => Answer::error(refusal.status, refusal.message),
    }
}

fn answer(mut request: Request, source: &dyn ApiSource) {
    let method = match request.method() {
        Method::Get => "GET",
        Method::Put => "PUT",
        Method::Post => "POST",
        Method::Delete => "DELETE",
        _ => "OTHER",
    };
    let declared = request.body_length();
    // A body declared too long is refused unread; one with no declared length is read
    // up to the limit.
    let mut body = Vec::new();
    if declared.is_none_or(|len| len <= MAX_BODY_BYTES) {
        let limit = u64::try_from(MAX_BODY_BYTES + 1).unwrap_or(u64::MAX);
        let _ = request.as_reader().take(limit).read_to_end(&mut body);
    }
    let answer = if body.len() > MAX_BODY_BYTES {
        Answer::error(
            413,
            format!("the body is larger than {MAX_BODY_BYTES} bytes"),
        )
    } else {
        route(method, request.url(), declared, &body, source)
    };
    let content_type =
        Header::from_bytes("Content-Type", answer.content_type).expect("a valid header");
    let response = Response::from_string(answer.body)
        .with_status_code(answer.status)
        .with_header(content_type);
    let _ = request.respond(response);
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;

    impl ApiSource for Fixed {
        fn status(&self) -> serde_json::Value {
            serde_json::json!({ "nodes": [] })
        }
        fn stats(&self) -> serde_json::Value {
            serde_json::json!({ "nodes": [] })
        }
    }

    fn error_of(answer: &Answer) -> String {
        let value: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        value["error"].as_str().unwrap().to_string()
    }

    #[test]
    fn reads_are_served_and_everything_else_is_a_json_error() {
        assert_eq!(route("GET", "/v1/status", None, b"", &Fixed).status, 200);
        assert_eq!(route("GET", "/v1/stats?x=1", None, b"", &Fixed).status, 200);
        let metrics = route("GET", "/metrics", None, b"", &Fixed);
        assert!(metrics
            .content_type
            .starts_with("text/plain; version=0.0.4"));
        for (method, path, status) in [
            ("POST", "/v1/status", 405),
            ("GET", "/v2/status", 404),
            ("GET", "/", 404),
            ("PUT", "/v1/vps", 400),
            ("GET", "/v1/vps", 405),
            ("PUT", "/v1/memory", 400),
            ("POST", "/v1/nodes", 501),
            ("DELETE", "/v1/nodes/2", 501),
            ("DELETE", "/v1/nodesX", 404),
            ("OTHER", "/metrics", 405),
        ] {
            let answer = route(method, path, None, b"", &Fixed);
            assert_eq!(answer.status, status, "{method} {path}");
            assert_eq!(answer.content_type, "application/json");
            assert!(!error_of(&answer).is_empty());
        }
        let huge = route("PUT", "/v1/vps", Some(MAX_BODY_BYTES + 1), b"", &Fixed);
        assert_eq!(huge.status, 413);
    }

    #[test]
    fn a_vp_change_needs_exactly_its_two_fields() {
        for body in [
            &br#"{"node": 0}"#[..],
            br#"{"node": 0, "vps": -1}"#,
            br#"{"node": 0, "vps": 1, "extra": 2}"#,
            br#"{"node": "0", "vps": 1}"#,
            b"not json",
            b"",
        ] {
            let answer = route("PUT", "/v1/vps", None, body, &Fixed);
            assert_eq!(answer.status, 400, "{}", String::from_utf8_lossy(body));
            assert!(error_of(&answer).contains("node"));
        }
        // A well-formed change reaches the source (which cannot do it here).
        let answer = route("PUT", "/v1/vps", None, br#"{"node": 1, "vps": 2}"#, &Fixed);
        assert_eq!(answer.status, 501);
        let answer = route(
            "PUT",
            "/v1/memory",
            None,
            br#"{"node": 1, "mib": 8}"#,
            &Fixed,
        );
        assert_eq!(answer.status, 501);
        let answer = route(
            "PUT",
            "/v1/memory",
            None,
            br#"{"node": 1, "vps": 8}"#,
            &Fixed,
        );
        assert_eq!(answer.status, 400);
    }
}
