//! One incoming object on its way to disk: Part-10 meta, then dataset bytes streamed
//! into a spool file while BLAKE3 and the key-attribute parser run over them; on
//! `finish`, fdatasync and a rename into the content-addressed object store.
//!
//! A writer that is dropped unfinished deletes its spool file: nothing half-written
//! survives an abort.
//!
//! Durability "fsync" does not sync per object: the group committer makes a whole
//! batch's files and renames durable with one `sync_filesystem` before its index
//! commit (docs/decisions/0031). With `write_behind` the spool starts the disk
//! writes of every MiB as it lands, and of the rest when `finish` keeps the file, so
//! that sync finds the data on its way and waits only for what is left
//! (docs/decisions/0036).

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, IoSlice, Read, Write};
use std::path::{Path, PathBuf};

use crate::dataset::{HeadParser, Syntax};
use crate::error::{CoreError, Result};
use crate::part10::{self, Meta};

/// PDV pieces (16 KiB from DCMTK's default PDU) coalesce into writes of this size:
/// measured here, 1 MiB writes cost 0.34 CPU-s/GB and 64 KiB ones 0.41. One max-size
/// PDU's worth keeps memory per association O(PDU size).
const WRITE_BUFFER: usize = 256 * 1024;

/// A piece at least this large goes from the receive buffer straight to the kernel,
/// in one `writev(2)` with what is buffered before it: copying it into the buffer
/// first cost a memcpy of every byte, about a fifth of the user-space instructions
/// per object (callgrind); flushing the buffer in a write of its own made two
/// syscalls of one whenever a read ended mid-PDU (decision 34).
const DIRECT_WRITE: usize = 64 * 1024;

/// With write-behind, the disk writes start once this much has gathered (and at
/// the end): each start costs a syscall and a round of block allocation and I/O
/// submission, so one per 64 KiB piece cost ~15% more CPU per GB, machine-wide.
const WRITE_BEHIND_STRIDE: u64 = 1024 * 1024;

/// The spool file and the small pieces waiting to be written to it.
#[derive(Debug)]
struct Coalesced {
    file: File,
    pending: Vec<u8>,
    /// Bytes handed to the kernel so far: where the next write lands.
    written: u64,
    /// With write-behind, where the bytes not yet sent on to the disk start.
    unsent: u64,
    write_behind: bool,
}

impl Coalesced {
    fn new(file: File, write_behind: bool) -> Self {
        Self {
            file,
            pending: Vec::with_capacity(WRITE_BUFFER),
            written: 0,
            unsent: 0,
            write_behind,
        }
    }

    /// `len` more bytes are in the page cache. With `write_behind`, start writing
    /// them to the disk, without waiting, once a stride has gathered.
    fn wrote(&mut self, len: usize) {
        self.written += len as u64;
        if self.written - self.unsent >= WRITE_BEHIND_STRIDE {
            self.send_rest();
        }
    }

    /// With `write_behind`, start the disk writes of what no stride has sent yet:
    /// at the end of a file that is kept (not of a message read back and deleted,
    /// nor of a duplicate, which would only be written to be removed).
    fn send_rest(&mut self) {
        let gathered = self.written - self.unsent;
        if self.write_behind && gathered > 0 {
            start_writeback(&self.file, self.unsent, gathered);
            self.unsent = self.written;
        }
    }

    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        if data.len() < DIRECT_WRITE && self.pending.len() + data.len() <= WRITE_BUFFER {
            self.pending.extend_from_slice(data);
            return Ok(());
        }
        let total = self.pending.len() + data.len();
        let mut slices = [IoSlice::new(&self.pending), IoSlice::new(data)];
        let mut left = &mut slices[..];
        IoSlice::advance_slices(&mut left, 0); // skips an empty buffer
        while !left.is_empty() {
            match self.file.write_vectored(left) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut left, n),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.pending.clear();
        self.wrote(total);
        Ok(())
    }

    /// Everything buffered handed to the kernel.
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.write_all(&self.pending)?;
        self.wrote(self.pending.len());
        self.pending.clear();
        Ok(())
    }
}

