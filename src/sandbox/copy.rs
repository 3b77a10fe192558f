//! Copy mode (`STORAGE_MODE=copy`, for a daemon that cannot bind-mount the server's storage
//! folder): a run's (or session's) container gets an anonymous volume at [`COPY_MOUNT`] instead
//! of the folder; the folder's files go in as a tar stream ([`pack`], [`pack_since`]) and come
//! back as one ([`unpack`]), each file at most MAX_FILE_SIZE and all of them at most
//! MAX_COPY_SIZE. Hidden top-level entries (the server's state) stay on the server; symlinks
//! and special files never cross; what comes back is written atomically and only inside the
//! folder, with the modification time it has in the container.
//!
//! What the container holds is tracked as a [`Held`]: each file's size and modification time
//! (whole seconds, which tar keeps). A file that comes back as it went in was not touched by
//! the program and is not written (the server's copy may be newer: another run or
//! `write_file` wrote it meanwhile); a file that went in and is gone from a complete archive
//! was deleted by the program and is deleted here too, unless the server's copy changed
//! meanwhile; folders the program removed go when empty. A file rewritten with the same size
//! within the second of its previous modification looks untouched (tar's times are whole
//! seconds). Pure file and tar work: the engine calls are the runner's.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::time::UNIX_EPOCH;

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

/// The folder as a container holds it: each file's size and modification time (Unix seconds),
/// and each folder (paths relative to the storage folder).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Held {
    files: HashMap<PathBuf, (u64, u64)>,
    dirs: HashSet<PathBuf>,
}

/// A file's size and modification time in whole Unix seconds (0 when unknown).
fn stamp(meta: &std::fs::Metadata) -> (u64, u64) {
    let secs = (meta.modified().ok())
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    (meta.len(), secs)
}

fn io_err(what: &str, e: impl std::fmt::Display) -> SandboxError {
    SandboxError::Copy(format!("{what}: {e}"))
}

/// The storage folder's files as a tar archive for [`COPY_MOUNT`]: everything under `code/`,
/// owned by `owner` (the run user, who must be able to write there); and what the container
/// holds once it is unpacked there.
pub fn pack(settings: &CopySettings, owner: (u32, u32)) -> Result<(Vec<u8>, Held), SandboxError> {
    pack_since(settings, owner, None)
}

/// As [`pack`], for a container that holds `held` already: a file it holds as the folder has
/// it stays out of the archive. The [`Held`] returned is `held` with what the archive adds (a
/// file deleted from the folder since stays in the container, and in it).
pub fn pack_since(
    settings: &CopySettings,
    owner: (u32, u32),
    held: Option<&Held>,
) -> Result<(Vec<u8>, Held), SandboxError> {
    let mut now = held.cloned().unwrap_or_default();
    let mut builder = tar::Builder::new(Vec::new());
    let mut total = 0u64;
    append(&mut builder, Path::new(TOP), None, owner, 0)?;
    let mut pending = vec![(settings.root.clone(), PathBuf::new())];
    while let Some((dir, rel_dir)) = pending.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| io_err("read the storage folder", e))?;
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            if dir == settings.root && file_name.to_string_lossy().starts_with('.') {
                continue;
            }
            let (Ok(kind), Ok(meta)) = (entry.file_type(), entry.metadata()) else {
                continue;
            };
            let rel = rel_dir.join(&file_name);
            let inner = Path::new(TOP).join(&rel);
            if kind.is_dir() {
                append(&mut builder, &inner, None, owner, 0)?;
                pending.push((entry.path(), rel.clone()));
                now.dirs.insert(rel);
                continue;
            }
            let (len, mtime) = stamp(&meta);
            let fits = kind.is_file() && len <= settings.max_file_bytes;
            if !fits || now.files.get(&rel) == Some(&(len, mtime)) {
                continue;
            }
            let data = std::fs::read(entry.path()).map_err(|e| io_err("read a file", e))?;
            total += data.len() as u64;
            if total > settings.max_total_bytes {
                return Err(SandboxError::CopyTooLarge {
                    max: settings.max_total_bytes,
                });
            }
            append(&mut builder, &inner, Some(&data), owner, mtime)?;
            now.files.insert(rel, (data.len() as u64, mtime));
        }
    }
    let tar = builder
        .into_inner()
        .map_err(|e| io_err("pack the storage folder", e))?;
    Ok((tar, now))
}

/// Appends a folder (`data` None) or a file to the archive, owned by `owner`.
fn append(
    b: &mut tar::Builder<Vec<u8>>,
    path: &Path,
    data: Option<&[u8]>,
    owner: (u32, u32),
    mtime: u64,
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
    // A file keeps its time (so that it can be told untouched when it comes back); a folder
    // gets now.
    h.set_mtime(if data.is_some() {
        mtime
    } else {
        crate::sandbox::lifecycle::unix_now()
    });
    b.append_data(&mut h, path, bytes)
        .map_err(|e| io_err("pack the storage folder", e))
}

