//! Copy mode (`STORAGE_MODE=copy`, for a daemon that cannot bind-mount the server's storage
//! folder): a run's container gets an anonymous volume at [`COPY_MOUNT`] instead of the folder;
//! the folder's files go in as a tar stream before the run starts ([`pack`]) and the files the
//! run created or changed come back as one after it ended ([`unpack`]), each file at most
//! MAX_FILE_SIZE and all of them at most MAX_COPY_SIZE. Hidden top-level entries (the server's
//! state) stay on the server; symlinks and special files never cross; what comes back is
//! written atomically and only inside the folder. A file that went in ([`Sent`]) and is gone
//! when the run ends was deleted by the run and is deleted here too, unless the server's copy
//! changed meanwhile (another run or `write_file` wrote it: the newer file wins); folders the
//! run removed go when empty. Pure file and tar work: the engine calls are the runner's.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use crate::error::SandboxError;

/// Where the anonymous volume of a run in copy mode is mounted.
pub const COPY_MOUNT: &str = "/mce";
/// The storage folder's copy inside a run container in copy mode (the program's working
/// directory).
pub const COPY_WORKDIR: &str = "/mce/code";
/// The name of [`COPY_WORKDIR`] inside [`COPY_MOUNT`] (the top entry of both archives).
const TOP: &str = "code";

/// Where copies come from and go to, and how much may cross.
#[derive(Debug, Clone, PartialEq)]
pub struct CopySettings {
    /// The storage folder, as the server sees it.
    pub root: PathBuf,
    pub max_file_bytes: u64,
    pub max_total_bytes: u64,
}

impl CopySettings {
    /// `path` (a file in the storage folder, as the server sees it) as the program sees it.
    pub fn inside(&self, path: &str) -> String {
        match Path::new(path).strip_prefix(&self.root) {
            Ok(rel) => Path::new(COPY_WORKDIR)
                .join(rel)
                .to_string_lossy()
                .into_owned(),
            Err(_) => path.to_string(),
        }
    }
}

/// What [`pack`] sent into a run: each file with the size and modification time it had then,
/// and each folder (paths relative to the storage folder).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Sent {
    files: HashMap<PathBuf, (u64, Option<SystemTime>)>,
    dirs: Vec<PathBuf>,
}

impl Sent {
    /// Whether `rel` is listed with that size and modification time.
    fn has(&self, rel: &Path, len: u64, modified: Option<SystemTime>) -> bool {
        modified.is_some() && self.files.get(rel) == Some(&(len, modified))
    }
}

fn io_err(what: &str, e: impl std::fmt::Display) -> SandboxError {
    SandboxError::Copy(format!("{what}: {e}"))
}

/// The storage folder's files as a tar archive for [`COPY_MOUNT`]: everything under `code/`,
/// owned by `owner` (the run user, who must be able to write there); and what went in.
pub fn pack(settings: &CopySettings, owner: (u32, u32)) -> Result<(Vec<u8>, Sent), SandboxError> {
    pack_since(settings, owner, None)
}

/// As [`pack`], but a file whose size and modification time are those `since` lists (the
/// folder as a session's container last received or gave it back) stays out of the archive:
/// the container has it. The [`Sent`] returned lists every file, sent now or before.
pub fn pack_since(
    settings: &CopySettings,
    owner: (u32, u32),
    since: Option<&Sent>,
) -> Result<(Vec<u8>, Sent), SandboxError> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut total = 0u64;
    append(&mut builder, Path::new(TOP), None, owner)?;
    let sent = walk(settings, |rel, path, len| {
        let inner = Path::new(TOP).join(rel);
        let Some(path) = path else {
            return append(&mut builder, &inner, None, owner);
        };
        if since.is_some_and(|s| s.has(rel, len, modified(path))) {
            return Ok(());
        }
        let data = std::fs::read(path).map_err(|e| io_err("read a file", e))?;
        total += data.len() as u64;
        if total > settings.max_total_bytes {
            return Err(SandboxError::CopyTooLarge {
                max: settings.max_total_bytes,
            });
        }
        append(&mut builder, &inner, Some(&data), owner)
    })?;
    let tar = builder
        .into_inner()
        .map_err(|e| io_err("pack the storage folder", e))?;
    Ok((tar, sent))
}

/// The storage folder as it is now, in the terms of [`Sent`] (after a session's files came
/// back: what its container and the folder both hold).
pub fn scan(settings: &CopySettings) -> Result<Sent, SandboxError> {
    walk(settings, |_, _, _| Ok(()))
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).ok().and_then(|m| m.modified().ok())
}