/// `sync_file_range(SYNC_FILE_RANGE_WRITE)`: queue the range's dirty pages for the
/// disk and return. Only a head start: it neither waits nor makes anything durable
/// (no metadata, no cache flush), so its result is not ours to act on; a write that
/// fails on the disk is reported by the sync that follows (`sync_filesystem`).
fn start_writeback(file: &File, start: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(nbytes)) = (i64::try_from(start), i64::try_from(len)) else {
            return;
        };
        // SAFETY: sync_file_range only reads the descriptor, which `file` keeps open
        // for the whole call; it touches no memory of ours.
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                offset,
                nbytes,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, start, len);
}

/// BLAKE3 fed in whole, aligned 16 KiB runs. The bytes arrive as PDV pieces of any
/// length (16,372 from DCMTK's default PDU), and BLAKE3 hashes a piece that starts
/// or ends inside a run in small subtrees, with less of its 16-way SIMD in use:
/// measured here on 0.5 MB, pieces of 16,378 bytes hashed at 2.5 GB/s and of
/// 131,066 at 5.3, against 5.6 and 6.2 through this (decision 37).
#[derive(Debug, Default)]
struct AlignedHasher {
    hasher: blake3::Hasher,
    /// The start of the next run, copied while it is shorter than `HASH_RUN`.
    run: Vec<u8>,
}

/// 16 BLAKE3 chunks of 1 KiB: one pass of its widest (AVX-512) kernel.
const HASH_RUN: usize = 16 * 1024;

impl AlignedHasher {
    fn update(&mut self, mut data: &[u8]) {
        if !self.run.is_empty() {
            let take = (HASH_RUN - self.run.len()).min(data.len());
            self.run.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.run.len() < HASH_RUN {
                return;
            }
            self.hasher.update(&self.run);
            self.run.clear();
        }
        let whole = data.len() - data.len() % HASH_RUN;
        self.hasher.update(&data[..whole]); // aligned: straight from the piece
        if whole < data.len() {
            self.run.reserve_exact(HASH_RUN);
            self.run.extend_from_slice(&data[whole..]);
        }
    }

    fn finalize(&mut self) -> blake3::Hash {
        self.hasher.update(&self.run);
        self.run.clear();
        self.hasher.finalize()
    }
}

#[derive(Debug)]
pub struct SpoolWriter {
    path: PathBuf,
    file: Option<Coalesced>,
    hasher: AlignedHasher,
    head: HeadParser,
    meta_len: u64,
    dataset_len: u64,
    error: Option<CoreError>,
}

#[derive(Debug)]
pub struct StoredObject {
    pub path: PathBuf,
    /// BLAKE3 of the dataset bytes as sent (not the meta, which names the sender).
    pub hash: String,
    pub meta_len: u64,
    pub dataset_len: u64,
    /// An identical object was already stored: no second copy was made.
    pub existed: bool,
    pub attributes: Vec<(u32, Vec<u8>)>,
    pub parse_problem: Option<String>,
}

