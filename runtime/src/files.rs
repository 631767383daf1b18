//! Files as a careful tool treats them: only regular files are read (a FIFO or a device would
//! block or never end), every read is bounded by what its format allows, an output never
//! replaces its own input or anything but a regular file, and temporaries are created
//! exclusively under unpredictable names and removed even when the process is interrupted.

use crate::error::{Error, Result};
use std::ffi::CString;
use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

/// What a path is, for messages about files that are not regular files.
fn kind_of(metadata: &Metadata) -> &'static str {
    let t = metadata.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a named pipe (FIFO)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "a regular file"
    }
}

/// Opens `path` for reading if (and only if) it is a regular file (symbolic links followed).
/// The type is checked before opening, and the file is opened non-blocking and checked again,
/// so that a FIFO swapped in between cannot block the open.
pub fn open_regular(path: &Path) -> Result<File> {
    let metadata = std::fs::metadata(path).map_err(Error::io(path))?;
    if !metadata.is_file() {
        return Err(Error::NotAFile { path: path.into(), kind: kind_of(&metadata) });
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(Error::io(path))?;
    let metadata = file.metadata().map_err(Error::io(path))?;
    if !metadata.is_file() {
        return Err(Error::NotAFile { path: path.into(), kind: kind_of(&metadata) });
    }
    Ok(file)
}

/// The whole of a regular file of at most `max` bytes (`what` names the format in the error).
pub fn read_bounded(path: &Path, max: u64, what: &'static str) -> Result<Vec<u8>> {
    let file = open_regular(path)?;
    let len = file.metadata().map_err(Error::io(path))?.len();
    if len > max {
        return Err(Error::TooLarge { path: path.into(), what, size: len, max });
    }
    let mut bytes = Vec::with_capacity(len as usize);
    // `take` bounds the read even if the file grows meanwhile.
    file.take(max + 1).read_to_end(&mut bytes).map_err(Error::io(path))?;
    if bytes.len() as u64 > max {
        return Err(Error::TooLarge { path: path.into(), what, size: bytes.len() as u64, max });
    }
    Ok(bytes)
}

fn same_file(a: &Metadata, b: &Metadata) -> bool {
    a.dev() == b.dev() && a.ino() == b.ino()
}

/// Refuses an output path that would destroy something: one of `inputs` (the same file by
/// device and inode, so also through a hard or symbolic link or another spelling of the path),
/// or an existing entry that is not a regular file (a symbolic link, a device, a directory).
pub fn check_output(output: &Path, inputs: &[&Path]) -> Result<()> {
    let Ok(existing) = std::fs::symlink_metadata(output) else { return Ok(()) };
    if !existing.file_type().is_file() {
        return Err(Error::WontReplace { path: output.into(), kind: kind_of(&existing) });
    }
    for input in inputs {
        if let Ok(input_metadata) = std::fs::metadata(input) {
            if same_file(&existing, &input_metadata) {
                return Err(Error::OutputIsInput { output: output.into(), input: input.to_path_buf() });
            }
        }
    }
    Ok(())
}

/// A file being written beside its final path: created with `O_EXCL` under an unpredictable
/// name (so nothing planted there is followed or overwritten), removed if dropped before
/// [`PartialFile::commit`], and removed by the SIGINT/SIGTERM handler of
/// [`install_signal_handlers`] if the process is interrupted.
pub struct PartialFile {
    /// Where the temporary file is.
    pub path: PathBuf,
    slot: Option<usize>,
    committed: bool,
}

/// Suffix of every temporary file tvl writes: `.NAME.PID-RANDOM.partial`.
pub const PARTIAL_SUFFIX: &str = ".partial";

impl PartialFile {
    /// Creates the temporary file for `output` in the same directory (so the final rename is
    /// atomic) and returns it open for writing.
    pub fn create(output: &Path) -> Result<(PartialFile, File)> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let file_name =
            output.file_name().ok_or_else(|| Error::Invalid(format!("{} is not a file path", output.display())))?;
        let dir = output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        for _ in 0..16 {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
            let unique = (nanos as u64) ^ COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let name = format!(".{}.{}-{unique:016x}{PARTIAL_SUFFIX}", file_name.to_string_lossy(), std::process::id());
            let path = dir.join(name);
            match OpenOptions::new().write(true).create_new(true).mode(0o644).open(&path) {
                Ok(file) => {
                    let slot = register_partial(&path);
                    return Ok((PartialFile { path, slot, committed: false }, file));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(Error::Invalid(format!(
                        "cannot write into {} (for {}): {e}",
                        dir.display(),
                        output.display()
                    )))
                }
            }
        }
        Err(Error::Invalid(format!("cannot create a unique temporary file in {}", dir.display())))
    }

    /// Renames the finished file over `output` (checked again just before, see
    /// [`check_output`]).
    pub fn commit(mut self, output: &Path, inputs: &[&Path]) -> Result<()> {
        check_output(output, inputs)?;
        std::fs::rename(&self.path, output).map_err(Error::io(output))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            unregister_partial(slot);
        }
        if !self.committed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Removes `.partial` files left in `dir` by tvl processes that no longer run (killed with
/// SIGKILL, or a power cut). A file of a live process (a concurrent conversion) is kept.
pub fn remove_stale_partials(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_prefix('.').and_then(|n| n.strip_suffix(PARTIAL_SUFFIX)) else { continue };
        let Some(pid) = stem.rsplit_once('.').and_then(|(_, tail)| tail.split_once('-')).map(|(pid, _)| pid) else {
            continue;
        };
        let Ok(pid) = pid.parse::<i32>() else { continue };
        if pid > 0 && !process_exists(pid) && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

fn process_exists(pid: i32) -> bool {
    // SAFETY: kill with signal 0 sends nothing; it only checks that the process exists.
    let status = unsafe { libc::kill(pid, 0) };
    status == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Paths of the temporary files being written, as C strings the signal handler can unlink.
const SLOTS: usize = 16;
static PARTIALS: [AtomicPtr<libc::c_char>; SLOTS] = [const { AtomicPtr::new(std::ptr::null_mut()) }; SLOTS];

fn register_partial(path: &Path) -> Option<usize> {
    let c = CString::new(path.as_os_str().as_bytes()).ok()?.into_raw();
    for (i, slot) in PARTIALS.iter().enumerate() {
        if slot.compare_exchange(std::ptr::null_mut(), c, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            return Some(i);
        }
    }
    // SAFETY: `c` came from `CString::into_raw` just above and was not stored anywhere.
    drop(unsafe { CString::from_raw(c) });
    None
}

fn unregister_partial(slot: usize) {
    let c = PARTIALS[slot].swap(std::ptr::null_mut(), Ordering::SeqCst);
    if !c.is_null() {
        // SAFETY: every non-null pointer in PARTIALS came from `CString::into_raw`, and the swap
        // took it out, so nobody else frees it.
        drop(unsafe { CString::from_raw(c) });
    }
}

extern "C" fn on_terminate(signal: libc::c_int) {
    for slot in &PARTIALS {
        let c = slot.load(Ordering::SeqCst);
        if !c.is_null() {
            // SAFETY: unlink is async-signal-safe; `c` is a valid C string until unregistered,
            // and a concurrent unregister at worst makes us unlink a path that is gone.
            unsafe { libc::unlink(c) };
        }
    }
    // SAFETY: signal and raise are async-signal-safe; the default action ends the process with
    // the signal's status, as if we had not caught it.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}

extern "C" fn on_bus_error(_: libc::c_int) {
    const MESSAGE: &[u8] = b"\nerror: the model file was truncated or replaced while tvl had it mapped (SIGBUS); \
        nothing read from it can be trusted. Run `tvl verify FILE` once it is complete again.\n";
    // SAFETY: write and _exit are async-signal-safe; MESSAGE is a static buffer.
    unsafe {
        libc::write(2, MESSAGE.as_ptr().cast(), MESSAGE.len());
        libc::_exit(1);
    }
}

/// For programs (the `tvl` binary): on SIGINT/SIGTERM remove the temporary files being written,
/// then die of the signal; on SIGBUS (a mapped file truncated underneath) print why and exit 1
/// instead of dumping core. A library does not install handlers by itself.
pub fn install_signal_handlers() {
    // SAFETY: the handlers only call async-signal-safe functions (see each one).
    unsafe {
        libc::signal(libc::SIGINT, on_terminate as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_terminate as *const () as libc::sighandler_t);
        libc::signal(libc::SIGBUS, on_bus_error as *const () as libc::sighandler_t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temporary directory, removed again when the test
    /// is done (a passing run used to leave one per test and run behind in /tmp).
    struct Scratch(PathBuf);

    impl std::ops::Deref for Scratch {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir(name: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("tvl-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }

    #[test]
    fn only_regular_files_are_read_and_reads_are_bounded() {
        let d = dir("read");
        let e = open_regular(&d).unwrap_err().to_string();
        assert!(e.contains("is a directory, not a regular file"), "{e}");
        let fifo = d.join("fifo");
        let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid C string path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = open_regular(&fifo).unwrap_err().to_string();
        assert!(e.contains("named pipe"), "{e}");
        let e = open_regular(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(e.contains("a device"), "{e}");
        std::fs::write(d.join("big"), [0u8; 100]).unwrap();
        let e = read_bounded(&d.join("big"), 99, "tokenizer").unwrap_err().to_string();
        assert!(e.contains("100 bytes") && e.contains("99"), "{e}");
        assert_eq!(read_bounded(&d.join("big"), 100, "tokenizer").unwrap().len(), 100);
    }

    #[test]
    fn outputs_never_replace_their_input_or_a_non_file() {
        let d = dir("output");
        let input = d.join("in.bin");
        std::fs::write(&input, b"x").unwrap();
        std::fs::hard_link(&input, d.join("hard.bin")).unwrap();
        std::os::unix::fs::symlink(&input, d.join("soft.bin")).unwrap();
        let dotted = d.join(".").join("in.bin");
        for out in [input.clone(), dotted, d.join("hard.bin")] {
            let e = check_output(&out, &[&input]).unwrap_err().to_string();
            assert!(e.contains("is the input"), "{}: {e}", out.display());
        }
        let e = check_output(&d.join("soft.bin"), &[&input]).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        let e = check_output(Path::new("/dev/null"), &[&input]).unwrap_err().to_string();
        assert!(e.contains("a device"), "{e}");
        check_output(&d.join("new.tvl"), &[&input]).unwrap();
    }

    #[test]
    fn partial_files_are_exclusive_and_cleaned_up() {
        let d = dir("partial");
        let out = d.join("m.tvl");
        let (partial, _file) = PartialFile::create(&out).unwrap();
        let name = partial.path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(".m.tvl.") && name.ends_with(".partial"), "{name}");
        assert_eq!(remove_stale_partials(&d), 0, "a live process's file is kept");
        let path = partial.path.clone();
        drop(partial);
        assert!(!path.exists());
        // A file of a process that cannot exist: Linux pids are at most 2^22.
        let stale = d.join(".m.tvl.4194305-00000000deadbeef.partial");
        std::fs::write(&stale, b"x").unwrap();
        assert_eq!(remove_stale_partials(&d), 1);
        assert!(!stale.exists());
    }
}
