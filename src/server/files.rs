//! The code-file tools (`initialize_code_file`, `append_to_code_file`, `read_code_file`): one
//! storage operation each, reported as a `FileResult`.

use rmcp::ErrorData;
use rmcp::model::CallToolResult;

use super::contract::{AppendToCodeFileArgs, FilePathArgs, FileResult, InitializeCodeFileArgs};
use super::reply::{fail, respond};
use crate::storage::Storage;

/// `initialize_code_file`: creates a new file with `args.content`.
pub fn initialize(
    storage: &Storage,
    args: InitializeCodeFileArgs,
) -> Result<CallToolResult, ErrorData> {
    match storage.create(args.filename.as_deref(), &args.content) {
        Ok(f) => respond(
            &FileResult {
                message: Some(format!("created {}", f.name)),
                file_path: Some(f.path.to_string_lossy().into_owned()),
                filename: Some(f.name),
                size: Some(args.content.len() as u64),
                ..Default::default()
            },
            false,
        ),
        Err(e) => fail(FileResult::default(), e),
    }
}

/// `append_to_code_file`: appends `args.content` to a stored file.
pub fn append(storage: &Storage, args: AppendToCodeFileArgs) -> Result<CallToolResult, ErrorData> {
    let appended = storage.resolve(&args.file_path).and_then(|name| {
        storage
            .append(&name, &args.content)
            .map(|size| (name, size))
    });
    match appended {
        Ok((name, size)) => respond(
            &FileResult {
                message: Some(format!("appended {} bytes to {name}", args.content.len())),
                file_path: Some(path_of(storage, &name)),
                size: Some(size),
                ..Default::default()
            },
            false,
        ),
        Err(e) => fail(FileResult::default(), e),
    }
}

/// `read_code_file`: returns a stored file's content.
pub fn read(storage: &Storage, args: FilePathArgs) -> Result<CallToolResult, ErrorData> {
    let read = storage
        .resolve(&args.file_path)
        .and_then(|name| storage.read(&name).map(|content| (name, content)));
    match read {
        Ok((name, content)) => respond(
            &FileResult {
                file_path: Some(path_of(storage, &name)),
                size: Some(content.len() as u64),
                content: Some(content),
                ..Default::default()
            },
            false,
        ),
        Err(e) => fail(FileResult::default(), e),
    }
}

/// The absolute path of the stored file `name`, as reported to clients.
fn path_of(storage: &Storage, name: &str) -> String {
    storage.path_of(name).to_string_lossy().into_owned()
}