/// Brings the engine's archive of [`COPY_WORKDIR`] into the storage folder: the files the
/// program created or changed (those `held`, what the container held before, does not list as
/// they are) are written; with `held`, those it deleted are deleted (see the module's rules).
/// Returns what was not copied back (and why), and what the container holds now.
pub fn unpack(
    settings: &CopySettings,
    archive: &[u8],
    held: Option<&Held>,
) -> Result<(Vec<String>, Held), SandboxError> {
    let mut skipped = Vec::new();
    let mut now = Held::default();
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
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            tar::EntryType::Directory => {
                now.dirs.insert(rel);
                continue;
            }
            _ => {
                skipped.push(format!("{shown} (not a regular file)"));
                continue;
            }
        }
        let size = entry.size();
        let mtime = entry.header().mtime().unwrap_or(0);
        let untouched = held.is_some_and(|h| h.files.get(&rel) == Some(&(size, mtime)));
        now.files.insert(rel.clone(), (size, mtime));
        if untouched {
            continue;
        }
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
        if data.len() as u64 != size {
            return Err(io_err(
                "read a file of the run",
                format!("{shown} is cut short"),
            ));
        }
        if let Err(why) = store(&settings.root, &rel, &data, mtime) {
            skipped.push(format!("{shown} ({why})"));
        }
    }
    // Deletions only from an archive known whole: one cut short at an entry's boundary reads
    // as a shorter list, and what it lacks would be taken for deleted.
    if let (Some(held), true) = (held, ends_whole(archive)) {
        delete_what_the_program_deleted(&settings.root, held, &now);
    }
    Ok((skipped, now))
}

/// Whether a tar archive ends with its end-of-archive marker (two zero blocks).
fn ends_whole(archive: &[u8]) -> bool {
    archive.len() >= 1024 && archive[archive.len() - 1024..].iter().all(|b| *b == 0)
}

/// Deletes the files `held` lists and `now` does not, where the server's copy is still the one
/// the container held; then such folders, deepest first, where empty. Best effort: what cannot
/// be deleted stays.
fn delete_what_the_program_deleted(root: &Path, held: &Held, now: &Held) {
    for (rel, was) in &held.files {
        if now.files.contains_key(rel) {
            continue;
        }
        let path = root.join(rel);
        let unchanged =
            std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() && stamp(&m) == *was);
        if unchanged {
            let _ = std::fs::remove_file(&path);
        }
    }
    let mut gone: Vec<&PathBuf> = held
        .dirs
        .iter()
        .filter(|d| !now.dirs.contains(*d))
        .collect();
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

