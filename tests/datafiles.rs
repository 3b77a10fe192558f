//! Files without tokens, with the real binary and real containers: a run's files come back as
//! `resource_link` items and are readable with `resources/read` (checked against the bytes on
//! disk) and listed by `resources/list`; `write_file` puts data where the next run reads it;
//! `read_file` reads slices; and every path-taking route (the three tools and resources/read)
//! refuses the traversal set — `..`, absolute paths elsewhere, subfolders, NUL, over-long
//! names, links leading out, hidden files — touching nothing outside the storage folder.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking
mod common;

use base64::Engine;
use rmcp::model::{ContentBlock, ReadResourceRequestParams, ResourceContents};
use serde_json::{Value, json};

use common::{Opts, Server};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

async fn read_resource(s: &Server, uri: &str) -> Result<ResourceContents, String> {
    s.client
        .read_resource(ReadResourceRequestParams::new(uri))
        .await
        .map(|r| r.contents.into_iter().next().unwrap())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_runs_files_come_back_as_links_and_read_as_resources() {
    let s = Server::start().await.unwrap();
    let code = "import numpy as np, matplotlib\nmatplotlib.use('Agg')\n\
                import matplotlib.pyplot as plt\n\
                open('table.csv','w').write('a,b\\n1,2\\n')\n\
                plt.plot(np.arange(10)); plt.savefig('line.png')\nprint('ok')";
    let result = s
        .client
        .call_tool(
            rmcp::model::CallToolRequestParams::new("execute_code")
                .with_arguments(json!({ "code": code }).as_object().unwrap().clone()),
        )
        .await
        .unwrap();
    let links: Vec<(String, String, Option<String>)> = result
        .content
        .iter()
        .filter_map(|c| match c {
            ContentBlock::ResourceLink(r) => {
                Some((r.name.clone(), r.uri.clone(), r.mime_type.clone()))
            }
            _ => None,
        })
        .collect();
    let names: Vec<&str> = links.iter().map(|(n, _, _)| n.as_str()).collect();
    assert!(
        names.contains(&"table.csv") && names.contains(&"line.png"),
        "{links:?}"
    );
    let csv = links.iter().find(|(n, _, _)| n == "table.csv").unwrap();
    assert_eq!(csv.1, "storage:///table.csv");
    assert_eq!(csv.2.as_deref(), Some("text/csv"));
    let structured = result.structured_content.unwrap();
    let files = structured["files"].as_array().unwrap();
    assert!(
        files.iter().any(|f| f["uri"] == "storage:///line.png"),
        "{structured}"
    );

    let on_disk = std::fs::read(s.storage.join("table.csv")).unwrap();
    match read_resource(&s, "storage:///table.csv").await.unwrap() {
        ResourceContents::TextResourceContents { text, .. } => {
            assert_eq!(text.as_bytes(), on_disk)
        }
        other => panic!("{other:?}"),
    }
    let png = std::fs::read(s.storage.join("line.png")).unwrap();
    match read_resource(&s, "storage:///line.png").await.unwrap() {
        ResourceContents::BlobResourceContents {
            blob, mime_type, ..
        } => {
            assert_eq!(B64.decode(blob).unwrap(), png);
            assert_eq!(mime_type.as_deref(), Some("image/png"));
        }
        other => panic!("{other:?}"),
    }
    let listed = s.client.list_resources(None).await.unwrap();
    let uris: Vec<&str> = listed.resources.iter().map(|r| r.uri.as_str()).collect();
    assert!(uris.contains(&"storage:///table.csv"), "{uris:?}");
    assert!(uris.contains(&"storage:///line.png"), "{uris:?}");
    let templates = s.client.list_resource_templates(None).await.unwrap();
    assert_eq!(
        templates.resource_templates[0].uri_template,
        "storage:///{path}"
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn write_file_feeds_the_next_run_and_read_file_reads_slices() {
    let s = Server::start().await.unwrap();
    let (w, is_error) = s
        .call(
            "write_file",
            json!({ "path": "input.txt", "content": "hello from the client\n" }),
        )
        .await
        .unwrap();
    assert!(!is_error, "{w}");
    assert_eq!(w["size"], 22);
    let (r, _) = s
        .run("print(open('input.txt').read().upper(), end='')")
        .await
        .unwrap();
    assert_eq!(r["stdout"], "HELLO FROM THE CLIENT\n");
    // Replacing is atomic and leaves no temporary file behind.
    let bytes: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let (w, is_error) = s
        .call(
            "write_file",
            json!({ "path": "blob.bin", "content": B64.encode(&bytes), "encoding": "base64" }),
        )
        .await
        .unwrap();
    assert!(!is_error, "{w}");
    assert_eq!(std::fs::read(s.storage.join("blob.bin")).unwrap(), bytes);
    let leftovers: Vec<_> = std::fs::read_dir(&s.storage)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let (slice, _) = s
        .call(
            "read_file",
            json!({ "path": "blob.bin", "offset": 1000, "length": 500 }),
        )
        .await
        .unwrap();
    assert_eq!(slice["encoding"], "base64", "{slice}");
    assert_eq!(
        B64.decode(slice["content"].as_str().unwrap()).unwrap(),
        &bytes[1000..1500]
    );
    assert_eq!(
        (slice["size"].clone(), slice["eof"].clone()),
        (json!(3000), json!(false))
    );
    let (text, _) = s
        .call("read_file", json!({ "path": "input.txt", "offset": 11 }))
        .await
        .unwrap();
    assert_eq!(text["content"], "the client\n");
    assert_eq!(text["eof"], true);
    let (listed, _) = s
        .call("list_files", json!({ "pattern": "*.bin" }))
        .await
        .unwrap();
    let files = listed["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{listed}");
    assert_eq!(files[0]["name"], "blob.bin");
    assert_eq!(files[0]["size"], 3000);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn every_route_refuses_the_traversal_set_and_touches_nothing_outside() {
    let s = Server::start_with(Opts::default().env("MAX_RESOURCE_READ", "1k"))
        .await
        .unwrap();
    let outside = s.storage.parent().unwrap().join("outside.txt");
    std::fs::write(&outside, "secret").unwrap();
    std::os::unix::fs::symlink(&outside, s.storage.join("link.txt")).unwrap();
    std::fs::create_dir(s.storage.join("sub")).unwrap();
    std::fs::write(s.storage.join("sub/inner.txt"), "x").unwrap();
    std::fs::write(s.storage.join("big.txt"), "y".repeat(2048)).unwrap();
    let long = "n".repeat(300);
    let bad = [
        "../outside.txt".to_string(),
        outside.to_string_lossy().into_owned(),
        "/etc/passwd".to_string(),
        "sub/inner.txt".to_string(),
        "nul\0.txt".to_string(),
        long,
        "link.txt".to_string(),
        ".mce-runs".to_string(),
    ];
    for path in &bad {
        let (r, is_error) = s.call("read_file", json!({ "path": path })).await.unwrap();
        assert!(is_error, "read_file {path:?}: {r}");
        assert!(!r.to_string().contains("secret"), "{r}");
        let (r, is_error) = s
            .call("write_file", json!({ "path": path, "content": "pwned" }))
            .await
            .unwrap();
        assert!(is_error, "write_file {path:?}: {r}");
        let uri = format!("storage:///{}", path.replace('%', "%25"));
        let read = read_resource(&s, &uri).await;
        assert!(read.is_err(), "resources/read {uri:?}: {read:?}");
    }
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "secret");
    assert!(!s.storage.parent().unwrap().join("pwned").exists());
    let (r, is_error) = s
        .call("list_files", json!({ "path": "../" }))
        .await
        .unwrap();
    assert!(is_error, "{r}");
    let err = read_resource(&s, "storage:///big.txt").await.unwrap_err();
    assert!(err.contains("2048"), "names the size: {err}");
    let err = read_resource(&s, "file:///etc/passwd").await.unwrap_err();
    assert!(err.contains("storage:///"), "{err}");
    let (listed, _) = s.call("list_files", json!({})).await.unwrap();
    let names: Vec<&Value> = listed["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| &f["name"])
        .collect();
    assert!(
        !names.contains(&&json!("link.txt")) && !names.contains(&&json!("sub")),
        "{names:?}"
    );
    std::fs::remove_file(&outside).unwrap();
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_large_figure_is_inlined_downscaled_and_the_full_file_is_kept_and_linked() {
    let s = Server::start_with(Opts::default().env("MAX_IMAGE_SIZE", "16m"))
        .await
        .unwrap();
    let code = "import numpy as np, matplotlib\nmatplotlib.use('Agg')\n\
                import matplotlib.pyplot as plt\n\
                rng = np.random.default_rng(1)\n\
                plt.imsave('noise.png', rng.random((1000, 1200, 3)))\nprint('saved')";
    let result = s
        .client
        .call_tool(
            rmcp::model::CallToolRequestParams::new("execute_code")
                .with_arguments(json!({ "code": code }).as_object().unwrap().clone()),
        )
        .await
        .unwrap();
    let full = std::fs::read(s.storage.join("noise.png")).unwrap();
    assert!(
        full.len() > 1024 * 1024,
        "the test figure is large: {}",
        full.len()
    );
    let inlined: Vec<&String> = result
        .content
        .iter()
        .filter_map(|c| match c {
            ContentBlock::Image(img) => Some(&img.data),
            _ => None,
        })
        .collect();
    assert_eq!(inlined.len(), 1);
    assert!(
        inlined[0].len() <= 256 * 1024,
        "under the cap: {}",
        inlined[0].len()
    );
    let small = B64.decode(inlined[0]).unwrap();
    assert!(small.starts_with(b"\x89PNG"));
    assert!(small.len() < full.len());
    let body = result.structured_content.unwrap();
    assert_eq!(body["images_downscaled"], json!(["noise.png"]), "{body}");
    assert!(result.content.iter().any(|c| matches!(c,
        ContentBlock::ResourceLink(r) if r.uri == "storage:///noise.png"
            && r.size == Some(full.len() as u64))));
    s.stop().await.unwrap();
}