impl SpoolWriter {
    /// Never fails: a spool that cannot be created remembers why, keeps consuming the
    /// object's bytes so the association stays in step, and fails at `finish`.
    /// `write_behind`: start the disk writes as the bytes arrive (durability "fsync").
    #[must_use]
    pub fn create(path: PathBuf, meta: &[u8], syntax: Syntax, write_behind: bool) -> Self {
        let mut writer = Self {
            path,
            file: None,
            hasher: AlignedHasher::default(),
            head: HeadParser::new(syntax),
            meta_len: meta.len() as u64,
            dataset_len: 0,
            error: None,
        };
        let opened = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&writer.path);
        match opened {
            Ok(file) => {
                let mut file = Coalesced::new(file, write_behind);
                if let Err(e) = file.write(meta) {
                    writer.error = Some(e.into());
                }
                writer.file = Some(file);
            }
            Err(e) => writer.error = Some(e.into()),
        }
        writer
    }

    pub fn write(&mut self, data: &[u8]) {
        self.dataset_len += data.len() as u64;
        if self.error.is_some() {
            return;
        }
        self.hasher.update(data);
        if !self.head.is_done() {
            self.head.push(data);
        }
        if let Some(file) = self.file.as_mut() {
            if let Err(e) = file.write(data) {
                self.error = Some(e.into());
            }
        }
    }

    #[must_use]
    pub fn dataset_len(&self) -> u64 {
        self.dataset_len
    }

    /// Make the object durable (when `durable`) and move it to
    /// `objects_dir/<hash[..2]>/<hash>`; the `<hash[..2]>` folders must exist.
    pub fn finish(mut self, objects_dir: &Path, durable: bool) -> Result<StoredObject> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let Some(mut file) = self.file.take() else {
            return Err(CoreError::Io(std::io::Error::other(
                "spool file was not opened",
            )));
        };
        file.flush()?;
        let hash = self.hasher.finalize().to_hex().to_string();
        let folder = objects_dir.join(&hash[..2]);
        let dest = folder.join(&hash);
        if durable {
            file.file.sync_data()?; // before the name in objects/ points at the bytes
        }
        let existed = !rename_if_absent(&self.path, &dest)?;
        if !existed {
            file.send_rest();
        }
        drop(file);
        if existed {
            fs::remove_file(&self.path)?;
            if durable {
                // The same object may be arriving on another association right now,
                // renamed into place but its folder not yet synced: make both durable
                // here too, before our index record points at them (cheap when clean).
                File::open(&dest)?.sync_data()?;
                File::open(&folder)?.sync_all()?;
            }
        } else if durable {
            // The rename itself must reach the disk before the index points at it.
            File::open(&folder)?.sync_all()?;
        }
        // Moved or removed: nothing for Drop to clean up (saves a failing unlink per object).
        self.path = PathBuf::new();
        let head = std::mem::replace(&mut self.head, HeadParser::new(Syntax::ExplicitLittle));
        let parse_problem = head.problem().map(str::to_owned);
        Ok(StoredObject {
            path: dest,
            hash,
            meta_len: self.meta_len,
            dataset_len: self.dataset_len,
            existed,
            attributes: head.into_attributes(),
            parse_problem,
        })
    }
}

impl SpoolWriter {
    /// The dataset bytes of a small message that is read, not stored (an
    /// N-EVENT-REPORT's event information); the spool file is deleted on drop.
    pub fn into_dataset(mut self, limit: u64) -> Result<Vec<u8>> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if self.dataset_len > limit {
            return Err(CoreError::Dataset(format!(
                "{} bytes of dataset; at most {limit} are read into memory",
                self.dataset_len
            )));
        }
        if let Some(mut file) = self.file.take() {
            file.flush()?;
        }
        let mut file = File::open(&self.path)?;
        let mut skipped =
            std::io::copy(&mut (&mut file).take(self.meta_len), &mut std::io::sink())?;
        skipped = self.meta_len - skipped;
        if skipped != 0 {
            return Err(CoreError::Dataset(
                "spool file shorter than its meta".into(),
            ));
        }
        let mut data = Vec::with_capacity(usize::try_from(self.dataset_len).unwrap_or(0));
        file.read_to_end(&mut data)?;
        Ok(data)
    }
}

