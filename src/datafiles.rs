//! Data files of the storage folder, for tools and resources that move files without running
//! code: listing (newest first, paginated, with a shell-style pattern), reading a slice, and
//! writing a whole file atomically. Names follow the storage folder's rules (`storage`): a bare
//! name or the path this server returned, never a subfolder, a link or a hidden file.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, fchown};
use std::time::UNIX_EPOCH;

use crate::error::StorageError;
use crate::storage::Storage;

/// Most entries one listing page holds.
pub const PAGE_SIZE: usize = 200;

/// One file in a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub name: String,
    pub size: u64,
    /// Last modification, unix seconds.
    pub modified_unix: u64,
}

/// One page of a listing, and where the next one starts (`None`: the last page).
#[derive(Debug)]
pub struct Page {
    pub entries: Vec<Entry>,
    pub next: Option<usize>,
    pub total: usize,
}

/// The visible regular files (newest first) matching `pattern` (`*`, `?`), from `start`.
pub fn list(storage: &Storage, pattern: Option<&str>, start: usize, page: usize) -> Page {
    let matcher = pattern.map(wildmatch::WildMatch::new);
    let mut entries: Vec<Entry> = storage
        .snapshot()
        .into_iter()
        .filter(|(name, _)| matcher.as_ref().is_none_or(|m| m.matches(name)))
        .map(|(name, stat)| Entry {
            name,
            size: stat.size,
            modified_unix: stat
                .modified
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs()),
        })
        .collect();
    entries.sort_by(|a, b| {
        b.modified_unix
            .cmp(&a.modified_unix)
            .then_with(|| a.name.cmp(&b.name))
    });
    let total = entries.len();
    let end = start.saturating_add(page).min(total);
    let next = (end < total).then_some(end);
    let entries = entries.into_iter().skip(start).take(page).collect();
    Page {
        entries,
        next,
        total,
    }
}

/// A slice of a file.
#[derive(Debug)]
pub struct Slice {
    pub bytes: Vec<u8>,
    /// The whole file's size.
    pub size: u64,
    pub offset: u64,
}

/// Up to `length` bytes of file `name` from `offset`.
pub fn read_slice(
    storage: &Storage,
    name: &str,
    offset: u64,
    length: u64,
) -> Result<Slice, StorageError> {
    let mut file = storage.open_regular(name, OpenOptions::new().read(true))?;
    let size = file
        .metadata()
        .map_err(|e| storage.io_err("cannot inspect", name, e))?
        .len();
    let offset = offset.min(size);
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| storage.io_err("cannot read", name, e))?;
    let mut bytes = Vec::new();
    file.take(length)
        .read_to_end(&mut bytes)
        .map_err(|e| storage.io_err("cannot read", name, e))?;
    Ok(Slice {
        bytes,
        size,
        offset,
    })
}

/// Whole file `name` when it is at most `limit` bytes.
pub fn read_whole(storage: &Storage, name: &str, limit: u64) -> Result<Vec<u8>, StorageError> {
    let slice = read_slice(storage, name, 0, limit + 1)?;
    if slice.size > limit {
        return Err(StorageError::TooLarge {
            name: name.to_string(),
            size: slice.size,
            limit,
            what: "reading at once (read it in slices with read_file)",
        });
    }
    Ok(slice.bytes)
}

/// Writes `bytes` as file `name` (≤ `limit`), replacing it atomically: a temporary file is
/// written, handed to the run user, then renamed over the name (a link there is replaced,
/// never followed). A write that fails leaves no partial file.
pub fn write(
    storage: &std::sync::Arc<Storage>,
    name: &str,
    bytes: &[u8],
    limit: u64,
) -> Result<(), StorageError> {
    let name = visible_name(storage, name)?;
    if bytes.len() as u64 > limit {
        return Err(StorageError::TooLarge {
            name,
            size: bytes.len() as u64,
            limit,
            what: "a file (setting MAX_FILE_SIZE)",
        });
    }
    let (upload, mut file) = Upload::begin(std::sync::Arc::clone(storage), &name)?;
    file.write_all(bytes)
        .map_err(|e| storage.io_err("cannot write", &name, e))?;
    upload.commit(&file).map(drop)
}