/// Visits every folder (`path` None) and regular file of at most MAX_FILE_SIZE under the
/// storage folder, by path relative to it, parents first; hidden top-level entries, links and
/// special files are left out. What was visited, as a [`Sent`].
fn walk(
    settings: &CopySettings,
    mut visit: impl FnMut(&Path, Option<&Path>, u64) -> Result<(), SandboxError>,
) -> Result<Sent, SandboxError> {
    let mut sent = Sent::default();
    let mut pending = vec![(settings.root.clone(), PathBuf::new())];
    while let Some((dir, rel_dir)) = pending.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| io_err("read the storage folder", e))?;
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let top_level = dir == settings.root;
            if top_level && file_name.to_string_lossy().starts_with('.') {
                continue;
            }
            let (Ok(kind), Ok(meta)) = (entry.file_type(), entry.metadata()) else {
                continue;
            };
            let rel = rel_dir.join(&file_name);
            if kind.is_dir() {
                visit(&rel, None, 0)?;
                pending.push((entry.path(), rel.clone()));
                sent.dirs.push(rel);
            } else if kind.is_file() && meta.len() <= settings.max_file_bytes {
                visit(&rel, Some(&entry.path()), meta.len())?;
                sent.files.insert(rel, (meta.len(), meta.modified().ok()));
            }
        }
    }
    Ok(sent)
}

/// Appends a folder (`data` None) or a file to the archive, owned by `owner`.
fn append(
    b: &mut tar::Builder<Vec<u8>>,
    path: &Path,
    data: Option<&[u8]>,
    owner: (u32, u32),
) -> Result<(), SandboxError> {
    let mut h = tar::Header::new_gnu();
    let (kind, mode, bytes, path) = match data {
        None => (
            tar::EntryType::Directory,
            0o755,
            &[][..],
            PathBuf::from(format!("{}/", path.display())),
        ),
        Some(d) => (tar::EntryType::Regular, 0o644, d, path.to_path_buf()),
    };
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(owner.0.into());
    h.set_gid(owner.1.into());
    h.set_size(bytes.len() as u64);
    h.set_mtime(crate::sandbox::lifecycle::unix_now());
    b.append_data(&mut h, path, bytes)
        .map_err(|e| io_err("pack the storage folder", e))
}

/// Writes the files of `archive` (the engine's archive of [`COPY_WORKDIR`]) that are new or
/// differ from the storage folder's into it. Returns what was not copied back, and why.
pub fn unpack(
    settings: &CopySettings,
    archive: &[u8],
    sent: Option<&Sent>,
) -> Result<Vec<String>, SandboxError> {
    let mut skipped = Vec::new();
    let mut seen = HashSet::new();
    let mut total = 0u64;
    let mut tar = tar::Archive::new(archive);
    let entries = tar
        .entries()
        .map_err(|e| io_err("read the run's files", e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| io_err("read the run's files", e))?;
        let Some(rel) = entry.path().ok().and_then(|p| relative(&p)) else {
            continue;
        };
        let shown = rel.to_string_lossy().into_owned();
        seen.insert(rel.clone());
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            tar::EntryType::Directory => continue,
            _ => {
                skipped.push(format!("{shown} (not a regular file)"));
                continue;
            }
        }
        let size = entry.size();
        if size > settings.max_file_bytes {
            skipped.push(format!("{shown} ({size} bytes, over MAX_FILE_SIZE)"));
            continue;
        }
        total += size;
        if total > settings.max_total_bytes {
            skipped.push(format!("{shown} (over MAX_COPY_SIZE for one run)"));
            continue;
        }
        let mut data = Vec::with_capacity(size as usize);
        entry
            .read_to_end(&mut data)
            .map_err(|e| io_err("read a file of the run", e))?;
        if let Err(why) = store(&settings.root, &rel, &data) {
            skipped.push(format!("{shown} ({why})"));
        }
    }
    if let Some(sent) = sent {
        delete_what_the_run_deleted(&settings.root, sent, &seen);
    }
    Ok(skipped)
}

/// Deletes the files that went in and did not come back, where the server's copy is still the
/// one that went in; then the folders that went in and did not come back, deepest first, where
/// empty. Best effort: what cannot be deleted stays.
fn delete_what_the_run_deleted(root: &Path, sent: &Sent, seen: &HashSet<PathBuf>) {
    for (rel, (len, modified)) in &sent.files {
        if seen.contains(rel) {
            continue;
        }
        let path = root.join(rel);
        let unchanged = std::fs::symlink_metadata(&path)
            .is_ok_and(|m| m.is_file() && m.len() == *len && m.modified().ok() == *modified);
        if unchanged {
            let _ = std::fs::remove_file(&path);
        }
    }
    let mut gone: Vec<&PathBuf> = sent.dirs.iter().filter(|d| !seen.contains(*d)).collect();
    gone.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for rel in gone {
        let _ = std::fs::remove_dir(root.join(rel));
    }
}

