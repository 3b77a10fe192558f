//! The data-file part of the tool contract: `list_files`, `read_file` and `write_file`, for
//! clients that do not read MCP resources. Every file is also the resource
//! `storage:///<name>` (see `server::resources`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Status;

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListFilesArgs {
    /// The folder to list: the storage directory (its path as this server returned it, or
    /// "."); default: the storage directory. Subfolders are not listed.
    #[serde(default)]
    pub path: Option<String>,
    /// Only names matching this pattern (`*` any characters, `?` one), e.g. "*.csv".
    #[serde(default)]
    pub pattern: Option<String>,
    /// Where to go on: the `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// How a file's content travels in `read_file` and `write_file`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Text (UTF-8).
    #[default]
    Utf8,
    /// Bytes, base64-encoded.
    Base64,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ReadFileArgs {
    /// The file: its bare name or the path this server returned.
    pub path: String,
    /// First byte to read (default 0).
    #[serde(default)]
    pub offset: Option<u64>,
    /// Bytes to read at most (default and maximum: the server's MAX_RESOURCE_READ).
    #[serde(default)]
    pub length: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct WriteFileArgs {
    /// The file to write (created or replaced): a bare name such as "data.csv".
    pub path: String,
    /// The content: text, or base64 with encoding "base64".
    pub content: String,
    /// utf8 (default) or base64.
    #[serde(default)]
    pub encoding: Option<Encoding>,
}

/// One file in `list_files`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct FileEntry {
    pub name: String,
    /// Its path, as the other tools take it.
    pub path: String,
    /// Its resource URI (resources/read).
    pub uri: String,
    pub size: u64,
    /// Last modification (unix seconds).
    pub modified_unix: u64,
}

/// Result of `list_files`.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct ListFilesResult {
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Newest first.
    pub files: Vec<FileEntry>,
    /// Files matching in all.
    pub total: usize,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Result of `read_file` and `write_file`.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct DataFileResult {
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// The whole file's size, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// read_file: where the slice starts and how long it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    /// read_file: whether the slice reaches the end of the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eof: Option<bool>,
    /// read_file: utf8 when the slice is text, else base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// The file's media type (by its extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
}
