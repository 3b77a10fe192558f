//! Stage two for the service settings: the transport (stdio or HTTP), where HTTP listens, who
//! may call (bearer tokens, one principal each), which browser origins are allowed, and the
//! HTTP limits. Parsing is pure (tested here); the one file read is `AUTH_TOKENS_FILE`. Tokens
//! are kept only as SHA-256 digests and never printed, not even by `Debug`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::Cli;
use super::values::{invalid, positive};
use crate::error::ConfigError;
use crate::principal::Principal;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 10;
pub const DEFAULT_MAX_HTTP_CLIENTS: usize = 64;
/// Most MCP sessions `MAX_HTTP_CLIENTS` may allow.
pub const MAX_MAX_HTTP_CLIENTS: usize = 4096;
/// Longest `SHUTDOWN_GRACE`.
pub const MAX_SHUTDOWN_GRACE_SECS: u64 = 3600;
/// How a token in `AUTH_TOKENS_FILE` is written as its digest.
const SHA256_PREFIX: &str = "sha256:";

/// How clients reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// One client on stdin/stdout.
    Stdio,
    /// Streamable HTTP on [`ServiceSettings::listen`], endpoint `/mcp`.
    Http,
}

/// The validated service settings.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    pub transport: Transport,
    /// Where HTTP listens (port 0: a free port, logged once bound).
    pub listen: SocketAddr,
    /// Who may call over HTTP; empty: nobody needs a token (loopback, or
    /// `--allow-unauthenticated`), and every request is principal `default`.
    pub tokens: Tokens,
    /// Browser origins allowed besides loopback ones, normalized (`scheme://host[:port]`,
    /// lowercase, the scheme's default port dropped).
    pub allowed_origins: Vec<String>,
    /// Whether a non-loopback `listen` without tokens was allowed explicitly.
    pub allow_unauthenticated: bool,
    /// How long calls in flight may take to finish after SIGTERM/SIGINT.
    pub shutdown_grace: Duration,
    /// MCP sessions open at once.
    pub max_http_clients: usize,
}

/// One principal's token, as the SHA-256 digest of the token.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenEntry {
    pub principal: Principal,
    pub digest: [u8; 32],
}

impl fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenEntry({}, <redacted>)", self.principal)
    }
}

/// The tokens of every principal (no two principals, no two tokens alike).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokens(Vec<TokenEntry>);

impl Tokens {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn entries(&self) -> &[TokenEntry] {
        &self.0
    }

    /// Adds an entry; refuses a principal or a token given before (`setting` names the source).
    fn push(
        &mut self,
        setting: &'static str,
        entry: TokenEntry,
        at: &str,
    ) -> Result<(), ConfigError> {
        if self.0.iter().any(|e| e.principal == entry.principal) {
            return Err(invalid(
                setting,
                at,
                &format!("principal {} is given twice", entry.principal),
            ));
        }
        if self.0.iter().any(|e| e.digest == entry.digest) {
            return Err(invalid(
                setting,
                at,
                "the same token is given to two principals; each needs its own",
            ));
        }
        self.0.push(entry);
        Ok(())
    }
}

/// The SHA-256 digest of a token as presented.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Validates the service settings of `cli`.
pub fn service_from_cli(cli: &Cli) -> Result<ServiceSettings, ConfigError> {
    let transport = transport(&cli.transport)?;
    let listen = listen_addr(&cli.listen)?;
    let tokens = tokens_from_cli(cli)?;
    check_exposure(transport, listen, &tokens, cli.allow_unauthenticated)?;
    let grace = cli.shutdown_grace;
    if grace > MAX_SHUTDOWN_GRACE_SECS {
        let reason = format!("must be at most {MAX_SHUTDOWN_GRACE_SECS} seconds");
        return Err(invalid("SHUTDOWN_GRACE", grace, &reason));
    }
    Ok(ServiceSettings {
        transport,
        listen,
        tokens,
        allowed_origins: allowed_origins(&cli.allowed_origins)?,
        allow_unauthenticated: cli.allow_unauthenticated,
        shutdown_grace: Duration::from_secs(grace),
        max_http_clients: max_http_clients(cli.max_http_clients)?,
    })
}

fn transport(s: &str) -> Result<Transport, ConfigError> {
    match s.trim().to_ascii_lowercase().as_str() {
        "stdio" => Ok(Transport::Stdio),
        "http" => Ok(Transport::Http),
        _ => Err(invalid("MCP_TRANSPORT", s, "use stdio or http")),
    }
}

