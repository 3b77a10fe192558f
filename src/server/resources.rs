//! The storage folder as MCP resources: `resources/list` (newest first, paginated), the
//! template `storage:///{path}`, and `resources/read` (text for text files, a base64 blob
//! otherwise, up to MAX_RESOURCE_READ). A file's URI is `storage:///` and its name,
//! percent-encoded; it is resolved by the same rules as the file tools' paths, so a URI that
//! leaves the folder, names a link, a subfolder or a hidden file is refused as they are.
//! `resource_link` items in run results use the same URIs.

use base64::Engine;
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use rmcp::ErrorData;
use rmcp::model::{
    ListResourceTemplatesResult, ListResourcesResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResult, Resource, ResourceContents, ResourceTemplate,
};

use super::State;
use crate::datafiles::{self, Entry, PAGE_SIZE};

/// The scheme and authority of file URIs.
pub const URI_PREFIX: &str = "storage:///";

/// Characters escaped in a URI's path (a file name has no '/').
const ESCAPED: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'/')
    .add(b'\\');

/// The URI of stored file `name`.
pub fn uri_of(name: &str) -> String {
    format!("{URI_PREFIX}{}", utf8_percent_encode(name, ESCAPED))
}

/// A `resource_link` (or listing entry) for file `name` of `size` bytes.
pub fn link(name: &str, size: u64) -> Resource {
    Resource::new(uri_of(name), name)
        .with_mime_type(datafiles::mime_of(name))
        .with_size(size)
}

/// `resources/list`: the files, newest first, [`PAGE_SIZE`] a page.
pub fn list(
    state: &State,
    request: Option<PaginatedRequestParams>,
) -> Result<ListResourcesResult, ErrorData> {
    let start = match request.and_then(|r| r.cursor) {
        None => 0,
        Some(c) => c
            .parse()
            .map_err(|_| ErrorData::invalid_params(format!("bad cursor {c:?}"), None))?,
    };
    let page = datafiles::list(&state.storage, None, start, PAGE_SIZE);
    let resources = page
        .entries
        .iter()
        .map(|Entry { name, size, .. }| link(name, *size))
        .collect();
    let mut result = ListResourcesResult::with_all_items(resources);
    result.next_cursor = page.next.map(|n| n.to_string());
    Ok(result)
}

/// `resources/templates/list`: any stored file by name.
pub fn templates() -> ListResourceTemplatesResult {
    let template = ResourceTemplate::new(format!("{URI_PREFIX}{{path}}"), "stored file")
        .with_description("A file in the storage folder (code, or a file a run wrote), by name");
    ListResourceTemplatesResult::with_all_items(vec![template])
}

/// `resources/read`: one stored file, whole (at most MAX_RESOURCE_READ).
pub fn read(
    state: &State,
    request: ReadResourceRequestParams,
) -> Result<ReadResourceResult, ErrorData> {
    let uri = request.uri;
    let name = name_of(state, &uri)?;
    let limit = state.config.max_resource_read;
    let bytes = datafiles::read_whole(&state.storage, &name, limit)
        .map_err(|e| ErrorData::invalid_params(e.to_string(), None))?;
    let mime = datafiles::mime_of(&name);
    let contents = if datafiles::is_text(&mime, &bytes) {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        ResourceContents::text(text, uri.clone()).with_mime_type(mime)
    } else {
        let blob = base64::engine::general_purpose::STANDARD.encode(&bytes);
        ResourceContents::blob(blob, uri.clone()).with_mime_type(mime)
    };
    Ok(ReadResourceResult::new(vec![contents]))
}

/// The stored file a URI names, by the file tools' rules.
fn name_of(state: &State, uri: &str) -> Result<String, ErrorData> {
    let bad = |why: String| ErrorData::invalid_params(why, None);
    let encoded = uri.strip_prefix(URI_PREFIX).ok_or_else(|| {
        bad(format!(
            "{uri:?} is not a {URI_PREFIX}<name> URI of this server"
        ))
    })?;
    let name = percent_decode_str(encoded)
        .decode_utf8()
        .map_err(|_| bad(format!("{uri:?} does not decode to UTF-8")))?;
    let name = datafiles::visible_name(&state.storage, &name).map_err(|e| bad(e.to_string()))?;
    Ok(name)
}
