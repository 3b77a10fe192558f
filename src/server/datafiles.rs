//! The data-file tools, for clients that do not read resources: `list_files` (newest first,
//! paginated, with a pattern), `read_file` (a text or base64 slice) and `write_file` (a whole
//! file, atomically, up to MAX_FILE_SIZE) — data in and out of the storage folder without
//! running code. Paths follow the file tools' rules (see `storage`).

use base64::Engine;
use rmcp::ErrorData;
use rmcp::model::CallToolResult;

use super::State;
use super::contract::{
    DataFileResult, Encoding, FileEntry, ListFilesArgs, ListFilesResult, ReadFileArgs, Status,
    WriteFileArgs,
};
use super::reply::{fail, respond};
use super::resources::uri_of;
use crate::datafiles::{self, PAGE_SIZE};
use crate::error::StorageError;

/// `list_files`: one page of the storage folder's files.
pub fn list(state: &State, args: ListFilesArgs) -> Result<CallToolResult, ErrorData> {
    let storage = &state.storage;
    let root = storage.root().to_string_lossy().into_owned();
    if let Some(path) = args
        .path
        .as_deref()
        .filter(|p| !matches!(*p, "" | "." | "./"))
    {
        if path.trim_end_matches('/') != root {
            let e = StorageError::Outside {
                given: path.to_string(),
                root: storage.root().to_path_buf(),
            };
            return fail(ListFilesResult::default(), e);
        }
    }
    let start = match args.cursor.as_deref().map(str::parse::<usize>) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            let e = StorageError::InvalidName {
                given: args.cursor.unwrap_or_default(),
                reason: "not a cursor: pass the next_cursor of the previous page".to_string(),
            };
            return fail(ListFilesResult::default(), e);
        }
    };
    let page = datafiles::list(storage, args.pattern.as_deref(), start, PAGE_SIZE);
    let files = page
        .entries
        .into_iter()
        .map(|e| FileEntry {
            path: storage.path_of(&e.name).to_string_lossy().into_owned(),
            uri: uri_of(&e.name),
            name: e.name,
            size: e.size,
            modified_unix: e.modified_unix,
        })
        .collect();
    let result = ListFilesResult {
        status: Status::Success,
        error: None,
        files,
        total: page.total,
        next_cursor: page.next.map(|n| n.to_string()),
    };
    respond(&result, false)
}

/// `read_file`: a slice of a file, as text when it is UTF-8, else base64.
pub fn read(state: &State, args: ReadFileArgs) -> Result<CallToolResult, ErrorData> {
    let storage = &state.storage;
    let mut result = DataFileResult {
        path: Some(args.path.clone()),
        ..Default::default()
    };
    let limit = state.config.max_resource_read;
    let length = args.length.unwrap_or(limit).min(limit);
    let slice = datafiles::visible_name(storage, &args.path).and_then(|name| {
        datafiles::read_slice(storage, &name, args.offset.unwrap_or(0), length).map(|s| (name, s))
    });
    let (name, slice) = match slice {
        Ok(found) => found,
        Err(e) => return fail(result, e),
    };
    let mime = datafiles::mime_of(&name);
    let (encoding, content) = match String::from_utf8(slice.bytes) {
        Ok(text) => (Encoding::Utf8, text),
        Err(e) => (
            Encoding::Base64,
            base64::engine::general_purpose::STANDARD.encode(e.as_bytes()),
        ),
    };
    let read = match encoding {
        Encoding::Utf8 => content.len() as u64,
        Encoding::Base64 => base64_len_to_bytes(&content),
    };
    result.path = Some(storage.path_of(&name).to_string_lossy().into_owned());
    result.uri = Some(uri_of(&name));
    result.size = Some(slice.size);
    result.offset = Some(slice.offset);
    result.length = Some(read);
    result.eof = Some(slice.offset + read >= slice.size);
    result.encoding = Some(encoding);
    result.content = Some(content);
    result.mime_type = Some(mime);
    respond(&result, false)
}

/// `write_file`: a whole file, created or replaced atomically.
pub fn write(state: &State, args: WriteFileArgs) -> Result<CallToolResult, ErrorData> {
    let storage = &state.storage;
    let mut result = DataFileResult {
        path: Some(args.path.clone()),
        ..Default::default()
    };
    let bytes = match args.encoding.unwrap_or_default() {
        Encoding::Utf8 => args.content.into_bytes(),
        Encoding::Base64 => match base64::engine::general_purpose::STANDARD.decode(&args.content) {
            Ok(bytes) => bytes,
            Err(e) => {
                let e = StorageError::InvalidName {
                    given: args.path,
                    reason: format!("the content is not valid base64 ({e})"),
                };
                return fail(result, e);
            }
        },
    };
    let limit = state.config.limits.max_file_bytes as u64;
    let written = datafiles::visible_name(storage, &args.path)
        .and_then(|name| datafiles::write(storage, &name, &bytes, limit).map(|()| name));
    match written {
        Ok(name) => {
            result.path = Some(storage.path_of(&name).to_string_lossy().into_owned());
            result.uri = Some(uri_of(&name));
            result.size = Some(bytes.len() as u64);
            result.mime_type = Some(datafiles::mime_of(&name));
            respond(&result, false)
        }
        Err(e) => fail(result, e),
    }
}

/// Bytes a base64 text of this length decodes to.
fn base64_len_to_bytes(b64: &str) -> u64 {
    let pad = b64.bytes().rev().take_while(|b| *b == b'=').count() as u64;
    (b64.len() as u64 / 4) * 3 - pad
}
