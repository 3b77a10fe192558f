//! Who may call. The Origin check refuses browser pages of other sites (DNS rebinding,
//! cross-site requests) with 403; bearer tokens are checked in constant time (SHA-256 digests
//! compared with `subtle`), a missing or wrong one gets 401 with the RFC 9728 pointer. A request
//! that passes carries its [`Principal`] in its extensions, which rmcp hands to the tool
//! handlers (`http::request::Parts` in the request context). Tokens are never logged.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, HOST, ORIGIN, WWW_AUTHENTICATE};
use axum::http::uri::Authority;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::reply;
use crate::config::{Tokens, normalize_origin, token_digest};
use crate::metrics::request_rejected;
use crate::principal::Principal;

/// Where the RFC 9728 metadata lives, below the server's base URL.
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// The access rules of this server.
#[derive(Debug)]
pub struct Access {
    tokens: Tokens,
    allowed_origins: Vec<String>,
    /// `http://<bound address>`, for a request without a usable `Host`.
    fallback_base: String,
}

/// Why a request has no principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    Missing,
    Invalid,
}

impl Access {
    pub fn new(tokens: Tokens, allowed_origins: Vec<String>, addr: SocketAddr) -> Self {
        Access {
            tokens,
            allowed_origins,
            fallback_base: format!("http://{addr}"),
        }
    }

    /// The principal a request acts as: the owner of its bearer token, or `default` when the
    /// server has no tokens.
    pub fn principal_of(&self, headers: &HeaderMap) -> Result<Principal, Denied> {
        if self.tokens.is_empty() {
            return Ok(Principal::default_principal());
        }
        let token = bearer_token(headers).ok_or(Denied::Missing)?;
        lookup(&self.tokens, token).ok_or(Denied::Invalid)
    }

    /// The base URL clients reach this server at: from `Host` when it is a valid authority.
    pub fn base_url(&self, headers: &HeaderMap) -> String {
        headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse::<Authority>().ok())
            .map_or_else(|| self.fallback_base.clone(), |a| format!("http://{a}"))
    }

    /// Whether a request with this `Origin` header value may be served.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        normalize_origin(origin)
            .is_some_and(|o| is_loopback_origin(&o) || self.allowed_origins.contains(&o))
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The principal whose token is `presented`. Every entry is compared, in constant time, and
/// the match is selected without a branch, so timing tells nothing of the tokens.
pub fn lookup(tokens: &Tokens, presented: &str) -> Option<Principal> {
    let digest = token_digest(presented);
    let mut found = u32::MAX;
    for (i, entry) in tokens.entries().iter().enumerate() {
        let index = u32::try_from(i).unwrap_or(u32::MAX);
        found.conditional_assign(&index, entry.digest.ct_eq(&digest));
    }
    let index = usize::try_from(found).ok()?;
    tokens.entries().get(index).map(|e| e.principal.clone())
}

