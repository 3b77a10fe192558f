//! The storage directory (`CODE_STORAGE_DIR`): the only host folder the server reads or writes
//! for tools, and the working directory of every run.
//!
//! Files are addressed by a bare name, or by the absolute path this server returned (a file
//! directly in the storage directory). Everything else is refused. Opens never follow symbolic
//! links (`O_NOFOLLOW`), never block on FIFOs (`O_NONBLOCK`), and accept only regular files
//! (checked on the open descriptor). New files appear atomically: written under a temporary name,
//! then linked into place without replacing anything.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, fchown};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::error::StorageError;

const MAX_STEM_LEN: usize = 64;
const MAX_NAME_LEN: usize = 255;
const DEFAULT_STEM: &str = "code";

/// A file created in the storage directory.
#[derive(Debug, Clone)]
pub struct StoredFile {
    /// The bare file name, e.g. `analysis_1a2b3c4d.py`.
    pub name: String,
    /// The absolute path, as this server sees it.
    pub path: PathBuf,
}

/// Size and modification time of a file, to tell which files a run created or changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileStat {
    pub size: u64,
    pub modified: Option<SystemTime>,
}

/// A file a run created or changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    pub name: String,
    pub size: u64,
    pub created: bool,
}

/// Files in `after` that are new or differ from `before` (sorted by name).
pub fn changed_files(
    before: &HashMap<String, FileStat>,
    after: &HashMap<String, FileStat>,
) -> Vec<Changed> {
    let mut changed: Vec<Changed> = after
        .iter()
        .filter(|(name, stat)| before.get(*name) != Some(stat))
        .map(|(name, stat)| Changed {
            name: name.clone(),
            size: stat.size,
            created: !before.contains_key(name),
        })
        .collect();
    changed.sort_by(|a, b| a.name.cmp(&b.name));
    changed
}

/// Confined file operations on the storage directory.
#[derive(Debug)]
pub struct Storage {
    root: PathBuf,
    max_bytes: u64,
    /// Owner given to new files (when the server runs as root and code runs as another user).
    owner: Option<(u32, u32)>,
    /// Serialises appends so that concurrent calls never interleave.
    append_lock: Mutex<()>,
}

impl Storage {
    /// `root` must be absolute and canonical (see `Config`). When the server runs as root, code
    /// runs as `run_as`: the directory and new files are handed to that user so runs can write.
    pub fn new(root: PathBuf, max_bytes: usize, run_as: (u32, u32)) -> Result<Self, StorageError> {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid cannot fail.
        let owner = (unsafe { libc::geteuid() } == 0).then_some(run_as);
        let current = std::fs::metadata(&root)
            .map(|m| (m.uid(), m.gid()))
            .map_err(|source| StorageError::Io {
                what: "cannot inspect the storage directory",
                path: root.clone(),
                source,
            })?;
        if let Some((uid, gid)) = owner.filter(|o| *o != current) {
            // Without CAP_CHOWN (the server locked down in a container) this fails: runs can
            // then not write there, which the warning says how to fix.
            if let Err(e) = std::os::unix::fs::chown(&root, Some(uid), Some(gid)) {
                tracing::warn!(
                    "cannot hand {} to uid {uid} (code runs as that user and may not write there): \
                     {e}; chown the folder or set RUN_AS_USER to its owner",
                    root.display()
                );
            }
        }
        Ok(Storage {
            root,
            max_bytes: max_bytes as u64,
            owner,
            append_lock: Mutex::new(()),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Who new files are handed to (when the server runs as root).
    pub(crate) fn owner(&self) -> Option<(u32, u32)> {
        self.owner
    }

    /// Creates a new `.py` file named after `hint` (sanitized) plus a random suffix.
    pub fn create(&self, hint: Option<&str>, content: &str) -> Result<StoredFile, StorageError> {
        let stem = sanitize_stem(hint.unwrap_or(""));
        self.check_size(&stem, content.len() as u64, "file content")?;
        let name = format!("{stem}_{}.py", random_suffix());
        let path = self.root.join(&name);
        let tmp = self.root.join(format!(".{name}.{}.tmp", random_suffix()));
        let io = |what, source| StorageError::Io {
            what,
            path: path.clone(),
            source,
        };
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)
                .map_err(|e| io("cannot create", e))?;
            file.write_all(content.as_bytes())
                .map_err(|e| io("cannot write", e))?;
            if let Some((uid, gid)) = self.owner {
                fchown(&file, Some(uid), Some(gid))
                    .map_err(|e| io("cannot set the owner of", e))?;
            }
            // Link, not rename: fails instead of replacing a file that appeared meanwhile.
            std::fs::hard_link(&tmp, &path).map_err(|e| io("cannot create", e))
        })();
        let _ = std::fs::remove_file(&tmp);
        result.map(|()| StoredFile { name, path })
    }

