//! An in-memory [`Storage`] for tests, modelled on what a real kernel does:
//! appended bytes are visible at once but only durable after a successful
//! sync; a failed sync leaves them in the "page cache" without making them
//! durable (Linux marks the pages clean, so a retry would lie); a new file's
//! directory entry is only durable after the directory is synced.
//! [`SimStorage::crash`] throws away everything that was not durable, as a
//! power loss would. Faults are switched on and off by the test.

use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Condvar, Mutex};

use super::storage::{AppendFile, ReadFile, Storage};

#[derive(Debug, Default)]
struct SimFile {
    data: Vec<u8>,
    /// Bytes `[0, synced)` survive a crash.
    synced: usize,
    /// The directory entry survives a crash.
    entry_durable: bool,
}

type FileRef = Arc<Mutex<SimFile>>;

#[derive(Debug, Default)]
struct SimInner {
    files: Mutex<BTreeMap<PathBuf, FileRef>>,
    fail_sync: AtomicBool,
    fail_write: AtomicBool,
    sync_paused: Mutex<bool>,
    sync_resumed: Condvar,
    file_syncs: AtomicU64,
    failed_syncs: AtomicU64,
}

/// Simulated, fault-injecting storage. Cloning shares the same files.
#[derive(Clone, Debug, Default)]
pub struct SimStorage {
    inner: Arc<SimInner>,
}

impl SimStorage {
    pub fn new() -> SimStorage {
        SimStorage::default()
    }

    /// While on, every file sync returns EIO and makes nothing durable.
    pub fn fail_sync(&self, on: bool) {
        self.inner.fail_sync.store(on, Ordering::SeqCst);
    }

    /// While on, every append writes half of its buffer (a torn write), then
    /// returns EIO.
    pub fn fail_write(&self, on: bool) {
        self.inner.fail_write.store(on, Ordering::SeqCst);
    }

    /// Makes file syncs block until [`SimStorage::resume_sync`]; lets tests
    /// pile up appends behind an in-flight fsync without relying on timing.
    pub fn pause_sync(&self) {
        *self.inner.sync_paused.lock() = true;
    }

    pub fn resume_sync(&self) {
        *self.inner.sync_paused.lock() = false;
        self.inner.sync_resumed.notify_all();
    }

    /// Successful file syncs so far (directory syncs not included).
    pub fn file_syncs(&self) -> u64 {
        self.inner.file_syncs.load(Ordering::SeqCst)
    }

    pub fn failed_syncs(&self) -> u64 {
        self.inner.failed_syncs.load(Ordering::SeqCst)
    }

    /// Power loss: every file loses its unsynced bytes, and files whose
    /// directory entry was never synced disappear.
    pub fn crash(&self) {
        let mut files = self.inner.files.lock();
        files.retain(|_, file| {
            let mut file = file.lock();
            let synced = file.synced;
            file.data.truncate(synced);
            file.entry_durable
        });
    }

    /// Current (visible) contents of a file.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let files = self.inner.files.lock();
        files.get(path).map(|file| file.lock().data.clone())
    }

    /// Replaces a file's contents, durably (for corruption tests).
    pub fn set_contents(&self, path: &Path, data: Vec<u8>) {
        let mut files = self.inner.files.lock();
        let len = data.len();
        files.insert(
            path.to_path_buf(),
            Arc::new(Mutex::new(SimFile {
                data,
                synced: len,
                entry_durable: true,
            })),
        );
    }

    fn get(&self, path: &Path) -> io::Result<FileRef> {
        self.inner
            .files
            .lock()
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, path.display().to_string()))
    }

    fn wait_while_paused(&self) {
        let mut paused = self.inner.sync_paused.lock();
        while *paused {
            self.inner.sync_resumed.wait(&mut paused);
        }
    }
}

struct SimAppend {
    storage: SimStorage,
    file: FileRef,
}

impl AppendFile for SimAppend {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut file = self.file.lock();
        if self.storage.inner.fail_write.load(Ordering::SeqCst) {
            file.data.extend_from_slice(&buf[..buf.len() / 2]);
            return Err(io::Error::other("simulated write failure"));
        }
        file.data.extend_from_slice(buf);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.storage.wait_while_paused();
        if self.storage.inner.fail_sync.load(Ordering::SeqCst) {
            self.storage
                .inner
                .failed_syncs
                .fetch_add(1, Ordering::SeqCst);
            return Err(io::Error::other("simulated fsync failure"));
        }
        let mut file = self.file.lock();
        file.synced = file.data.len();
        self.storage.inner.file_syncs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

struct SimRead {
    file: FileRef,
    pos: u64,
}

impl Read for SimRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let file = self.file.lock();
        let start = usize::try_from(self.pos)
            .unwrap_or(usize::MAX)
            .min(file.data.len());
        let n = buf.len().min(file.data.len() - start);
        buf[..n].copy_from_slice(&file.data[start..start + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for SimRead {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let len = self.file.lock().data.len() as i128;
        let target = match pos {
            SeekFrom::Start(p) => i128::from(p),
            SeekFrom::End(d) => len + i128::from(d),
            SeekFrom::Current(d) => i128::from(self.pos) + i128::from(d),
        };
        self.pos = u64::try_from(target)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "seek before start"))?;
        Ok(self.pos)
    }
}

impl Storage for SimStorage {
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let files = self.inner.files.lock();
        Ok(files
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| path.file_name()?.to_str().map(str::to_string))
            .collect())
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        let file: FileRef = Arc::default();
        self.inner
            .files
            .lock()
            .insert(path.to_path_buf(), Arc::clone(&file));
        Ok(Box::new(SimAppend {
            storage: self.clone(),
            file,
        }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        Ok(Box::new(SimAppend {
            storage: self.clone(),
            file: self.get(path)?,
        }))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadFile>> {
        Ok(Box::new(SimRead {
            file: self.get(path)?,
            pos: 0,
        }))
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let file = self.get(path)?;
        let mut file = file.lock();
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        file.data.truncate(len);
        file.synced = file.data.len();
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner
            .files
            .lock()
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, path.display().to_string()))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        for (path, file) in self.inner.files.lock().iter() {
            if path.parent() == Some(dir) {
                file.lock().entry_durable = true;
            }
        }
        Ok(())
    }
}