/// `IP:PORT` (IPv6 in brackets), or `localhost:PORT` (= 127.0.0.1).
fn listen_addr(s: &str) -> Result<SocketAddr, ConfigError> {
    let s = s.trim();
    if let Some(port) = s.strip_prefix("localhost:") {
        if let Ok(port) = port.parse::<u16>() {
            return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
        }
    }
    s.parse().map_err(|_| {
        invalid(
            "LISTEN",
            s,
            "use IP:PORT, such as 127.0.0.1:8080, [::1]:8080 or 0.0.0.0:8080 (port 0: any free port)",
        )
    })
}

fn max_http_clients(n: usize) -> Result<usize, ConfigError> {
    if n > MAX_MAX_HTTP_CLIENTS {
        let reason = format!("must be between 1 and {MAX_MAX_HTTP_CLIENTS}");
        return Err(invalid("MAX_HTTP_CLIENTS", n, &reason));
    }
    positive("MAX_HTTP_CLIENTS", n)
}

/// Refuses HTTP on a non-loopback address without tokens, unless allowed explicitly.
fn check_exposure(
    transport: Transport,
    listen: SocketAddr,
    tokens: &Tokens,
    allow_unauthenticated: bool,
) -> Result<(), ConfigError> {
    if transport == Transport::Http
        && tokens.is_empty()
        && !listen.ip().is_loopback()
        && !allow_unauthenticated
    {
        return Err(invalid(
            "LISTEN",
            listen,
            "refusing to serve a non-loopback address without authentication: anyone who \
             reaches it could run code; set AUTH_TOKEN or AUTH_TOKENS_FILE, listen on \
             127.0.0.1, or pass --allow-unauthenticated (ALLOW_UNAUTHENTICATED=true)",
        ));
    }
    Ok(())
}

/// `AUTH_TOKEN` (principal `default`) or `AUTH_TOKENS_FILE`, never both.
fn tokens_from_cli(cli: &Cli) -> Result<Tokens, ConfigError> {
    match (&cli.auth_token, &cli.auth_tokens_file) {
        (Some(_), Some(_)) => Err(invalid(
            "AUTH_TOKEN",
            "<hidden>",
            "give AUTH_TOKEN or AUTH_TOKENS_FILE, not both",
        )),
        (Some(token), None) => {
            check_token("AUTH_TOKEN", token, "<hidden>")?;
            let mut tokens = Tokens::default();
            let entry = TokenEntry {
                principal: Principal::default_principal(),
                digest: token_digest(token),
            };
            tokens.push("AUTH_TOKEN", entry, "<hidden>")?;
            Ok(tokens)
        }
        (None, Some(path)) => read_tokens_file(path),
        (None, None) => Ok(Tokens::default()),
    }
}

fn read_tokens_file(path: &Path) -> Result<Tokens, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        invalid(
            "AUTH_TOKENS_FILE",
            path.display(),
            &format!("cannot read it: {e}"),
        )
    })?;
    let tokens = parse_tokens_file(&text, &path.display().to_string())?;
    if tokens.is_empty() {
        return Err(invalid(
            "AUTH_TOKENS_FILE",
            path.display(),
            "names no principal",
        ));
    }
    Ok(tokens)
}

/// Parses `principal token` lines (`#` comments and blank lines skipped); a token written
/// `sha256:<64 hex>` is its digest. Errors name the line, never its token.
pub fn parse_tokens_file(text: &str, name: &str) -> Result<Tokens, ConfigError> {
    const SETTING: &str = "AUTH_TOKENS_FILE";
    let mut tokens = Tokens::default();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = format!("{name}, line {}", i + 1);
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [principal, token] = fields[..] else {
            return Err(invalid(
                SETTING,
                &at,
                "expected two fields: principal token",
            ));
        };
        let principal = Principal::new(SETTING, principal)?;
        let digest = match token.strip_prefix(SHA256_PREFIX) {
            Some(hex_digest) => parse_digest(hex_digest).ok_or_else(|| {
                invalid(
                    SETTING,
                    &at,
                    "sha256: must be followed by 64 hexadecimal digits",
                )
            })?,
            None => {
                check_token(SETTING, token, &at)?;
                token_digest(token)
            }
        };
        tokens.push(SETTING, TokenEntry { principal, digest }, &at)?;
    }
    Ok(tokens)
}

fn parse_digest(hex_digest: &str) -> Option<[u8; 32]> {
    let mut digest = [0u8; 32];
    hex::decode_to_slice(hex_digest, &mut digest).ok()?;
    Some(digest)
}