    /// Maps a user-given `file_path` to a bare name inside the storage directory, or refuses it.
    pub fn resolve(&self, given: &str) -> Result<String, StorageError> {
        let outside = || StorageError::Outside {
            given: given.to_string(),
            root: self.root.clone(),
        };
        let invalid = |reason: &str| StorageError::InvalidName {
            given: given.to_string(),
            reason: reason.to_string(),
        };
        if given.is_empty() {
            return Err(invalid("empty"));
        }
        if given.contains('\0') {
            return Err(invalid("contains a NUL byte"));
        }
        if given.contains('\\') {
            return Err(invalid(
                "contains a backslash; use the name or path this server returned",
            ));
        }
        let name = if given.starts_with('/') {
            let path = Path::new(given);
            match (path.parent(), path.file_name().and_then(|n| n.to_str())) {
                (Some(parent), Some(name)) if parent == self.root => name,
                _ => return Err(outside()),
            }
        } else if given.contains('/') {
            return Err(outside());
        } else {
            given
        };
        if name == "." || name == ".." {
            return Err(outside());
        }
        if name.len() > MAX_NAME_LEN {
            return Err(invalid("longer than 255 bytes"));
        }
        if name.chars().any(char::is_control) {
            return Err(invalid("contains control characters"));
        }
        Ok(name.to_string())
    }