impl Drop for SpoolWriter {
    fn drop(&mut self) {
        // Unfinished (aborted or failed): make sure no spool remains. After `finish`
        // the path is empty.
        drop(self.file.take());
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A Part-10 file arriving in pieces (a STOW-RS upload): its File Meta Information is
/// read from the first bytes and replaced by ours, and the dataset streams into a
/// `SpoolWriter` as a C-STORE's does, so both are stored, hashed and parsed alike.
#[derive(Debug)]
pub struct Part10Upload {
    path: PathBuf,
    source_ae: String,
    write_behind: bool,
    head: Vec<u8>,
    writer: Option<(SpoolWriter, Meta)>,
}

impl Part10Upload {
    #[must_use]
    pub fn new(path: PathBuf, source_ae: &str, write_behind: bool) -> Self {
        Self {
            path,
            source_ae: source_ae.to_owned(),
            write_behind,
            head: Vec::new(),
            writer: None,
        }
    }

    /// Errors only while the meta is being read (not Part 10, meta too long).
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        if let Some((writer, _)) = self.writer.as_mut() {
            writer.write(data);
            return Ok(());
        }
        self.head.extend_from_slice(data);
        if let Some((meta, start)) = part10::read_meta(&self.head)? {
            let ours = part10::file_meta(
                &meta.sop_class_uid,
                &meta.sop_instance_uid,
                &meta.transfer_syntax_uid,
                &self.source_ae,
            );
            let syntax = Syntax::from_uid(&meta.transfer_syntax_uid);
            let mut writer =
                SpoolWriter::create(self.path.clone(), &ours, syntax, self.write_behind);
            writer.write(&self.head[start..]);
            self.head = Vec::new();
            self.writer = Some((writer, meta));
        }
        Ok(())
    }

    /// The spool, ready to `finish`, and what its meta said.
    pub fn finish(self) -> Result<(SpoolWriter, Meta)> {
        self.writer.ok_or_else(|| {
            CoreError::Dataset("the file ended inside its File Meta Information".into())
        })
    }
}

/// Move `from` to `to` unless `to` exists: false (and nothing moved) when it does.
/// One `renameat2(RENAME_NOREPLACE)` where a `stat` of `to` and a `rename` took two
/// syscalls per object, with no window between them; filesystems without the flag
/// get the two.
fn rename_if_absent(from: &Path, to: &Path) -> std::io::Result<bool> {
    #[cfg(target_os = "linux")]
    {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let source = CString::new(from.as_os_str().as_bytes())?;
        let target = CString::new(to.as_os_str().as_bytes())?;
        // SAFETY: both paths are NUL-terminated strings that live across the call,
        // which only reads them; AT_FDCWD resolves them as `fs::rename` would.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                source.as_ptr(),
                libc::AT_FDCWD,
                target.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if rc == 0 {
            return Ok(true);
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EEXIST) => return Ok(false),
            Some(libc::EINVAL | libc::ENOSYS) => {} // no RENAME_NOREPLACE here
            _ => return Err(err),
        }
    }
    if to.exists() {
        return Ok(false);
    }
    fs::rename(from, to)?;
    Ok(true)
}

/// BLAKE3 of a file's bytes from `offset` on: re-checks a stored object's dataset.
pub fn hash_file(path: &Path, offset: u64) -> Result<String> {
    let mut file = File::open(path)?;
    let mut skipped = std::io::copy(&mut (&mut file).take(offset), &mut std::io::sink())?;
    if skipped < offset {
        skipped = offset - skipped;
        return Err(CoreError::Dataset(format!(
            "file is {skipped} bytes shorter than its meta header"
        )));
    }
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().to_hex().to_string())
}