/// `http(s)://localhost`, a loopback IP, any port: pages served from this machine.
fn is_loopback_origin(normalized: &str) -> bool {
    let Some((_, rest)) = normalized.split_once("://") else {
        return false;
    };
    let Ok(authority) = rest.parse::<Authority>() else {
        return false;
    };
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Middleware: 403 for a request whose `Origin` is present and not allowed.
pub async fn check_origin(State(access): State<Arc<Access>>, req: Request, next: Next) -> Response {
    if let Some(origin) = req.headers().get(ORIGIN) {
        let origin = origin.to_str().unwrap_or("(not text)");
        if !access.origin_allowed(origin) {
            request_rejected("forbidden_origin");
            tracing::info!(origin, "refused a request from a foreign Origin");
            return reply::error(
                StatusCode::FORBIDDEN,
                "forbidden_origin",
                format!(
                    "requests from the origin {origin:?} are refused (only loopback pages and \
                     ALLOWED_ORIGINS may call this server); add it to ALLOWED_ORIGINS to allow it"
                ),
            );
        }
    }
    next.run(req).await
}

/// Middleware: 401 without a valid bearer token; otherwise the principal into the extensions.
pub async fn authenticate(
    State(access): State<Arc<Access>>,
    mut req: Request,
    next: Next,
) -> Response {
    match access.principal_of(req.headers()) {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(denied) => unauthorized(&access, req.headers(), denied),
    }
}

/// 401 with `WWW-Authenticate: Bearer resource_metadata="…"` (RFC 6750, RFC 9728).
fn unauthorized(access: &Access, headers: &HeaderMap, denied: Denied) -> Response {
    request_rejected("unauthorized");
    let base = access.base_url(headers);
    let mut challenge = format!("Bearer resource_metadata=\"{base}{METADATA_PATH}\"");
    let message = match denied {
        Denied::Missing => "this server needs a bearer token: send Authorization: Bearer <token>",
        Denied::Invalid => {
            challenge.push_str(", error=\"invalid_token\"");
            "the bearer token is not valid for this server"
        }
    };
    let mut response = reply::error(StatusCode::UNAUTHORIZED, "unauthorized", message);
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(WWW_AUTHENTICATE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_tokens_file;

    fn tokens() -> Tokens {
        let hashed = hex::encode(token_digest("ci-secret"));
        parse_tokens_file(&format!("alice a-secret\nci sha256:{hashed}\n"), "t").unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn tokens_name_their_principal() {
        let t = tokens();
        assert_eq!(lookup(&t, "a-secret").unwrap().as_str(), "alice");
        assert_eq!(lookup(&t, "ci-secret").unwrap().as_str(), "ci");
        for wrong in ["", "a-secre", "a-secret ", "A-SECRET", "sha256:x"] {
            assert_eq!(lookup(&t, wrong), None, "{wrong:?}");
        }
        // The hashed form itself is not a token.
        let hashed = format!("sha256:{}", hex::encode(token_digest("ci-secret")));
        assert_eq!(lookup(&t, &hashed), None);
    }

    #[test]
    fn bearer_header_forms() {
        let access = Access::new(tokens(), vec![], "127.0.0.1:1".parse().unwrap());
        let p = |v: &str| access.principal_of(&headers(&[("authorization", v)]));
        assert_eq!(p("Bearer a-secret").unwrap().as_str(), "alice");
        assert_eq!(p("bearer  a-secret ").unwrap().as_str(), "alice");
        assert_eq!(p("Bearer wrong"), Err(Denied::Invalid));
        assert_eq!(p("Basic a-secret"), Err(Denied::Missing));
        assert_eq!(p("Bearer"), Err(Denied::Missing));
        assert_eq!(access.principal_of(&HeaderMap::new()), Err(Denied::Missing));
        let open = Access::new(Tokens::default(), vec![], "127.0.0.1:1".parse().unwrap());
        assert_eq!(
            open.principal_of(&HeaderMap::new()).unwrap().as_str(),
            "default"
        );
    }

    #[test]
    fn origins_loopback_and_listed() {
        let listed = vec!["https://app.example.com".to_string()];
        let access = Access::new(Tokens::default(), listed, "127.0.0.1:1".parse().unwrap());
        for ok in [
            "http://localhost:3000",
            "http://127.0.0.1:8080",
            "http://[::1]:9",
            "https://localhost",
            "https://APP.example.com:443",
            "https://app.example.com/",
        ] {
            assert!(access.origin_allowed(ok), "{ok}");
        }
        for refused in [
            "http://evil.example",
            "https://evil.example:443",
            "null",
            "http://app.example.com",
            "https://app.example.com:8443",
            "http://localhost.evil.example",
            "file://",
            "",
        ] {
            assert!(!access.origin_allowed(refused), "{refused}");
        }
    }

    #[test]
    fn base_url_from_host_or_bound_address() {
        let access = Access::new(Tokens::default(), vec![], "127.0.0.1:8080".parse().unwrap());
        assert_eq!(
            access.base_url(&headers(&[("host", "mce.example:9000")])),
            "http://mce.example:9000"
        );
        assert_eq!(
            access.base_url(&headers(&[("host", "a\"b")])),
            "http://127.0.0.1:8080"
        );
        assert_eq!(access.base_url(&HeaderMap::new()), "http://127.0.0.1:8080");
    }
}