/// Writes `data` to `root/rel` (modified at `mtime`) unless it holds that already: folders made as needed, never
/// through a symlink, the file replaced atomically.
fn store(root: &Path, rel: &Path, data: &[u8], mtime: u64) -> Result<(), String> {
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
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        std::io::Write::write_all(&mut f, data)?;
        // The container's time: the next exchange tells this copy from a newer one by it.
        f.set_modified(UNIX_EPOCH + std::time::Duration::from_secs(mtime))
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.to_string());
    }
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
        append(&mut b, Path::new(TOP), None, (1000, 1000), 0).unwrap();
        let now = crate::sandbox::lifecycle::unix_now();
        for (path, data) in files {
            append(&mut b, Path::new(path), Some(data), (1000, 1000), now).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// What the engine gives back after a program kept `keep` of what `packed` brought in (as
    /// they were) and wrote `add`.
    fn after_program(packed: &[u8], keep: &[&str], add: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut tar = tar::Archive::new(packed);
        for entry in tar.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let name = path.trim_end_matches('/');
            if name == TOP || keep.contains(&name) {
                let mut header = entry.header().clone();
                let mut data = Vec::new();
                entry.read_to_end(&mut data).unwrap();
                b.append_data(&mut header, name, &data[..]).unwrap();
            }
        }
        let now = crate::sandbox::lifecycle::unix_now();
        for (path, data) in add {
            append(&mut b, Path::new(path), Some(data), (1, 1), now).unwrap();
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
        let (packed, held) = pack(&settings(root), (1000, 1000)).unwrap();
        assert_eq!(held.files.len(), 2, "{held:?}");
        let dirs: HashSet<PathBuf> = ["data", "data/sub"].iter().map(PathBuf::from).collect();
        assert_eq!(held.dirs, dirs);
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
        let (skipped, _) = unpack(&settings(root), &archive(files), None).unwrap();
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
        let (skipped, _) = unpack(&settings(&root), &archive(files), None).unwrap();
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
    fn what_the_program_deleted_is_deleted_unless_the_server_wrote_it_since() {
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
        let (packed, held) = pack(&settings(root), (1000, 1000)).unwrap();
        // Meanwhile the server's copy of one of them changes, and a new file appears.
        std::fs::write(root.join("rewritten.txt"), "newer on the server").unwrap();
        std::fs::write(root.join("new.txt"), "new").unwrap();
        // The program kept stays.txt and kept/ (without y.txt), deleted the rest.
        let back = after_program(&packed, &["code/stays.txt", "code/kept"], &[]);
        let (skipped, now) = unpack(&settings(root), &back, Some(&held)).unwrap();
        assert!(skipped.is_empty(), "{skipped:?}");
        let left = |p: &str| root.join(p).exists();
        assert!(!left("gone.txt") && !left("old/deep/x.txt") && !left("kept/y.txt"));
        assert!(!left("old"), "a folder the program removed goes");
        assert!(left("kept"), "a folder the program kept stays");
        assert!(left("stays.txt"));
        assert!(
            left("new.txt"),
            "a file the server made meanwhile is never deleted"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("rewritten.txt")).unwrap(),
            "newer on the server",
            "a file the server wrote after it went in is not deleted"
        );
        assert_eq!(now.files.len(), 1, "the container holds stays.txt: {now:?}");
    }

    #[test]
    fn a_file_the_program_left_alone_never_overwrites_a_newer_server_copy() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::write(root.join("notes.txt"), "old").unwrap();
        std::fs::write(root.join("removed.txt"), "old").unwrap();
        let (packed, held) = pack(&settings(root), (1000, 1000)).unwrap();
        // While the program runs, the server rewrites one file and deletes another.
        std::fs::write(root.join("notes.txt"), "newer on the server").unwrap();
        std::fs::remove_file(root.join("removed.txt")).unwrap();
        let back = after_program(
            &packed,
            &["code/notes.txt", "code/removed.txt"],
            &[("code/out.txt", b"the program's")],
        );
        let (skipped, _) = unpack(&settings(root), &back, Some(&held)).unwrap();
        assert!(skipped.is_empty(), "{skipped:?}");
        let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_default();
        assert_eq!(read("notes.txt"), "newer on the server");
        assert!(!root.join("removed.txt").exists(), "not brought back");
        assert_eq!(read("out.txt"), "the program's");
    }

    #[test]
    fn an_archive_cut_short_deletes_nothing_and_a_short_file_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::write(root.join("a.txt"), "a").unwrap();
        std::fs::write(root.join("b.txt"), "b").unwrap();
        let (packed, held) = pack(&settings(root), (1000, 1000)).unwrap();
        // Cut at an entry's boundary (no end marker): looks like a shorter list.
        let whole = after_program(&packed, &["code/a.txt"], &[]);
        let cut = &whole[..whole.len() - 1024];
        assert!(!ends_whole(cut) && ends_whole(&whole));
        unpack(&settings(root), cut, Some(&held)).unwrap();
        assert!(
            root.join("b.txt").exists(),
            "nothing deleted after a cut archive"
        );
        // Cut inside a file's data: an error, and the server's copy stays.
        let fresh = archive(&[("code/a.txt", &[b'x'; 2048])]);
        let inside = &fresh[..512 * 3];
        assert!(unpack(&settings(root), inside, Some(&held)).is_err());
        assert_eq!(std::fs::read_to_string(root.join("a.txt")).unwrap(), "a");
    }

    #[test]
    fn pack_since_sends_only_what_the_container_lacks() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(root.join("same.txt"), "same").unwrap();
        std::fs::write(root.join("d/edited.txt"), "old").unwrap();
        std::fs::write(root.join("deleted.txt"), "x").unwrap();
        let (_, first) = pack(&settings(root), (1, 1)).unwrap();
        // Whole seconds: wait for the next one so that the edit shows in the times.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        std::fs::write(root.join("d/edited.txt"), "new!").unwrap();
        std::fs::write(root.join("added.txt"), "added").unwrap();
        std::fs::remove_file(root.join("deleted.txt")).unwrap();
        let (packed, now) = pack_since(&settings(root), (1, 1), Some(&first)).unwrap();
        assert_eq!(
            names(&packed),
            ["code/", "code/added.txt", "code/d/", "code/d/edited.txt"]
        );
        assert_eq!(
            now.files.len(),
            4,
            "the container still holds deleted.txt: {now:?}"
        );
        let (again, _) = pack_since(&settings(root), (1, 1), Some(&now)).unwrap();
        assert_eq!(names(&again), ["code/", "code/d/"], "nothing new to send");
    }

    #[test]
    fn paths_inside_the_container() {
        let s = settings(Path::new("/srv/code"));
        assert_eq!(s.inside("/srv/code/a.py"), "/mce/code/a.py");
        assert_eq!(s.inside("/srv/code/d/b.py"), "/mce/code/d/b.py");
        assert_eq!(s.inside("/elsewhere/c.py"), "/elsewhere/c.py");
    }
}