/// Make every write and rename on the filesystem holding `path` durable: one
/// journal commit and one device flush for a whole group of objects, where
/// fdatasync and a folder fsync per object cost two each. Linux reports a
/// writeback error of that filesystem here (since 5.8), as fdatasync would.
pub fn sync_filesystem(path: &Path) -> Result<()> {
    let folder = File::open(path)?;
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: syncfs only reads the descriptor, which `folder` keeps open for the
        // whole call; it touches no memory of ours.
        if unsafe { libc::syncfs(folder.as_raw_fd()) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
    }
    #[cfg(not(target_os = "linux"))]
    folder.sync_all()?; // elsewhere only Linux's guarantee is missing: a full sync
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Removed with everything in it when the test ends, passed or failed.
    fn tempdir() -> tempfile::TempDir {
        tempfile::TempDir::new().unwrap()
    }

    #[test]
    fn stores_once_and_dedups() {
        let tmp = tempdir();
        let dir = tmp.path();
        let data = vec![5u8; 100_000];
        let mut stored = Vec::new();
        for i in 0..2 {
            let mut w = SpoolWriter::create(
                dir.join(format!("s{i}")),
                b"META",
                Syntax::ExplicitLittle,
                false,
            );
            for c in data.chunks(999) {
                w.write(c);
            }
            let hash = blake3::hash(&data).to_hex().to_string();
            fs::create_dir_all(dir.join(&hash[..2])).unwrap();
            stored.push(w.finish(dir, true).unwrap());
        }
        assert!(!stored[0].existed && stored[1].existed);
        assert_eq!(stored[0].hash, stored[1].hash);
        assert_eq!(fs::read(&stored[0].path).unwrap().len(), 100_004);
        assert_eq!(hash_file(&stored[0].path, 4).unwrap(), stored[0].hash);
        assert!(!dir.join("s0").exists() && !dir.join("s1").exists());
    }

    #[test]
    fn a_rename_never_replaces_what_is_there() {
        let tmp = tempdir();
        let dir = tmp.path();
        let (a, b, c) = (dir.join("a"), dir.join("b"), dir.join("c"));
        fs::write(&a, b"first").unwrap();
        fs::write(&b, b"second").unwrap();
        assert!(!rename_if_absent(&b, &a).unwrap());
        assert_eq!(fs::read(&a).unwrap(), b"first");
        assert!(b.exists());
        assert!(rename_if_absent(&b, &c).unwrap());
        assert_eq!(fs::read(&c).unwrap(), b"second");
        assert!(!b.exists());
    }

    #[test]
    fn small_and_large_pieces_land_in_order() {
        // Small pieces are buffered, large ones written directly: the buffered bytes
        // must reach the file before a large piece that follows them, and small ones
        // that overflow the buffer go out together with it.
        let tmp = tempdir();
        let dir = tmp.path();
        let sizes = [
            10,
            DIRECT_WRITE + 1,
            3,
            5,
            WRITE_BUFFER + 7,
            DIRECT_WRITE - 1,
            DIRECT_WRITE - 1,
            DIRECT_WRITE - 1,
            DIRECT_WRITE - 1,
            DIRECT_WRITE - 1,
            1,
        ];
        // With write-behind too: starting the disk writes changes no byte.
        for write_behind in [false, true] {
            let mut expected = b"META".to_vec();
            let spool = dir.join(format!("s-{write_behind}"));
            let mut w = SpoolWriter::create(spool, b"META", Syntax::ExplicitLittle, write_behind);
            for (n, size) in sizes.into_iter().enumerate() {
                let piece: Vec<u8> = (0..size).map(|i| (i * 7 + n) as u8).collect();
                w.write(&piece);
                expected.extend_from_slice(&piece);
                let file = w.file.as_ref().unwrap();
                assert_eq!(
                    file.written + file.pending.len() as u64,
                    expected.len() as u64
                );
            }
            let hash = blake3::hash(&expected[4..]).to_hex().to_string();
            fs::create_dir_all(dir.join(&hash[..2])).unwrap();
            let stored = w.finish(dir, false).unwrap();
            assert_eq!(stored.hash, hash);
            assert!(fs::read(&stored.path).unwrap() == expected);
            fs::remove_file(&stored.path).unwrap();
        }
    }

    #[test]
    fn the_aligned_hasher_agrees_with_blake3_whatever_the_pieces() {
        let data: Vec<u8> = (0..200_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let expected = blake3::hash(&data);
        let runs = [
            1,
            1023,
            HASH_RUN - 1,
            HASH_RUN,
            HASH_RUN + 1,
            16_372,
            131_066,
            200_000,
        ];
        for piece in runs {
            let mut hasher = AlignedHasher::default();
            for c in data.chunks(piece) {
                hasher.update(c);
            }
            assert_eq!(hasher.finalize(), expected, "pieces of {piece}");
        }
        // Mixed lengths, as PDVs of different PDUs and a last short one arrive.
        let mut hasher = AlignedHasher::default();
        let mut rest = &data[..];
        for n in [10, 70_000, 3, 16_384, 50_000, 1].iter().cycle() {
            let n = (*n).min(rest.len());
            hasher.update(&rest[..n]);
            rest = &rest[n..];
            if rest.is_empty() {
                break;
            }
        }
        assert_eq!(hasher.finalize(), expected);
        assert_eq!(AlignedHasher::default().finalize(), blake3::hash(b""));
    }

    #[test]
    fn small_dataset_reads_back_and_leaves_nothing() {
        let tmp = tempdir();
        let dir = tmp.path();
        let mut w = SpoolWriter::create(dir.join("s"), b"META", Syntax::ExplicitLittle, false);
        w.write(b"event ");
        w.write(b"information");
        assert_eq!(w.into_dataset(100).unwrap(), b"event information");
        assert!(!dir.join("s").exists());
        let mut big = SpoolWriter::create(dir.join("b"), b"META", Syntax::ExplicitLittle, false);
        big.write(&[0u8; 200]);
        assert!(big.into_dataset(100).is_err());
        assert!(!dir.join("b").exists());
    }

    #[test]
    fn dropped_writer_leaves_nothing() {
        let tmp = tempdir();
        let dir = tmp.path();
        let mut w = SpoolWriter::create(dir.join("s"), b"META", Syntax::ExplicitLittle, false);
        w.write(b"partial");
        drop(w);
        assert!(!dir.join("s").exists());
    }

    #[test]
    fn creation_failure_surfaces_at_finish() {
        let tmp = tempdir();
        let dir = tmp.path();
        let mut w = SpoolWriter::create(
            dir.join("missing/s"),
            b"META",
            Syntax::ExplicitLittle,
            false,
        );
        w.write(b"data");
        assert_eq!(w.dataset_len(), 4);
        assert!(matches!(w.finish(dir, false), Err(CoreError::Io(_))));
    }

    #[test]
    fn an_upload_is_stored_like_a_received_object() {
        let tmp = tempdir();
        let dir = tmp.path();
        let mut upload = Part10Upload::new(dir.join("u"), "STOW", false);
        let mut file = part10::file_meta(
            "1.2.840.10008.5.1.4.1.1.7",
            "9.8",
            "1.2.840.10008.1.2.1",
            "MOD",
        );
        let dataset = [0x08u8, 0x00, 0x60, 0x00, b'C', b'S', 2, 0, b'O', b'T'];
        file.extend_from_slice(&dataset);
        for piece in file.chunks(7) {
            upload.write(piece).unwrap();
        }
        let (writer, meta) = upload.finish().unwrap();
        assert_eq!(meta.sop_instance_uid, "9.8");
        assert_eq!(writer.dataset_len(), dataset.len() as u64);
        let hash = blake3::hash(&dataset).to_hex().to_string();
        fs::create_dir_all(dir.join(&hash[..2])).unwrap();
        let stored = writer.finish(dir, false).unwrap();
        assert_eq!(stored.hash, hash);
        let meta_ours = fs::read(&stored.path).unwrap();
        assert!(meta_ours.windows(4).any(|w| w == b"STOW"));
        assert!(Part10Upload::new(dir.join("x"), "", false)
            .finish()
            .is_err());
    }

    #[test]
    fn sync_filesystem_takes_a_folder_and_names_a_missing_one() {
        let tmp = tempdir();
        let dir = tmp.path();
        fs::write(dir.join("object"), b"bytes").unwrap();
        sync_filesystem(dir).unwrap();
        let missing = sync_filesystem(&dir.join("absent")).unwrap_err();
        assert!(missing.to_string().contains("No such file"), "{missing}");
    }
}