/// The media type of a file, by its extension (`application/octet-stream` when unknown).
pub fn mime_of(name: &str) -> String {
    mime_guess::from_path(name)
        .first_or_octet_stream()
        .essence_str()
        .to_string()
}

/// Whether a file of media type `mime` whose bytes are `bytes` reads as text.
pub fn is_text(mime: &str, bytes: &[u8]) -> bool {
    let textual = mime.starts_with("text/")
        || mime.ends_with("json")
        || mime.ends_with("xml")
        || mime.ends_with("javascript")
        || mime == "application/x-sh"
        || mime == "application/octet-stream";
    textual && std::str::from_utf8(bytes).is_ok()
}

/// A file opened for download: the open file, its size and modification time.
#[derive(Debug)]
pub struct Download {
    pub file: std::fs::File,
    pub size: u64,
    pub modified: std::time::SystemTime,
}

/// Opens stored file `given` (a name or the path this server returned) for reading, by the
/// file tools' rules (no link, no hidden file, a regular file).
pub fn open_download(storage: &Storage, given: &str) -> Result<(String, Download), StorageError> {
    let name = visible_name(storage, given)?;
    let file = storage.open_regular(&name, OpenOptions::new().read(true))?;
    let meta = file
        .metadata()
        .map_err(|e| storage.io_err("cannot inspect", &name, e))?;
    let modified = meta.modified().unwrap_or(UNIX_EPOCH);
    let size = meta.len();
    Ok((
        name,
        Download {
            file,
            size,
            modified,
        },
    ))
}

/// An upload being written: a temporary file in the storage folder, renamed over the name
/// by [`Upload::commit`]; dropped uncommitted, it is removed (nothing half-written stays).
#[derive(Debug)]
pub struct Upload {
    storage: std::sync::Arc<Storage>,
    name: String,
    tmp: String,
    committed: bool,
}

impl Upload {
    /// Starts an upload of `given`; the open temporary file is returned with it.
    pub fn begin(
        storage: std::sync::Arc<Storage>,
        given: &str,
    ) -> Result<(Upload, std::fs::File), StorageError> {
        let name = visible_name(&storage, given)?;
        check_replaceable(&storage, &name)?;
        let tmp = format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple());
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(storage.path_of(&tmp))
            .map_err(|e| storage.io_err("cannot create", &tmp, e))?;
        let upload = Upload {
            storage,
            name,
            tmp,
            committed: false,
        };
        Ok((upload, file))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Hands the finished file to the run user and renames it over the name.
    pub fn commit(mut self, file: &std::fs::File) -> Result<String, StorageError> {
        let storage = &self.storage;
        file.sync_all()
            .map_err(|e| storage.io_err("cannot write", &self.tmp, e))?;
        if let Some((uid, gid)) = storage.owner() {
            fchown(file, Some(uid), Some(gid))
                .map_err(|e| storage.io_err("cannot set the owner of", &self.tmp, e))?;
        }
        check_replaceable(storage, &self.name)?;
        std::fs::rename(storage.path_of(&self.tmp), storage.path_of(&self.name))
            .map_err(|e| storage.io_err("cannot write", &self.name, e))?;
        self.committed = true;
        Ok(self.name.clone())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(self.storage.path_of(&self.tmp));
        }
    }
}

/// The name `given` resolves to, refusing hidden names (the server's own state).
pub fn visible_name(storage: &Storage, given: &str) -> Result<String, StorageError> {
    let name = storage.resolve(given)?;
    if name.starts_with('.') {
        return Err(StorageError::InvalidName {
            given: given.to_string(),
            reason: "hidden names (starting with '.') are the server's own".to_string(),
        });
    }
    Ok(name)
}

/// Refuses to replace a link (never followed) or anything but a regular file.
fn check_replaceable(storage: &Storage, name: &str) -> Result<(), StorageError> {
    match std::fs::symlink_metadata(storage.path_of(name)) {
        Ok(meta) if meta.file_type().is_symlink() => Err(StorageError::Symlink {
            name: name.to_string(),
        }),
        Ok(meta) if !meta.is_file() => Err(StorageError::NotRegular {
            name: name.to_string(),
        }),
        _ => Ok(()),
    }
}