/// An archive path below the top entry, made only of plain names and not hidden at the top;
/// `None` for the top entry itself and anything else.
fn relative(path: &Path) -> Option<PathBuf> {
    let mut parts = path.components();
    match parts.next() {
        Some(Component::Normal(top)) if top == TOP => {}
        _ => return None,
    }
    let rel: PathBuf = parts.clone().collect();
    let plain = parts.all(|c| matches!(c, Component::Normal(_)));
    let first = rel.components().next()?;
    let hidden = first.as_os_str().to_string_lossy().starts_with('.');
    (plain && !hidden).then_some(rel)
}

/// Writes `data` to `root/rel` unless it holds that already: folders made as needed, never
/// through a symlink, the file replaced atomically.
fn store(root: &Path, rel: &Path, data: &[u8]) -> Result<(), String> {
    let target = root.join(rel);
    let mut dir = root.to_path_buf();
    if let Some(parent) = rel.parent() {
        for part in parent.components() {
            dir.push(part);
            match std::fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err("a folder on its path is no folder here".into()),
                Err(_) => std::fs::create_dir(&dir).map_err(|e| e.to_string())?,
            }
        }
    }
    if let Ok(m) = std::fs::symlink_metadata(&target) {
        if !m.is_file() {
            return Err("not a regular file here".into());
        }
        if m.len() == data.len() as u64 && std::fs::read(&target).is_ok_and(|d| d == data) {
            return Ok(());
        }
    }
    let name = rel.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{}.mce-copy", name.unwrap_or_default()));
    std::fs::write(&tmp, data).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, &target).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        e.to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(root: &Path) -> CopySettings {
        CopySettings {
            root: root.to_path_buf(),
            max_file_bytes: 1 << 20,
            max_total_bytes: 4 << 20,
        }
    }

    /// An archive as the engine returns it for COPY_WORKDIR.
    fn archive(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        append(&mut b, Path::new(TOP), None, (1000, 1000)).unwrap();
        for (path, data) in files {
            append(&mut b, Path::new(path), Some(data), (1000, 1000)).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn names(packed: &[u8]) -> Vec<String> {
        let mut tar = tar::Archive::new(packed);
        let mut names: Vec<String> = tar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn pack_takes_the_folder_but_its_hidden_state_and_oversized_files() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::write(root.join("a.py"), "print(1)").unwrap();
        std::fs::create_dir_all(root.join("data/sub")).unwrap();
        std::fs::write(root.join("data/sub/x.csv"), "1,2").unwrap();
        std::fs::create_dir_all(root.join(".mce-runs")).unwrap();
        std::fs::write(root.join(".mce-runs/r.json"), "{}").unwrap();
        std::fs::write(root.join("big.bin"), vec![0u8; (1 << 20) + 1]).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
        let (packed, sent) = pack(&settings(root), (1000, 1000)).unwrap();
        assert_eq!(sent.files.len(), 2, "{sent:?}");
        assert_eq!(
            sent.dirs,
            [PathBuf::from("data"), PathBuf::from("data/sub")]
        );
        assert_eq!(
            names(&packed),
            [
                "code/",
                "code/a.py",
                "code/data/",
                "code/data/sub/",
                "code/data/sub/x.csv"
            ]
        );
        let mut tar = tar::Archive::new(&packed[..]);
        let top = tar.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(
            top.header().uid().unwrap(),
            1000,
            "the run user owns its folder"
        );
    }

    #[test]
    fn pack_refuses_a_folder_over_the_total_cap() {
        let tmp = tempfile::tempdir().unwrap();
        for i in 0..5 {
            std::fs::write(tmp.path().join(format!("{i}.bin")), vec![1u8; 1 << 20]).unwrap();
        }
        let err = pack(&settings(tmp.path()), (1, 1)).unwrap_err().to_string();
        assert!(err.contains("MAX_COPY_SIZE"), "{err}");
    }

    #[test]
    fn unpack_writes_new_and_changed_files_only() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::write(root.join("same.txt"), "same").unwrap();
        std::fs::write(root.join("changed.txt"), "old").unwrap();
        let before = std::fs::metadata(root.join("same.txt"))
            .unwrap()
            .modified()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let files: &[(&str, &[u8])] = &[
            ("code/same.txt", b"same"),
            ("code/changed.txt", b"new"),
            ("code/out/fig.png", b"png"),
        ];
        let skipped = unpack(&settings(root), &archive(files), None).unwrap();
        assert!(skipped.is_empty(), "{skipped:?}");
        let after = std::fs::metadata(root.join("same.txt"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(before, after, "an unchanged file is not rewritten");
        assert_eq!(
            std::fs::read_to_string(root.join("changed.txt")).unwrap(),
            "new"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("out/fig.png")).unwrap(),
            "png"
        );
        let leftovers: Vec<_> = std::fs::read_dir(root)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(
            leftovers.is_empty(),
            "no temporary files left: {leftovers:?}"
        );
    }

    #[test]
    fn unpack_never_writes_outside_the_folder_or_through_links() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("code");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
        let files: &[(&str, &[u8])] = &[
            ("code/escape/x.txt", b"x"),
            ("code/.mce-runs/run.json", b"{}"),
            ("other/y.txt", b"y"),
            ("code/big.bin", &[0u8; (1 << 20) + 1]),
        ];
        let skipped = unpack(&settings(&root), &archive(files), None).unwrap();
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        assert!(!root.join(".mce-runs").exists());
        assert!(!root.join("big.bin").exists());
        assert!(
            skipped.iter().any(|s| s.starts_with("escape/x.txt")),
            "{skipped:?}"
        );
        assert!(
            skipped.iter().any(|s| s.contains("MAX_FILE_SIZE")),
            "{skipped:?}"
        );
    }

    #[test]
    fn what_the_run_deleted_is_deleted_unless_the_server_wrote_it_since() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("old/deep")).unwrap();
        std::fs::create_dir_all(root.join("kept")).unwrap();
        for name in [
            "gone.txt",
            "stays.txt",
            "rewritten.txt",
            "old/deep/x.txt",
            "kept/y.txt",
        ] {
            std::fs::write(root.join(name), "in").unwrap();
        }
        let (_, sent) = pack(&settings(root), (1000, 1000)).unwrap();
        // Meanwhile the server's copy of one of them changes, and a new file appears.
        std::fs::write(root.join("rewritten.txt"), "newer on the server").unwrap();
        std::fs::write(root.join("new.txt"), "new").unwrap();
        // The run kept stays.txt and kept/ (without y.txt), deleted the rest.
        let back: &[(&str, &[u8])] = &[("code/stays.txt", b"in")];
        let mut b = tar::Builder::new(Vec::new());
        append(&mut b, Path::new(TOP), None, (1, 1)).unwrap();
        append(&mut b, Path::new("code/kept"), None, (1, 1)).unwrap();
        for (path, data) in back {
            append(&mut b, Path::new(path), Some(data), (1, 1)).unwrap();
        }
        let skipped = unpack(&settings(root), &b.into_inner().unwrap(), Some(&sent)).unwrap();
        assert!(skipped.is_empty(), "{skipped:?}");
        let left = |p: &str| root.join(p).exists();
        assert!(!left("gone.txt") && !left("old/deep/x.txt") && !left("kept/y.txt"));
        assert!(!left("old"), "a folder the run removed goes");
        assert!(left("kept"), "a folder the run kept stays");
        assert!(left("stays.txt") && left("new.txt"));
        assert_eq!(
            std::fs::read_to_string(root.join("rewritten.txt")).unwrap(),
            "newer on the server",
            "a file the server wrote after it went in is not deleted"
        );
    }

    #[test]
    fn pack_since_sends_only_what_changed_and_lists_everything() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(root.join("same.txt"), "same").unwrap();
        std::fs::write(root.join("d/edited.txt"), "old").unwrap();
        let (_, first) = pack(&settings(root), (1, 1)).unwrap();
        assert_eq!(
            scan(&settings(root)).unwrap(),
            first,
            "scan sees what pack sent"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(root.join("d/edited.txt"), "new!").unwrap();
        std::fs::write(root.join("added.txt"), "added").unwrap();
        let (packed, now) = pack_since(&settings(root), (1, 1), Some(&first)).unwrap();
        assert_eq!(
            names(&packed),
            ["code/", "code/added.txt", "code/d/", "code/d/edited.txt"]
        );
        assert_eq!(now.files.len(), 3, "{now:?}");
        assert_eq!(now, scan(&settings(root)).unwrap());
    }

    #[test]
    fn paths_inside_the_container() {
        let s = settings(Path::new("/srv/code"));
        assert_eq!(s.inside("/srv/code/a.py"), "/mce/code/a.py");
        assert_eq!(s.inside("/srv/code/d/b.py"), "/mce/code/d/b.py");
        assert_eq!(s.inside("/elsewhere/c.py"), "/elsewhere/c.py");
    }
}