/// A token is non-empty visible ASCII (what an `Authorization` header carries unchanged).
fn check_token(setting: &'static str, token: &str, at: &str) -> Result<(), ConfigError> {
    if token.is_empty() {
        return Err(invalid(setting, at, "the token is empty"));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            setting,
            at,
            "a token is visible ASCII characters only (no spaces or control characters)",
        ));
    }
    Ok(())
}

/// The comma-separated `ALLOWED_ORIGINS`, each normalized.
fn allowed_origins(s: &str) -> Result<Vec<String>, ConfigError> {
    s.split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(|o| {
            normalize_origin(o).ok_or_else(|| {
                invalid(
                    "ALLOWED_ORIGINS",
                    o,
                    "an origin is http:// or https:// and a host, with an optional :port and no \
                     path, such as https://app.example.com",
                )
            })
        })
        .collect()
}

/// An origin as `scheme://host[:port]`, lowercase, without the scheme's default port; `None`
/// when it is not an http(s) origin. Used for both settings and request headers.
pub fn normalize_origin(origin: &str) -> Option<String> {
    let origin = origin.trim().trim_end_matches('/');
    let (scheme, rest) = origin.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority: axum::http::uri::Authority = rest.parse().ok()?;
    if rest.contains(['/', '?', '#', '@']) || authority.host().is_empty() {
        return None;
    }
    let host = authority.host().to_ascii_lowercase();
    Some(match authority.port_u16() {
        Some(port) if port != default_port => format!("{scheme}://{host}:{port}"),
        _ => format!("{scheme}://{host}"),
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut full = vec!["mcp-code-executor"];
        full.extend_from_slice(args);
        Cli::try_parse_from(full).unwrap()
    }

    fn settings(args: &[&str]) -> Result<ServiceSettings, String> {
        service_from_cli(&cli(args)).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_stdio_on_loopback() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.transport, Transport::Stdio);
        assert_eq!(s.listen, "127.0.0.1:8080".parse().unwrap());
        assert!(s.tokens.is_empty());
        assert!(s.allowed_origins.is_empty());
        assert_eq!(s.shutdown_grace, Duration::from_secs(10));
        assert_eq!(s.max_http_clients, 64);
    }

    #[test]
    fn transport_and_listen_parse() {
        let s = settings(&["--transport", "HTTP", "--listen", "127.0.0.1:0"]).unwrap();
        assert_eq!((s.transport, s.listen.port()), (Transport::Http, 0));
        assert_eq!(
            listen_addr("localhost:9").unwrap(),
            "127.0.0.1:9".parse().unwrap()
        );
        assert_eq!(
            listen_addr("[::1]:80").unwrap(),
            "[::1]:80".parse().unwrap()
        );
        assert!(
            settings(&["--transport", "sse"])
                .unwrap_err()
                .contains("MCP_TRANSPORT")
        );
        for bad in ["8080", "example.com:80", "127.0.0.1", "127.0.0.1:99999", ""] {
            let err = listen_addr(bad).unwrap_err().to_string();
            assert!(err.contains("LISTEN"), "{bad}: {err}");
        }
    }

    #[test]
    fn non_loopback_without_tokens_is_refused_unless_allowed() {
        let err = settings(&["--transport", "http", "--listen", "0.0.0.0:8080"]).unwrap_err();
        assert!(
            err.contains("refusing to serve a non-loopback address"),
            "{err}"
        );
        assert!(err.contains("--allow-unauthenticated"), "{err}");
        let s = settings(&[
            "--transport",
            "http",
            "--listen",
            "0.0.0.0:8080",
            "--allow-unauthenticated",
        ]);
        assert!(s.unwrap().allow_unauthenticated);
        let s = settings(&[
            "--transport",
            "http",
            "--listen",
            "0.0.0.0:8080",
            "--auth-token",
            "t0k",
        ]);
        assert_eq!(s.unwrap().tokens.entries()[0].principal.as_str(), "default");
        // stdio never listens: the address does not matter.
        assert!(settings(&["--listen", "0.0.0.0:8080"]).is_ok());
        assert!(settings(&["--transport", "http", "--listen", "[::1]:0"]).is_ok());
    }

    #[test]
    fn one_token_is_principal_default_and_never_shown() {
        let s = settings(&["--auth-token", "s3cret-token"]).unwrap();
        let entry = &s.tokens.entries()[0];
        assert_eq!(entry.digest, token_digest("s3cret-token"));
        assert!(!format!("{s:?}").contains("s3cret"));
        assert!(
            settings(&["--auth-token", ""])
                .unwrap_err()
                .contains("empty")
        );
        for bad in ["with space", "tab\there"] {
            let err = settings(&["--auth-token", bad]).unwrap_err();
            assert!(err.contains("visible ASCII") && !err.contains(bad), "{err}");
        }
        let err = settings(&["--auth-token", "a", "--auth-tokens-file", "/x"]).unwrap_err();
        assert!(err.contains("not both"), "{err}");
    }

    #[test]
    fn tokens_file_lines() {
        let hashed = hex::encode(token_digest("ci-token"));
        let text = format!(
            "# team tokens\n\n  alice   alice-token  \nci sha256:{hashed}\nbob\tbob-token # x\n"
        );
        let err = parse_tokens_file(&text, "f").unwrap_err().to_string();
        assert!(
            err.contains("line 5") && err.contains("two fields"),
            "{err}"
        );
        let text = text.replace(" # x", "");
        let tokens = parse_tokens_file(&text, "f").unwrap();
        let names: Vec<&str> = tokens
            .entries()
            .iter()
            .map(|e| e.principal.as_str())
            .collect();
        assert_eq!(names, ["alice", "ci", "bob"]);
        assert_eq!(tokens.entries()[1].digest, token_digest("ci-token"));
        assert_eq!(tokens.entries()[2].digest, token_digest("bob-token"));
    }

    #[test]
    fn tokens_file_errors_name_the_line_not_the_token() {
        let err = |text: &str| parse_tokens_file(text, "f").unwrap_err().to_string();
        let e = err("a t1\na t2\n");
        assert!(
            e.contains("line 2") && e.contains("principal a is given twice"),
            "{e}"
        );
        let e = err("a same\nb same\n");
        assert!(
            e.contains("line 2") && e.contains("two principals") && !e.contains("same\""),
            "{e}"
        );
        let hashed = hex::encode(token_digest("same"));
        let e = err(&format!("a same\nb sha256:{hashed}\n"));
        assert!(e.contains("two principals"), "{e}");
        let e = err("a sha256:abc\n");
        assert!(e.contains("64 hexadecimal digits"), "{e}");
        let e = err("../x secret\n");
        assert!(e.contains("principal") && !e.contains("secret"), "{e}");
        let e = err("only-one-field-secret\n");
        assert!(
            e.contains("line 1") && !e.contains("only-one-field-secret"),
            "{e}"
        );
        let e = err("a b c\n");
        assert!(e.contains("two fields"), "{e}");
    }

    #[test]
    fn tokens_file_is_read_and_must_name_someone() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("tokens");
        std::fs::write(&path, "# nobody\n").unwrap();
        let p = path.to_str().unwrap();
        assert!(
            settings(&["--auth-tokens-file", p])
                .unwrap_err()
                .contains("names no principal")
        );
        std::fs::write(&path, "ci tok\n").unwrap();
        let s = settings(&["--auth-tokens-file", p]).unwrap();
        assert_eq!(s.tokens.entries()[0].principal.as_str(), "ci");
        let missing = tmp.path().join("missing");
        let err = settings(&["--auth-tokens-file", missing.to_str().unwrap()]).unwrap_err();
        assert!(err.contains("cannot read it"), "{err}");
    }

    #[test]
    fn origins_are_normalized() {
        let s = settings(&[
            "--allowed-origins",
            " https://App.example.com:443/ ,http://x:8080,,",
        ]);
        assert_eq!(
            s.unwrap().allowed_origins,
            ["https://app.example.com", "http://x:8080"]
        );
        assert_eq!(
            normalize_origin("http://[::1]:3000").as_deref(),
            Some("http://[::1]:3000")
        );
        assert_eq!(
            normalize_origin("HTTP://LOCALHOST:80").as_deref(),
            Some("http://localhost")
        );
        for bad in [
            "null",
            "example.com",
            "ftp://x",
            "https://x/path",
            "https://u@x",
            "https://",
        ] {
            assert_eq!(normalize_origin(bad), None, "{bad}");
        }
        let err = settings(&["--allowed-origins", "example.com"]).unwrap_err();
        assert!(err.contains("ALLOWED_ORIGINS"), "{err}");
    }

    #[test]
    fn limits_are_checked() {
        assert!(
            settings(&["--max-http-clients", "0"])
                .unwrap_err()
                .contains("MAX_HTTP_CLIENTS")
        );
        assert!(
            settings(&["--max-http-clients", "5000"])
                .unwrap_err()
                .contains("between 1 and")
        );
        assert_eq!(
            settings(&["--shutdown-grace", "0"]).unwrap().shutdown_grace,
            Duration::ZERO
        );
        assert!(
            settings(&["--shutdown-grace", "4000"])
                .unwrap_err()
                .contains("SHUTDOWN_GRACE")
        );
    }
}
