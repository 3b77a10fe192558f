//! `/files/{name}` over HTTP with the real binary: a 50 MB upload and download stream through
//! the server (its peak RSS stays under 64 MiB), content type, ETag and Last-Modified come
//! back, an upload over MAX_FILE_SIZE gets 413 and leaves nothing, the traversal set is
//! refused, a missing token gets 401, and each principal sees only its own folder.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking
mod common;
#[path = "common/http.rs"]
mod http_common;

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, ETAG, IF_NONE_MATCH, LAST_MODIFIED};
use sha2::{Digest, Sha256};

use http_common::{Auth, HttpOpts, HttpServer, http, new_token};

/// The peak resident memory of process `pid`, in KiB (VmHWM).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn bearer(s: &HttpServer, principal: &str) -> String {
    format!("Bearer {}", s.token(principal))
}

#[tokio::test]
async fn fifty_megabytes_up_and_down_with_a_small_server() {
    let s = HttpServer::start_with(HttpOpts::default().env("POOL_SIZE", "0"))
        .await
        .unwrap();
    let client = http();
    let data: Vec<u8> = (0..50u32 * 1024 * 1024)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let sent = Sha256::digest(&data);
    let put = client
        .put(s.url("/files/big.bin"))
        .header(AUTHORIZATION, bearer(&s, "default"))
        .body(data)
        .send()
        .await
        .unwrap();
    assert_eq!(
        put.status(),
        StatusCode::CREATED,
        "{}",
        put.text().await.unwrap()
    );
    let on_disk = s.storage_of("default").join("big.bin");
    assert_eq!(std::fs::metadata(&on_disk).unwrap().len(), 50 * 1024 * 1024);
    let mut got = client
        .get(s.url("/files/big.bin"))
        .header(AUTHORIZATION, bearer(&s, "default"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.headers()[CONTENT_TYPE], "application/octet-stream");
    assert!(got.headers().contains_key(LAST_MODIFIED));
    let etag = got.headers()[ETAG].to_str().unwrap().to_string();
    let mut hasher = Sha256::new();
    let mut received = 0usize;
    while let Some(chunk) = got.chunk().await.unwrap() {
        received += chunk.len();
        hasher.update(&chunk);
    }
    assert_eq!(received, 50 * 1024 * 1024);
    assert_eq!(hasher.finalize(), sent);
    let peak = peak_rss_kib(s.proc.pid);
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");
    let again = client
        .get(s.url("/files/big.bin"))
        .header(AUTHORIZATION, bearer(&s, "default"))
        .header(IF_NONE_MATCH, etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    let (status, left, _) = s.terminate().await.unwrap();
    assert!(status.success());
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn too_large_traversal_and_tokens_are_refused_and_principals_stay_apart() {
    let (alice, bob) = (new_token(), new_token());
    let a = http_common::unique_principal("alice");
    let b = http_common::unique_principal("bob");
    let opts = HttpOpts::default()
        .env("MAX_FILE_SIZE", "1m")
        .env("POOL_SIZE", "0")
        .auth(Auth::File(vec![
            (a.clone(), alice, false),
            (b.clone(), bob, false),
        ]));
    let s = HttpServer::start_with(opts).await.unwrap();
    let client = http();
    let put = |name: &str, who: &str, body: Vec<u8>| {
        client
            .put(s.url(&format!("/files/{name}")))
            .header(AUTHORIZATION, bearer(&s, who))
            .body(body)
            .send()
    };
    let r = put("huge.bin", &a, vec![7u8; 2 * 1024 * 1024])
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    std::fs::create_dir_all(s.storage_of(&a)).unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(s.storage_of(&a))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(leftovers.is_empty(), "nothing half-stored: {leftovers:?}");
    let r = put("notes.txt", &a, b"alice's".to_vec()).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    for bad in ["..%2Fescape.txt", "%2Fetc%2Fpasswd", ".hidden", "a%00b"] {
        let r = put(bad, &a, b"x".to_vec()).await.unwrap();
        assert!(r.status().is_client_error(), "PUT {bad}: {}", r.status());
        let r = client
            .get(s.url(&format!("/files/{bad}")))
            .header(AUTHORIZATION, bearer(&s, &a))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "GET {bad}: {}", r.status());
    }
    assert!(!s.proc.storage.join("escape.txt").exists());
    let theirs = client
        .get(s.url("/files/notes.txt"))
        .header(AUTHORIZATION, bearer(&s, &b))
        .send()
        .await
        .unwrap();
    assert_eq!(
        theirs.status(),
        StatusCode::NOT_FOUND,
        "bob cannot read alice's file"
    );
    let anonymous = client.get(s.url("/files/notes.txt")).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let mine = client
        .get(s.url("/files/notes.txt"))
        .header(AUTHORIZATION, bearer(&s, &a))
        .send()
        .await
        .unwrap();
    assert_eq!(mine.status(), StatusCode::OK);
    assert_eq!(mine.headers()[CONTENT_TYPE], "text/plain");
    assert_eq!(mine.text().await.unwrap(), "alice's");
    let (status, left, _) = s.terminate().await.unwrap();
    assert!(status.success());
    assert!(left.is_empty(), "{left:?}");
}