    /// The absolute path of a resolved name.
    pub fn path_of(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Reads a whole file (≤ the size limit) as UTF-8 (invalid bytes replaced).
    pub fn read(&self, name: &str) -> Result<String, StorageError> {
        let mut file = self.open_regular(name, OpenOptions::new().read(true))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        self.check_size(name, size, "reading")?;
        let mut bytes = Vec::with_capacity(size as usize);
        Read::by_ref(&mut file)
            .take(self.max_bytes + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| self.io_err("cannot read", name, source))?;
        self.check_size(name, bytes.len() as u64, "reading")?;
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// The regular files directly in the storage directory (links and folders are left out).
    pub fn snapshot(&self) -> HashMap<String, FileStat> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return HashMap::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let meta = e.metadata().ok()?; // does not follow links
                let name = e.file_name().into_string().ok()?;
                (meta.is_file() && !name.starts_with('.')).then(|| {
                    (
                        name,
                        FileStat {
                            size: meta.len(),
                            modified: meta.modified().ok(),
                        },
                    )
                })
            })
            .collect()
    }

    /// Reads a whole regular file of at most `limit` bytes.
    pub fn read_bytes(&self, name: &str, limit: u64) -> Result<Vec<u8>, StorageError> {
        let mut file = self.open_regular(name, OpenOptions::new().read(true))?;
        let mut bytes = Vec::new();
        Read::by_ref(&mut file)
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| self.io_err("cannot read", name, source))?;
        if bytes.len() as u64 > limit {
            return Err(StorageError::TooLarge {
                name: name.to_string(),
                size: bytes.len() as u64,
                limit,
                what: "images",
            });
        }
        Ok(bytes)
    }

    /// Appends `content` to an existing file; concurrent appends never interleave.
    pub fn append(&self, name: &str, content: &str) -> Result<u64, StorageError> {
        let _guard = self
            .append_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut file = self.open_regular(name, OpenOptions::new().append(true))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        self.check_size(
            name,
            size + content.len() as u64,
            "the file after appending",
        )?;
        file.write_all(content.as_bytes())
            .map_err(|source| self.io_err("cannot append to", name, source))?;
        Ok(size + content.len() as u64)
    }

    pub(crate) fn open_regular(
        &self,
        name: &str,
        opts: &mut OpenOptions,
    ) -> Result<File, StorageError> {
        let file = opts
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(self.path_of(name))
            .map_err(|source| match source.kind() {
                ErrorKind::NotFound => StorageError::NotFound {
                    name: name.to_string(),
                    root: self.root.clone(),
                },
                _ if source.raw_os_error() == Some(libc::ELOOP) => StorageError::Symlink {
                    name: name.to_string(),
                },
                // A FIFO without reader refuses a non-blocking open for writing.
                _ if source.raw_os_error() == Some(libc::ENXIO) => StorageError::NotRegular {
                    name: name.to_string(),
                },
                _ => self.io_err("cannot open", name, source),
            })?;
        let meta = file
            .metadata()
            .map_err(|source| self.io_err("cannot inspect", name, source))?;
        if !meta.is_file() {
            return Err(StorageError::NotRegular {
                name: name.to_string(),
            });
        }
        Ok(file)
    }

    fn check_size(&self, name: &str, size: u64, what: &'static str) -> Result<(), StorageError> {
        if size > self.max_bytes {
            return Err(StorageError::TooLarge {
                name: name.to_string(),
                size,
                limit: self.max_bytes,
                what,
            });
        }
        Ok(())
    }

    pub(crate) fn io_err(
        &self,
        what: &'static str,
        name: &str,
        source: std::io::Error,
    ) -> StorageError {
        StorageError::Io {
            what,
            path: self.path_of(name),
            source,
        }
    }
}

/// Keeps letters, digits, `_` and `-` of a user's file name hint (without a `.py` ending);
/// everything else becomes `_`. Never empty, never hidden, never a path.
pub fn sanitize_stem(hint: &str) -> String {
    let hint = hint.trim();
    let hint = hint.strip_suffix(".py").unwrap_or(hint);
    let hint = hint.rsplit(['/', '\\']).next().unwrap_or(hint);
    let mut stem: String = hint
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(MAX_STEM_LEN)
        .collect();
    let trimmed = stem.trim_matches('_');
    if trimmed.is_empty() {
        return DEFAULT_STEM.to_string();
    }
    stem = trimmed.to_string();
    stem
}

fn random_suffix() -> String {
    let n: u32 = rand::random();
    format!("{n:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage() -> (tempfile::TempDir, Storage) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        // Unit tests run as the current user; the owner hand-over is exercised only as root.
        let s = Storage {
            root,
            max_bytes: 1000,
            owner: None,
            append_lock: Mutex::new(()),
        };
        (tmp, s)
    }

    #[test]
    fn stems() {
        assert_eq!(sanitize_stem("analysis"), "analysis");
        assert_eq!(sanitize_stem("my plot.py"), "my_plot");
        assert_eq!(sanitize_stem("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_stem("..\\x\\evil"), "evil");
        assert_eq!(sanitize_stem(".hidden"), "hidden");
        assert_eq!(sanitize_stem(""), "code");
        assert_eq!(sanitize_stem("../"), "code");
        assert_eq!(sanitize_stem("$(rm -rf ~)"), "rm_-rf");
        assert_eq!(sanitize_stem(&"a".repeat(300)).len(), 64);
    }

    #[test]
    fn create_read_append() {
        let (_t, s) = storage();
        let f = s.create(Some("demo"), "print(1)\n").unwrap();
        assert!(f.name.starts_with("demo_") && f.name.ends_with(".py"));
        assert_eq!(f.path, s.root().join(&f.name));
        assert_eq!(s.read(&f.name).unwrap(), "print(1)\n");
        s.append(&f.name, "print(2)\n").unwrap();
        let abs = f.path.to_str().unwrap();
        assert_eq!(
            s.read(&s.resolve(abs).unwrap()).unwrap(),
            "print(1)\nprint(2)\n"
        );
        // No temporary files left behind.
        let names: Vec<_> = std::fs::read_dir(s.root())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn resolve_refuses_outside() {
        let (_t, s) = storage();
        let root = s.root().to_str().unwrap().to_string();
        for bad in [
            "../x.py".to_string(),
            "/etc/passwd".to_string(),
            format!("{root}/../x.py"),
            format!("{root}/sub/x.py"),
            format!("{root}/.."),
            "sub/x.py".to_string(),
            "..".to_string(),
            "a\\b.py".to_string(),
            "a\0b".to_string(),
            "".to_string(),
            root.clone(),
        ] {
            assert!(s.resolve(&bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(s.resolve("x.py").unwrap(), "x.py");
        assert_eq!(s.resolve(&format!("{root}/x.py")).unwrap(), "x.py");
    }

    #[test]
    fn symlinks_fifos_dirs_refused() {
        let (_t, s) = storage();
        std::os::unix::fs::symlink("/etc/hostname", s.root().join("link.py")).unwrap();
        assert!(matches!(
            s.read("link.py"),
            Err(StorageError::Symlink { .. })
        ));
        assert!(matches!(
            s.append("link.py", "x"),
            Err(StorageError::Symlink { .. })
        ));
        let fifo = std::ffi::CString::new(s.root().join("fifo").to_str().unwrap()).unwrap();
        // SAFETY: valid C string.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        assert!(matches!(
            s.read("fifo"),
            Err(StorageError::NotRegular { .. })
        ));
        assert!(matches!(
            s.append("fifo", "x"),
            Err(StorageError::NotRegular { .. })
        ));
        std::fs::create_dir(s.root().join("dir")).unwrap();
        assert!(matches!(
            s.read("dir"),
            Err(StorageError::NotRegular { .. })
        ));
        assert!(matches!(
            s.read("missing.py"),
            Err(StorageError::NotFound { .. })
        ));
    }

    #[test]
    fn changed_files_are_new_or_different() {
        let stat = |size| FileStat {
            size,
            modified: None,
        };
        let before = HashMap::from([("a".to_string(), stat(1)), ("b".to_string(), stat(2))]);
        let after = HashMap::from([
            ("a".to_string(), stat(1)),
            ("b".to_string(), stat(3)),
            ("c".to_string(), stat(4)),
        ]);
        let changed = changed_files(&before, &after);
        assert_eq!(
            changed,
            [
                Changed {
                    name: "b".into(),
                    size: 3,
                    created: false
                },
                Changed {
                    name: "c".into(),
                    size: 4,
                    created: true
                }
            ]
        );
    }

    #[test]
    fn snapshot_lists_regular_files_only() {
        let (_t, s) = storage();
        s.create(Some("x"), "1").unwrap();
        std::fs::create_dir(s.root().join("dir")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", s.root().join("link")).unwrap();
        let snap = s.snapshot();
        assert_eq!(snap.len(), 1);
        assert!(snap.keys().all(|k| k.starts_with("x_")));
    }

    #[test]
    fn size_limits() {
        let (_t, s) = storage();
        assert!(matches!(
            s.create(None, &"x".repeat(1001)),
            Err(StorageError::TooLarge { .. })
        ));
        let f = s.create(None, &"x".repeat(900)).unwrap();
        assert!(matches!(
            s.append(&f.name, &"y".repeat(200)),
            Err(StorageError::TooLarge { .. })
        ));
        assert_eq!(s.read(&f.name).unwrap().len(), 900);
    }
}
