//! State-directory backend: a directory of Kubernetes-format YAML manifests.
//!
//! - `.yaml`, `.yml` and `.json` files in any subdirectories (as kubectl reads a directory;
//!   editor backups such as `svc.yaml~` are not manifests); multi-document files (`---`) and
//!   `kind: List` files are fine. Names starting with `.` (files and directories) are ignored:
//!   that is where temp files of atomic writes and leafbridge's own bookkeeping
//!   (`.leafbridge/`) live.
//! - Objects are matched to a watched type by `apiVersion` + `kind`; a namespaced object without
//!   `metadata.namespace` is in `default`, as `kubectl apply` would put it.
//! - Changes are picked up from `notify` events (debounced) plus a periodic full rescan as a
//!   safety net (notify can miss events, e.g. on some network filesystems).
//! - A malformed file (bad YAML, a document without apiVersion/kind/name, or a matching document
//!   that does not deserialize) is logged and counted in
//!   `leafbridge_state_dir_malformed_manifests_total{kind}` and skipped as a whole: objects loaded
//!   from a good earlier version of that file stay, so a typo never deletes Services. A
//!   leafbridge object that fails its CRD's schema checks (`crd::validate_manifest`) counts as
//!   malformed too.
//! - A version of a file that drops objects is taken only after it stayed the same for
//!   [`SETTLE`]: an empty or cut-short read of a file being written, or the first half of a
//!   move between files, deletes nothing.
//! - Status writes change only the `status` block of each object's document (the rest of the
//!   file stays byte for byte; see `splice_status`), also inside `kind: List` files. They
//!   re-read the file right before writing, write a temp file next to the file (next to a
//!   symlink's target: the link stays), fsync it, check the original did not change meanwhile
//!   (else retry) and rename it over the original: readers never see half a file and a
//!   concurrent spec edit is never lost. Writers in several processes serialise on
//!   `.leafbridge/write.lock` (advisory lock).
//! - Events are appended as core/v1 Event YAML documents to `.leafbridge/events.yaml` (rotated to
//!   `events.yaml.1` past 8 MiB); repeats are aggregated with a count.
//! - Memory: one parse of the directory is shared by every watch and writer; each document is
//!   kept once, as compact JSON (see `Doc`), and a watch keeps no typed objects: it
//!   deserializes a document when it hands out the event carrying it. 10,000 small Services
//!   cost ~7 MiB (`examples/state_dir_rss.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event as KubeEvent, EventType, Reporter};
use kube::runtime::watcher::Event;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{StateError, StateObject};

/// Directory (inside the state directory) for leafbridge's own files.
pub const META_DIR: &str = ".leafbridge";
/// Event log, relative to the state directory.
pub const EVENTS_FILE: &str = ".leafbridge/events.yaml";
const EVENTS_ROTATE_BYTES: u64 = 8 << 20;
const DEBOUNCE: Duration = Duration::from_millis(25);
/// How long a version of a file that drops objects (an empty or cut-short read while someone
/// writes the file with `cmd > file`, the first half of a move between files, a deleted
/// file) must stay unchanged before its objects are deleted. Additions and edits are taken
/// at once.
pub const SETTLE: Duration = Duration::from_secs(2);
const WRITE_ATTEMPTS: usize = 8;

type Labels = Vec<(String, String)>;
/// (apiVersion, kind, namespace, name) of an object a status is written to.
type ObjectId = (String, String, Option<String>, String);
/// A queued status write and where to send its outcome (true: the file changed).
type StatusRequest = (
    ObjectId,
    Value,
    std::sync::mpsc::Sender<Result<bool, StateError>>,
);

/// A state directory shared by the watches and writers of one program.
#[derive(Debug)]
pub struct StateDir {
    root: PathBuf,
    rescan: Duration,
    write_lock: Mutex<()>,
    pending: Mutex<Vec<StatusRequest>>,
    /// Where an object was last found: (apiVersion, kind, namespace, name) -> file.
    hints: Mutex<HashMap<ObjectId, PathBuf>>,
    /// The one parsed view of the directory: every watch of every kind and every writer.
    shared: Mutex<Shared>,
    tmp_seq: AtomicU64,
    rescans: AtomicU64,
    /// Scans that listed the whole tree (tests: a burst of writes lists it once, not per write).
    listings: AtomicU64,
    /// Manifest files read by scans (tests: a status write that misses reads none).
    reads: AtomicU64,
    /// Recent Events by what they say, for aggregation (see [`StateDir::append_event`]).
    recent_events: Mutex<HashMap<String, RecentEvent>>,
    /// Set when a scan read a file while the shared lock was held (unit test).
    #[cfg(test)]
    read_under_lock: std::sync::atomic::AtomicBool,
    malformed: Family<Labels, Counter>,
    status_writes: Family<Labels, Counter>,
}

impl StateDir {
    /// Open `root`, creating it if missing. Rescans every 2 s besides notify events.
    pub fn open(root: PathBuf) -> Result<Self, StateError> {
        Self::open_with_rescan(root, Duration::from_secs(2))
    }

    pub fn open_with_rescan(root: PathBuf, rescan: Duration) -> Result<Self, StateError> {
        fs::create_dir_all(&root).map_err(|source| StateError::Io {
            path: root.clone(),
            source,
        })?;
        Ok(Self {
            root,
            rescan,
            write_lock: Mutex::new(()),
            pending: Mutex::default(),
            hints: Mutex::default(),
            shared: Mutex::default(),
            tmp_seq: AtomicU64::new(0),
            rescans: AtomicU64::new(0),
            listings: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            recent_events: Mutex::default(),
            #[cfg(test)]
            read_under_lock: Default::default(),
            malformed: Family::default(),
            status_writes: Family::default(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "leafbridge_state_dir_malformed_manifests",
            "Manifest files skipped because they could not be parsed (per watched kind)",
            self.malformed.clone(),
        );
        registry.register(
            "leafbridge_state_dir_status_writes",
            "Status writes to the state directory by outcome",
            self.status_writes.clone(),
        );
    }

    fn report_malformed(&self, kind: &str, path: &Path, reason: &str) {
        self.malformed
            .get_or_create(&vec![("kind".into(), kind.into())])
            .inc();
        tracing::warn!(file = %path.display(), %kind, %reason,
            "malformed manifest skipped; objects from its last good version are kept");
    }

    /// How many times the shared scan of this directory ran (tests: the watch goes idle).
    pub fn rescan_count(&self) -> u64 {
        self.rescans.load(Ordering::Relaxed)
    }

    /// Scans that listed the whole tree.
    pub fn listing_count(&self) -> u64 {
        self.listings.load(Ordering::Relaxed)
    }

    /// How many manifest files scans have read (tests, diagnostics).
    pub fn file_reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Malformed-manifest count for `kind` (tests, diagnostics).
    pub fn malformed_count(&self, kind: &str) -> u64 {
        self.malformed
            .get_or_create(&vec![("kind".into(), kind.into())])
            .get()
    }

    /// A watch of kind `K`: a view of the one shared scan of this directory (see
    /// [`Self::subscribe`]). A file is read and parsed once per change whatever the number of
    /// watches; each watch only picks its kind's documents out of the parsed file.
    pub(super) fn watch<K: StateObject>(
        self: &Arc<Self>,
    ) -> BoxStream<'static, Result<Event<K>, StateError>> {
        let (rx, snapshot, failing) = self.subscribe();
        let mut w = KindWatch::<K> {
            dir: self.clone(),
            files: BTreeMap::new(),
            current: BTreeMap::new(),
            queue: VecDeque::new(),
            listed: false,
            failed: false,
            kind: std::marker::PhantomData,
        };
        w.apply(&snapshot);
        match failing {
            // As a watch of an unreachable API server: an error, and no (empty) list.
            Some(reason) => w.fail(reason),
            None => w.list(),
        }
        Box::pin(futures::stream::unfold(
            (w, rx),
            |(mut w, mut rx)| async move {
                loop {
                    if let Some(p) = w.queue.pop_front() {
                        return Some((p.into_event(), (w, rx)));
                    }
                    let mut notes = vec![rx.recv().await?];
                    while let Ok(more) = rx.try_recv() {
                        notes.push(more);
                    }
                    let mut paths = BTreeSet::new();
                    for note in notes {
                        match note {
                            Note::Changed(batch) => paths.extend(batch.iter().cloned()),
                            Note::Failed(reason) => {
                                w.take(std::mem::take(&mut paths));
                                w.fail(reason);
                            }
                            Note::Recovered => {
                                w.take(std::mem::take(&mut paths));
                                w.recover();
                            }
                        }
                    }
                    w.take(paths);
                }
            },
        ))
    }

    /// Join the shared scan: bring it up to date (a file written just before the watch started
    /// is seen), register for its change batches and return the current parsed files. Starts
    /// the scanner task (notify + periodic rescan) if none runs.
    ///
    /// Also returns why the directory cannot be read, if it cannot right now.
    #[allow(clippy::type_complexity)]
    fn subscribe(
        self: &Arc<Self>,
    ) -> (
        mpsc::UnboundedReceiver<Note>,
        Vec<(PathBuf, FileChange)>,
        Option<Arc<str>>,
    ) {
        // The notify watch is registered before the scan: a change right after it is not missed.
        let scanner = {
            let mut guard = lock(&self.shared);
            let sh = &mut *guard;
            sh.poke.is_none().then(|| self.start_notify(sh))
        };
        self.scan(Scope::Quick);
        // What the scan published before we registered is in the snapshot.
        let mut guard = lock(&self.shared);
        let sh = &mut *guard;
        let snapshot = sh.changes(sh.files.keys().cloned().collect::<Vec<_>>());
        let (tx, rx) = mpsc::unbounded_channel();
        sh.subscribers.push(tx);
        let failing = sh.failing.clone();
        drop(guard);
        if let Some((watcher, prx)) = scanner {
            self.start_scanner(watcher, prx);
        }
        (rx, snapshot, failing)
    }

    /// The scanner's wake-up channel, fed by a notify watch of the directory (None: notify is
    /// unavailable, periodic rescans only).
    fn start_notify(
        &self,
        sh: &mut Shared,
    ) -> (
        Option<notify::RecommendedWatcher>,
        mpsc::UnboundedReceiver<Poke>,
    ) {
        let (ptx, prx) = mpsc::unbounded_channel::<Poke>();
        sh.poke = Some(ptx.clone());
        let root = self.root.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let poke = match &res {
                Ok(ev) if !is_relevant(&root, ev) => return,
                Ok(ev) => poke_for(&root, ev),
                Err(_) => Poke::All,
            };
            let _ = ptx.send(poke);
        })
        .and_then(|mut w| {
            notify::Watcher::watch(&mut w, &self.root, notify::RecursiveMode::Recursive).map(|()| w)
        });
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(dir = %self.root.display(), error = %e,
                    "cannot watch state directory for changes; relying on periodic rescans");
                None
            }
        };
        (watcher, prx)
    }

    /// The one scanner task of this directory: wakes on notify events (debounced), on a poke
    /// (our own write was overtaken) or on the periodic safety-net tick, rescans, and fans the
    /// changed files out to every watch. Ends when no watch is left.
    ///
    /// Notify events that name manifest files look at those files only: a burst of N writes
    /// (the controller's statuses) costs N stats and reads, not N listings of the whole tree.
    /// Anything else (a directory, an overflowed event queue) lists the tree.
    fn start_scanner(
        self: &Arc<Self>,
        watcher: Option<notify::RecommendedWatcher>,
        mut prx: mpsc::UnboundedReceiver<Poke>,
    ) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut watcher = watcher;
            let mut ticker = tokio::time::interval(me.rescan);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            let mut ticks = 0u64;
            loop {
                let due = lock(&me.shared).settle_due;
                let settle = async move {
                    match due {
                        Some(t) => tokio::time::sleep_until(t.into()).await,
                        None => std::future::pending().await,
                    }
                };
                let scope = tokio::select! {
                    () = settle => Scope::Quick,
                    n = prx.recv() => {
                        let Some(first) = n else { return; };
                        tokio::time::sleep(DEBOUNCE).await;
                        let mut scope = Scope::from(first);
                        while let Ok(more) = prx.try_recv() {
                            scope.add(more);
                        }
                        scope
                    }
                    // The periodic safety net checks stamps too; every 15th tick it compares
                    // contents (an edit that kept size and mtime, on a coarse-mtime filesystem).
                    _ = ticker.tick() => {
                        ticks += 1;
                        if ticks.is_multiple_of(15) { Scope::Full } else { Scope::Quick }
                    }
                };
                {
                    let mut sh = lock(&me.shared);
                    sh.subscribers.retain(|s| !s.is_closed());
                    if sh.subscribers.is_empty() {
                        sh.poke = None;
                        return;
                    }
                }
                let was_failing = lock(&me.shared).failing.is_some();
                me.scan(scope);
                // A directory that came back may be another inode (deleted and made anew):
                // watch it again, or only the periodic rescans would see its changes.
                if was_failing
                    && lock(&me.shared).failing.is_none()
                    && let Some(w) = watcher.as_mut()
                {
                    let _ = notify::Watcher::unwatch(w, &me.root);
                    if let Err(e) =
                        notify::Watcher::watch(w, &me.root, notify::RecursiveMode::Recursive)
                    {
                        tracing::warn!(dir = %me.root.display(), error = %e,
                            "cannot watch state directory for changes; relying on periodic rescans");
                    }
                }
            }
        });
    }

    /// Re-read changed files into the shared cache and tell the watches what changed. A quick
    /// scan lists the tree and skips files whose size, mtime and inode are unchanged; a full
    /// one compares every file's content; a scan of named paths (from notify events) looks at
    /// those files only. Unchanged content is not parsed again.
    ///
    /// The shared lock is held only to compare and to take results, never while listing,
    /// reading or parsing files: watches and status writers are not held up by a big tree. A
    /// file whose cache entry changed meanwhile (our own write) is left to the next scan.
    ///
    /// A version that drops objects the file's last good version held is taken only once it
    /// has stayed the same for [`SETTLE`] (see there); until then the watches keep the old
    /// objects and `settle_due` tells the scanner when to look again.
    ///
    /// A directory that cannot be listed, or a manifest that cannot be read, is not "objects
    /// deleted": everything stays, and the watches get an error until a listing scan reads the
    /// whole tree again (then they relist, as a Kubernetes watch does after an error).
    fn scan(&self, scope: Scope) {
        self.rescans.fetch_add(1, Ordering::Relaxed);
        let full = matches!(scope, Scope::Full);
        let targeted = match &scope {
            Scope::Paths(paths) => self.stamps_of(paths),
            _ => None,
        };
        let listing = targeted.is_none();
        let stamps: Vec<(PathBuf, Option<Stamp>)> = match targeted {
            Some(stamps) => stamps,
            None => {
                self.listings.fetch_add(1, Ordering::Relaxed);
                match list_manifest_files(&self.root) {
                    Ok(l) => l
                        .into_iter()
                        .map(|p| (stamp_of(&p), p))
                        .map(|(s, p)| (p, s))
                        .collect(),
                    Err(e) => {
                        let reason = format!("cannot list {}: {e}", self.root.display());
                        lock(&self.shared).set_health(&self.root, Some(reason), false);
                        return;
                    }
                }
            }
        };
        // Which files to read, with their cache generation and digest as of now.
        let mut changed = vec![];
        let to_read: Vec<(PathBuf, Option<Stamp>, u64, Option<Digest>)> = {
            let mut guard = lock(&self.shared);
            let sh = &mut *guard;
            let now = std::time::Instant::now();
            if listing {
                sh.settle_due = None;
                let gone: Vec<PathBuf> = sh
                    .files
                    .keys()
                    .filter(|p| stamps.binary_search_by(|(q, _)| q.cmp(p)).is_err())
                    .cloned()
                    .collect();
                for p in gone {
                    if sh.settled(&p, None, None, now) {
                        sh.files.remove(&p);
                        changed.push((p, FileChange::Gone));
                    }
                }
            }
            stamps
                .into_iter()
                .filter_map(|(path, stamp)| {
                    let e = sh.files.get(&path);
                    let skip = !full
                        && stamp.is_some()
                        && e.is_some_and(|e| e.stamp == stamp && e.unsettled.is_none());
                    (!skip).then(|| {
                        let (gen_, seen) = e.map_or((0, None), |e| (e.gen_, e.seen));
                        (path, stamp, gen_, seen)
                    })
                })
                .collect()
        };
        // Read and parse, unlocked.
        let mut problem = None;
        let read: Vec<_> = to_read
            .into_iter()
            .filter_map(|(path, stamp, gen_, seen)| {
                self.reads.fetch_add(1, Ordering::Relaxed);
                #[cfg(test)]
                if self.shared.try_lock().is_err() {
                    self.read_under_lock.store(true, Ordering::Relaxed);
                }
                let content = match fs::read(&path) {
                    Ok(c) => Some(c),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => {
                        problem
                            .get_or_insert_with(|| format!("cannot read {}: {e}", path.display()));
                        return None;
                    }
                };
                let parsed = content.map(|c| {
                    let d = digest(&c);
                    let raw = (seen != Some(d)).then(|| raw_documents(&c));
                    (c, d, raw)
                });
                Some((path, stamp, gen_, parsed))
            })
            .collect();
        let mut guard = lock(&self.shared);
        let sh = &mut *guard;
        let now = std::time::Instant::now();
        for (path, stamp, gen_, parsed) in read {
            if sh.files.get(&path).map_or(0, |e| e.gen_) != gen_ {
                continue;
            }
            let Some((content, d, raw)) = parsed else {
                if sh.files.contains_key(&path) && sh.settled(&path, None, None, now) {
                    sh.files.remove(&path);
                    changed.push((path, FileChange::Gone));
                }
                continue;
            };
            let entry = sh.files.entry(path.clone()).or_default();
            entry.stamp = stamp;
            let Some(raw) = raw else {
                // Back to the version we have: whatever was waiting to settle is void.
                entry.unsettled = None;
                continue;
            };
            if let Ok(values) = &raw
                && !sh.settled(&path, Some(d), Some(values), now)
            {
                continue;
            }
            let entry = sh.files.entry(path.clone()).or_default();
            changed.push((path, entry.set(&content, raw, None)));
        }
        sh.publish(changed);
        // Only a scan that saw the whole tree can tell it is readable again.
        if listing || problem.is_some() {
            sh.set_health(&self.root, problem, listing);
        }
    }

    /// The stamps of `paths` (None: the file is gone), or None when they cannot stand for a
    /// look at the tree: the root is unreadable, or one of them is a directory.
    #[allow(clippy::type_complexity)]
    fn stamps_of(&self, paths: &BTreeSet<PathBuf>) -> Option<Vec<(PathBuf, Option<Stamp>)>> {
        fs::read_dir(&self.root).ok()?;
        let mut out = Vec::with_capacity(paths.len());
        for p in paths {
            match fs::metadata(p) {
                Ok(m) if m.is_dir() => return None,
                Ok(m) if m.is_file() => out.push((p.clone(), stamp_from(&m))),
                // A fifo or a socket with a manifest's name is not one (as in a listing).
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => out.push((p.clone(), None)),
                Err(_) => return None,
            }
        }
        Some(out)
    }

    /// Every document of `path` if `content` is what the shared cache last saw there.
    fn cached_docs(&self, path: &Path, content: &[u8]) -> Option<Docs> {
        let seen = Some(digest(content));
        let sh = lock(&self.shared);
        sh.files.get(path).filter(|f| f.seen == seen)?.raw.clone()
    }

    /// Every document of `path` if `content` is what the shared cache last saw there (no
    /// YAML parse needed): the cached documents and their values.
    fn cached_documents(&self, path: &Path, content: &[u8]) -> Option<(Docs, Vec<Value>)> {
        let raw = self.cached_docs(path, content)?;
        // Parsing our own JSON cannot fail; if it did, the caller parses the file instead.
        let values = raw
            .iter()
            .map(|d| serde_json::from_str(&d.json).ok())
            .collect::<Option<_>>()?;
        Some((raw, values))
    }

    /// We just renamed `text` (documents `docs`) over `path`: update the shared cache and tell
    /// the watches directly instead of having the scanner read and parse it again. The notify
    /// event of the rename then finds an unchanged stamp and costs one `stat`. `kept`: the
    /// cached documents `docs` were made from and which of them the write changed (the others
    /// stay the very same shared documents).
    fn record_own_write(
        &self,
        path: &Path,
        written: Written,
        docs: Vec<Value>,
        kept: Option<(Docs, Vec<bool>)>,
    ) {
        let (text, stamp) = written;
        let mut guard = lock(&self.shared);
        let sh = &mut *guard;
        let entry = sh.files.entry(path.to_path_buf()).or_default();
        // `stamp` is the temp file's, which the rename keeps; anything else means someone
        // replaced the file right after us: let the scanner read what is there now.
        if stamp.is_none() || stamp_of(path) != stamp {
            entry.stamp = None;
            if let Some(p) = &sh.poke {
                let _ = p.send(Poke::Paths(vec![path.to_path_buf()]));
            }
            return;
        }
        entry.stamp = stamp;
        if entry.seen == Some(digest(&text)) {
            return;
        }
        let change = entry.set(&text, Ok(docs), kept);
        sh.publish(vec![(path.to_path_buf(), change)]);
    }

    /// See [`super::StateSource::apply_status`].
    ///
    /// Writers combine: a request is queued, and whoever holds the write lock applies every
    /// queued request, one read-modify-write per file. Start-up of a controller with thousands
    /// of Services in a few multi-document files then costs a few file rewrites, not thousands.
    pub fn apply_status(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        status: &Value,
    ) -> Result<(), StateError> {
        let key = (
            api_version.to_owned(),
            kind.to_owned(),
            namespace.map(str::to_owned),
            name.to_owned(),
        );
        let (tx, rx) = std::sync::mpsc::channel();
        lock(&self.pending).push((key, status.clone(), tx));
        {
            let _g = lock(&self.write_lock);
            let batch = std::mem::take(&mut *lock(&self.pending));
            if !batch.is_empty() {
                match self.lock_file() {
                    Ok(_flock) => self.apply_batch(batch),
                    Err(e) => {
                        for (_, _, tx) in batch {
                            let _ = tx.send(Err(StateError::Io {
                                path: self.root.join(META_DIR),
                                source: std::io::Error::other(e.to_string()),
                            }));
                        }
                    }
                }
            }
        }
        // Our request was applied by us or by the writer that held the lock after we queued it.
        let res = rx.recv().unwrap_or_else(|_| {
            Err(StateError::Contended {
                path: self.root.clone(),
            })
        });
        let outcome = match &res {
            Ok(true) => "written",
            Ok(false) => "unchanged",
            Err(StateError::NotFound { .. }) => "not_found",
            Err(_) => "error",
        };
        self.status_writes
            .get_or_create(&vec![("outcome".into(), outcome.into())])
            .inc();
        res.map(|_| ())
    }

    fn lock_file(&self) -> Result<File, StateError> {
        let meta = self.root.join(META_DIR);
        let io = |source| StateError::Io {
            path: meta.clone(),
            source,
        };
        create_inside(&self.root, &meta).map_err(io)?;
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(meta.join("write.lock"))
            .map_err(io)?;
        f.lock().map_err(io)?;
        Ok(f)
    }

    fn apply_batch(&self, batch: Vec<StatusRequest>) {
        let mut reindexed = false;
        let mut todo = batch;
        loop {
            let mut by_file: BTreeMap<PathBuf, Vec<StatusRequest>> = BTreeMap::new();
            let mut misses = vec![];
            {
                let hints = lock(&self.hints);
                for r in todo {
                    match hints.get(&r.0) {
                        Some(p) => by_file.entry(p.clone()).or_default().push(r),
                        None => misses.push(r),
                    }
                }
            }
            if !misses.is_empty() && !reindexed {
                self.reindex();
                reindexed = true;
                let hints = lock(&self.hints);
                for r in misses.drain(..) {
                    match hints.get(&r.0) {
                        Some(p) => by_file.entry(p.clone()).or_default().push(r),
                        None => not_found(r),
                    }
                }
            }
            misses.into_iter().for_each(not_found);
            let mut stale = vec![];
            let mut staged = vec![];
            let several = by_file.len() > 1;
            for (path, reqs) in by_file {
                match self.write_file(&path, reqs, several) {
                    FileWrite::Done(missing) => stale.extend(missing),
                    FileWrite::Staged(s) => staged.push(*s),
                }
            }
            stale.extend(self.commit_staged(staged));
            // Objects not where the hints said (moved between files): look once more.
            if stale.is_empty() || reindexed {
                stale.into_iter().for_each(not_found);
                return;
            }
            lock(&self.hints).clear();
            todo = stale;
        }
    }

    /// Where every object is, from the shared cache of parsed files: a scan brings it up to
    /// date first, which reads only files that changed (usually none), not the whole tree.
    fn reindex(&self) {
        let files: Vec<(PathBuf, Vec<Docs>)> = {
            self.scan(Scope::Quick);
            lock(&self.shared)
                .files
                .iter()
                .map(|(p, f)| {
                    // `raw` as written, `good` with `kind: List` items expanded.
                    (
                        p.clone(),
                        f.raw.iter().chain(f.good.iter()).cloned().collect(),
                    )
                })
                .collect()
        };
        let mut h = HashMap::new();
        for (p, docs) in files {
            for d in docs.iter().flat_map(|d| d.iter()) {
                let field = |f: &Option<Arc<str>>| f.as_deref().map(str::to_owned);
                let (Some(api), Some(kind), Some(name)) =
                    (field(&d.api_version), field(&d.kind), field(&d.name))
                else {
                    continue;
                };
                match field(&d.namespace) {
                    Some(ns) => {
                        h.insert((api, kind, Some(ns), name), p.clone());
                    }
                    None => {
                        // Either cluster-scoped or namespaced in `default`.
                        h.insert((api.clone(), kind.clone(), None, name.clone()), p.clone());
                        h.insert((api, kind, Some("default".into()), name), p.clone());
                    }
                }
            }
        }
        *lock(&self.hints) = h;
    }

    /// Apply `reqs` to one file atomically. Done: the requests whose object is not in it.
    /// With `stage`, a file that changes is left written to its temp file, not yet durable
    /// nor renamed ([`Self::commit_staged`] finishes a batch of them with one sync).
    fn write_file(&self, path: &Path, mut reqs: Vec<StatusRequest>, stage: bool) -> FileWrite {
        // Someone is (probably) still writing it (`cmd > file`): renaming our version over it
        // now would lose the rest of their write. The caller retries.
        if lock(&self.shared)
            .files
            .get(path)
            .is_some_and(|f| f.unsettled.is_some())
        {
            for (_, _, tx) in reqs {
                let _ = tx.send(Err(StateError::Contended {
                    path: path.to_path_buf(),
                }));
            }
            return FileWrite::Done(vec![]);
        }
        for _ in 0..WRITE_ATTEMPTS {
            // Re-read right before writing (a spec edit since is never lost); parse only if it
            // is not what the shared cache already holds (usually: our own last write).
            let Ok(content) = fs::read(path) else {
                return FileWrite::Done(reqs);
            };
            let (cached, docs) = match self.cached_documents(path, &content) {
                Some((cached, values)) => (Some(cached), Some(values)),
                None => (None, all_documents(&content)),
            };
            let Some(mut docs) = docs else {
                for (_, _, tx) in reqs {
                    let _ = tx.send(Err(StateError::Malformed {
                        path: path.to_path_buf(),
                        reason: "the manifest does not parse; status not written".into(),
                    }));
                }
                return FileWrite::Done(vec![]);
            };
            let mut outcome = Vec::with_capacity(reqs.len());
            let mut changed = false;
            let mut touched = vec![false; docs.len()];
            for (key, status, _) in &reqs {
                let Some((idx, item)) = find_document(&docs, key) else {
                    outcome.push(None);
                    continue;
                };
                let doc = match item {
                    None => &mut docs[idx],
                    Some(i) => &mut docs[idx]["items"][i],
                };
                let old = doc.get("status").cloned();
                let mut new_status = match &old {
                    Some(Value::Object(m)) => m.clone(),
                    _ => serde_json::Map::new(),
                };
                if let Value::Object(m) = status {
                    for (k, v) in m {
                        new_status.insert(k.clone(), v.clone());
                    }
                }
                let new_status = Value::Object(new_status);
                if old.as_ref() == Some(&new_status)
                    || (old.is_none() && new_status == Value::Object(Default::default()))
                {
                    outcome.push(Some(false));
                    continue;
                }
                if let Some(m) = doc.as_object_mut() {
                    m.insert("status".into(), new_status);
                }
                changed = true;
                touched[idx] = true;
                outcome.push(Some(true));
            }
            if changed {
                let tmp = match self.stage_file(path, &content, &docs, &touched) {
                    Ok(tmp) => tmp,
                    Err(e) => {
                        fail_all(reqs, path, &e);
                        return FileWrite::Done(vec![]);
                    }
                };
                let staged = Staged {
                    path: path.to_path_buf(),
                    tmp,
                    expected: content,
                    docs,
                    kept: cached.map(|c| (c, touched)),
                    reqs,
                    outcome,
                };
                if stage {
                    return FileWrite::Staged(Box::new(staged));
                }
                match staged.tmp.sync() {
                    Ok(()) => {}
                    Err(e) => {
                        let _ = fs::remove_file(&staged.tmp.path);
                        fail_all(staged.reqs, path, &e);
                        return FileWrite::Done(vec![]);
                    }
                }
                match self.commit(staged) {
                    Commit::Done(missing, dir) => {
                        sync_dir(&dir);
                        return FileWrite::Done(missing);
                    }
                    // Changed under us: start over from the new version.
                    Commit::Retry(r) => {
                        reqs = r;
                        continue;
                    }
                }
            }
            return FileWrite::Done(answer(reqs, outcome));
        }
        for (_, _, tx) in reqs {
            let _ = tx.send(Err(StateError::Contended {
                path: path.to_path_buf(),
            }));
        }
        FileWrite::Done(vec![])
    }

    /// Finish a batch of staged file writes: one sync of the filesystem makes every temp
    /// file durable (instead of one fsync each), then each is renamed over its file unless
    /// that changed meanwhile (then it is written again on its own), then each directory
    /// is synced once. Returns the requests whose object was not found.
    fn commit_staged(&self, staged: Vec<Staged>) -> Vec<StatusRequest> {
        if staged.is_empty() {
            return vec![];
        }
        let synced = match staged.as_slice() {
            [one] => one.tmp.sync(),
            _ => File::open(&self.root)
                .and_then(|d| nix::unistd::syncfs(&d).map_err(std::io::Error::from)),
        };
        let mut missing = vec![];
        let mut dirs = BTreeSet::new();
        for s in staged {
            if let Err(e) = &synced {
                let _ = fs::remove_file(&s.tmp.path);
                fail_all(
                    s.reqs,
                    &s.path,
                    &StateError::Io {
                        path: s.tmp.path.clone(),
                        source: std::io::Error::new(e.kind(), e.to_string()),
                    },
                );
                continue;
            }
            let path = s.path.clone();
            match self.commit(s) {
                Commit::Done(m, dir) => {
                    missing.extend(m);
                    dirs.insert(dir);
                }
                Commit::Retry(reqs) => match self.write_file(&path, reqs, false) {
                    FileWrite::Done(m) => missing.extend(m),
                    FileWrite::Staged(_) => unreachable!("not staged"),
                },
            }
        }
        dirs.iter().for_each(|d| sync_dir(d));
        missing
    }

    /// Rename a durable temp file over its file unless the file no longer holds what the
    /// new version was made from (someone edited it: their edit must not be lost).
    fn commit(&self, s: Staged) -> Commit {
        let Staged {
            path,
            tmp,
            expected,
            docs,
            kept,
            reqs,
            outcome,
        } = s;
        if fs::read(&tmp.target).ok().as_deref() != Some(expected.as_slice()) {
            let _ = fs::remove_file(&tmp.path);
            return Commit::Retry(reqs);
        }
        if let Err(source) = fs::rename(&tmp.path, &tmp.target) {
            let _ = fs::remove_file(&tmp.path);
            let e = StateError::Io {
                path: tmp.target.clone(),
                source,
            };
            fail_all(reqs, &path, &e);
            return Commit::Done(vec![], tmp.dir);
        }
        self.record_own_write(&path, (tmp.text, tmp.stamp), docs, kept);
        Commit::Done(answer(reqs, outcome), tmp.dir)
    }

    /// Write the new version of `path` (`docs`, made from `expected`) to a temp file next to
    /// it (next to a symlink's target: the link stays). Neither synced nor renamed yet.
    fn stage_file(
        &self,
        path: &Path,
        expected: &[u8],
        docs: &[Value],
        touched: &[bool],
    ) -> Result<TempFile, StateError> {
        let malformed = |reason: String| StateError::Malformed {
            path: path.to_path_buf(),
            reason,
        };
        // Only the `status` blocks change; the rest stays as the operator wrote it. When the
        // file cannot be cut into documents safely, every document is written out anew.
        let json = path.extension().is_some_and(|e| e == "json") && docs.len() == 1;
        let text = match std::str::from_utf8(expected)
            .ok()
            .filter(|_| !json)
            .and_then(|t| splice_documents(t, docs, touched))
        {
            Some(t) => t,
            // A JSON manifest stays JSON (its keys come out sorted).
            None if json => {
                let mut t =
                    serde_json::to_string_pretty(&docs[0]).map_err(|e| malformed(e.to_string()))?;
                t.push('\n');
                t
            }
            None => {
                let mut text = String::new();
                for (i, d) in docs.iter().enumerate() {
                    if i > 0 {
                        text.push_str("---\n");
                    }
                    text.push_str(
                        &crate::yaml::to_string(d).map_err(|e| malformed(e.to_string()))?,
                    );
                }
                text
            }
        };
        // A symlinked manifest stays a symlink: the new version replaces its target.
        let target = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let path = target.as_path();
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        let fname = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(
            ".{fname}.leafbridge-tmp-{}-{}",
            std::process::id(),
            self.tmp_seq.fetch_add(1, Ordering::Relaxed)
        ));
        let io = |source| StateError::Io {
            path: tmp.clone(),
            source,
        };
        let stamp = {
            let mut f = File::create(&tmp).map_err(io)?;
            f.write_all(text.as_bytes()).map_err(io)?;
            f.metadata().ok().and_then(|m| stamp_from(&m))
        };
        Ok(TempFile {
            target: path.to_path_buf(),
            dir,
            path: tmp,
            text: text.into_bytes(),
            stamp,
        })
    }

    /// Append one Event document to the events file.
    ///
    /// A repeat of a recent Event (same object, type, reason, message and reporter) is
    /// aggregated as the API server does: it keeps the first one's name and
    /// `firstTimestamp`, with `count` and `lastTimestamp` brought up to date. The updated
    /// Event is appended (the last document of a name is its current state) only when the
    /// count reaches a power of two or a minute after the last append, so a Service that
    /// fails every few seconds adds about one document a minute, not one per failure.
    pub fn append_event(&self, doc: &Value) -> Result<(), StateError> {
        let mut doc = doc.clone();
        let key = serde_json::json!([
            doc["involvedObject"],
            doc["type"],
            doc["reason"],
            doc["message"],
            doc["reportingComponent"],
            doc["reportingInstance"],
        ])
        .to_string();
        {
            let mut recent = lock(&self.recent_events);
            let now = std::time::Instant::now();
            if recent.len() > 4096 {
                recent.retain(|_, r| now.duration_since(r.appended) < EVENT_AGGREGATION);
            }
            match recent.get_mut(&key) {
                Some(r) if now.duration_since(r.appended) < EVENT_AGGREGATION => {
                    r.count += 1;
                    doc["metadata"]["name"] = r.name.clone().into();
                    doc["firstTimestamp"] = r.first.clone();
                    doc["count"] = r.count.into();
                    if !r.count.is_power_of_two()
                        && now.duration_since(r.appended) < Duration::from_secs(60)
                    {
                        return Ok(());
                    }
                    r.appended = now;
                }
                _ => {
                    recent.insert(
                        key,
                        RecentEvent {
                            name: doc["metadata"]["name"]
                                .as_str()
                                .unwrap_or_default()
                                .to_owned(),
                            first: doc["firstTimestamp"].clone(),
                            count: 1,
                            appended: now,
                        },
                    );
                }
            }
        }
        let doc = &doc;
        let meta = self.root.join(META_DIR);
        let path = self.root.join(EVENTS_FILE);
        let io = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        create_inside(&self.root, &meta).map_err(io)?;
        if fs::metadata(&path).is_ok_and(|m| m.len() > EVENTS_ROTATE_BYTES) {
            let _ = fs::rename(&path, meta.join("events.yaml.1"));
        }
        let yaml = crate::yaml::to_string(doc).map_err(|e| StateError::Malformed {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        // One write call per document: O_APPEND keeps concurrent writers' documents whole.
        f.write_all(format!("---\n{yaml}").as_bytes()).map_err(io)?;
        Ok(())
    }
}

/// Repeats of an Event within this time are aggregated into it.
const EVENT_AGGREGATION: Duration = Duration::from_secs(600);

/// An Event recently appended to the event log.
#[derive(Debug)]
struct RecentEvent {
    name: String,
    first: Value,
    count: u64,
    appended: std::time::Instant,
}

/// A 128-bit digest of a file's content: unchanged content is recognised without keeping a
/// copy of every file. SipHash under keys drawn at random once per process, so nobody can
/// craft two contents that collide.
type Digest = (u64, u64);

fn digest(content: &[u8]) -> Digest {
    use std::hash::BuildHasher;
    static KEYS: std::sync::OnceLock<[std::hash::RandomState; 2]> = std::sync::OnceLock::new();
    let [a, b] =
        KEYS.get_or_init(|| [std::hash::RandomState::new(), std::hash::RandomState::new()]);
    (a.hash_one(content), b.hash_one(content))
}

/// (size, mtime, inode) of a file: unchanged stamp, unchanged file (checked by content on the
/// periodic full rescan anyway).
type Stamp = (u64, std::time::SystemTime, u64);
/// What a status write put in a file: its bytes and the file's stamp after the rename.
type Written = (Vec<u8>, Option<Stamp>);

/// The new version of a manifest, written to a temp file beside it.
#[derive(Debug)]
struct TempFile {
    /// The file it replaces (a symlink's target).
    target: PathBuf,
    dir: PathBuf,
    path: PathBuf,
    text: Vec<u8>,
    stamp: Option<Stamp>,
}

impl TempFile {
    fn sync(&self) -> std::io::Result<()> {
        File::open(&self.path)?.sync_all()
    }
}

/// A status write whose temp file is written: what it replaces and whom to answer.
#[derive(Debug)]
struct Staged {
    path: PathBuf,
    tmp: TempFile,
    expected: Vec<u8>,
    docs: Vec<Value>,
    kept: Option<(Docs, Vec<bool>)>,
    reqs: Vec<StatusRequest>,
    /// Per request: Some(changed) if its object is in the file, None if not.
    outcome: Vec<Option<bool>>,
}

#[derive(Debug)]
enum FileWrite {
    /// Answered; these requests' objects are not in the file.
    Done(Vec<StatusRequest>),
    Staged(Box<Staged>),
}

enum Commit {
    /// Renamed (or failed and answered), in this directory; requests not found.
    Done(Vec<StatusRequest>, PathBuf),
    /// The file changed meanwhile: write it again.
    Retry(Vec<StatusRequest>),
}

/// Answer the requests whose object was found; return the others.
fn answer(reqs: Vec<StatusRequest>, outcome: Vec<Option<bool>>) -> Vec<StatusRequest> {
    let mut missing = vec![];
    for (r, o) in reqs.into_iter().zip(outcome) {
        match o {
            Some(written) => {
                let _ = r.2.send(Ok(written));
            }
            None => missing.push(r),
        }
    }
    missing
}

fn fail_all(reqs: Vec<StatusRequest>, path: &Path, e: &dyn std::fmt::Display) {
    for (_, _, tx) in reqs {
        let _ = tx.send(Err(StateError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        }));
    }
}

/// Make renames in `dir` durable.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// One manifest file as the shared scan last saw it.
#[derive(Debug, Default)]
struct CachedFile {
    stamp: Option<Stamp>,
    /// Digest of the content last read or written (good or bad): unchanged content is not
    /// parsed (or reported) again.
    seen: Option<Digest>,
    /// Every document of `seen`, as written (status writes start from these); None: `seen`
    /// does not parse.
    raw: Option<Docs>,
    /// The documents of the last good version, `kind: List` expanded: what watches see.
    good: Option<Docs>,
    /// Why `seen` is malformed, if it is.
    error: Option<Arc<str>>,
    /// A newer version that drops objects, waiting to settle: its digest (None: the file is
    /// gone) and when it was first seen.
    unsettled: Option<(Option<Digest>, std::time::Instant)>,
    /// Bumped whenever the entry takes a version: a scan that read the file before does not
    /// overwrite a newer one (our own write) with what it read.
    gen_: u64,
}

impl CachedFile {
    /// Take `content` (parsed into `raw`) as the file's current version.
    /// `kept`: cached documents `raw` was made from and which of them changed since (see
    /// [`StateDir::record_own_write`]).
    fn set(
        &mut self,
        content: &[u8],
        raw: Result<Vec<Value>, String>,
        kept: Option<(Docs, Vec<bool>)>,
    ) -> FileChange {
        self.gen_ += 1;
        self.seen = Some(digest(content));
        let raw_values = match raw {
            Ok(r) => r,
            Err(reason) => {
                self.raw = None;
                let reason: Arc<str> = reason.into();
                self.error = Some(reason.clone());
                return FileChange::Malformed(reason);
            }
        };
        let mut names = HashSet::new();
        let kept = kept.filter(|(d, t)| d.len() == raw_values.len() && t.len() == d.len());
        let raw: Docs = Arc::new(
            raw_values
                .iter()
                .enumerate()
                .map(|(i, v)| match &kept {
                    Some((docs, touched)) if !touched[i] => docs[i].clone(),
                    _ => Doc::new(v, &mut names),
                })
                .collect(),
        );
        self.raw = Some(raw.clone());
        match expand_documents(&raw_values) {
            Ok(expanded) => {
                let good = match expanded {
                    Some(items) => {
                        Arc::new(items.iter().map(|v| Doc::new(v, &mut names)).collect())
                    }
                    None => raw,
                };
                self.good = Some(good.clone());
                self.error = None;
                FileChange::Docs(good)
            }
            Err(reason) => {
                let reason: Arc<str> = reason.into();
                self.error = Some(reason.clone());
                FileChange::Malformed(reason)
            }
        }
    }
}

/// One manifest document as the shared cache keeps it: what watches select on, and the
/// document as compact JSON. A `serde_json::Value` of a small Service takes ~3 KB (a B-tree
/// node per mapping), its JSON ~200 bytes; parsing the JSON again when the object changes (or
/// a status is written) costs microseconds. `Value`'s maps are sorted, so equal documents have
/// equal JSON.
struct Doc {
    api_version: Option<Arc<str>>,
    kind: Option<Arc<str>>,
    /// `metadata.namespace` as written.
    namespace: Option<Arc<str>>,
    name: Option<Arc<str>>,
    json: Box<str>,
}

// Not the content: it may be a Secret's.
impl std::fmt::Debug for Doc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Doc")
            .field("kind", &self.kind)
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("json_bytes", &self.json.len())
            .finish()
    }
}

impl Doc {
    /// `shared` holds the apiVersions, kinds and namespaces seen so far in the file: the
    /// documents of one file share one copy of each.
    fn new(v: &Value, shared: &mut HashSet<Arc<str>>) -> Arc<Doc> {
        let field = |ptr: &str| v.pointer(ptr).and_then(Value::as_str);
        let mut share = |ptr: &str| {
            let s = field(ptr)?;
            Some(shared.get(s).cloned().unwrap_or_else(|| {
                let a: Arc<str> = s.into();
                shared.insert(a.clone());
                a
            }))
        };
        Arc::new(Doc {
            api_version: share("/apiVersion"),
            kind: share("/kind"),
            namespace: share("/metadata/namespace"),
            name: field("/metadata/name").map(Into::into),
            json: v.to_string().into_boxed_str(),
        })
    }

    /// Whether two documents say the same (usually the very same shared document).
    fn same(a: &Arc<Doc>, b: &Arc<Doc>) -> bool {
        Arc::ptr_eq(a, b) || a.json == b.json
    }
}

/// A file's documents, shared by the cache and every watch.
type Docs = Arc<Vec<Arc<Doc>>>;

/// What the shared scan found for one file, fanned out to every watch.
#[derive(Debug, Clone)]
enum FileChange {
    Gone,
    /// The file's documents (`kind: List` expanded).
    Docs(Docs),
    /// The file does not parse; watches keep what its last good version held.
    Malformed(Arc<str>),
}

/// The files one scan (or one own write) changed. Watches read their latest parsed version
/// from the shared cache when they get to it: a watch that lags behind takes several batches
/// at once and holds no stale copies of big files.
type Batch = Arc<Vec<PathBuf>>;

/// What the scanner tells every watch.
#[derive(Debug, Clone)]
enum Note {
    Changed(Batch),
    /// The directory (or a manifest in it) cannot be read; nothing it held is dropped.
    Failed(Arc<str>),
    /// A listing scan read the whole tree again.
    Recovered,
}

/// Why the scanner should look: a notify event naming manifest files (or our own write
/// that was overtaken), or anything else (look at the whole tree).
#[derive(Debug)]
enum Poke {
    All,
    Paths(Vec<PathBuf>),
}

/// What one scan looks at.
#[derive(Debug)]
enum Scope {
    /// List the tree, read files whose stamp changed.
    Quick,
    /// List the tree, read every file.
    Full,
    /// These files only.
    Paths(BTreeSet<PathBuf>),
}

impl From<Poke> for Scope {
    fn from(p: Poke) -> Scope {
        match p {
            Poke::All => Scope::Quick,
            Poke::Paths(p) => Scope::Paths(p.into_iter().collect()),
        }
    }
}

impl Scope {
    fn add(&mut self, p: Poke) {
        match (&mut *self, p) {
            (Scope::Paths(set), Poke::Paths(more)) => set.extend(more),
            (Scope::Paths(_), Poke::All) => *self = Scope::Quick,
            _ => {}
        }
    }
}

/// The scope of a relevant notify event: the manifest files it names, or the whole tree if
/// it names anything else (a directory made, moved or removed, the root itself) or says
/// events were lost.
fn poke_for(root: &Path, ev: &notify::Event) -> Poke {
    if ev.need_rescan() || ev.paths.is_empty() {
        return Poke::All;
    }
    let mut files = Vec::with_capacity(ev.paths.len());
    for p in &ev.paths {
        let Ok(rel) = p.strip_prefix(root) else {
            return Poke::All;
        };
        if rel
            .components()
            .any(|c| c.as_os_str().to_string_lossy().starts_with('.'))
        {
            continue;
        }
        if rel.as_os_str().is_empty() || !is_manifest_name(p) {
            return Poke::All;
        }
        files.push(p.clone());
    }
    if files.is_empty() {
        return Poke::All;
    }
    Poke::Paths(files)
}

/// The parsed view of the directory shared by every watch and writer of one `StateDir`.
#[derive(Debug, Default)]
struct Shared {
    files: BTreeMap<PathBuf, CachedFile>,
    subscribers: Vec<mpsc::UnboundedSender<Note>>,
    /// Wakes the scanner task; Some while it runs.
    poke: Option<mpsc::UnboundedSender<Poke>>,
    /// Why the directory cannot be read right now (None: it can).
    failing: Option<Arc<str>>,
    /// When the earliest version waiting to settle may be taken.
    settle_due: Option<std::time::Instant>,
}

impl Shared {
    /// Whether the version of `path` with digest `d` (None: gone) and documents `values` may
    /// be taken now. One that keeps every object of the last good version may; one that
    /// drops some only after it stayed the same for [`SETTLE`].
    fn settled(
        &mut self,
        path: &Path,
        d: Option<Digest>,
        values: Option<&[Value]>,
        now: std::time::Instant,
    ) -> bool {
        let Some(entry) = self.files.get_mut(path) else {
            return true;
        };
        let keeps_all = match (&entry.good, values) {
            (None, _) => true,
            (Some(good), _) if good.is_empty() => true,
            (Some(_), None) => false,
            (Some(good), Some(values)) => {
                let items = match expand_documents(values) {
                    Ok(Some(items)) => items,
                    Ok(None) => values.to_vec(),
                    // Malformed: taken as such, which keeps the old objects anyway.
                    Err(_) => return true,
                };
                let ids: HashSet<[Option<&str>; 4]> = items.iter().map(doc_identity).collect();
                good.iter().all(|g| {
                    ids.contains(&[
                        g.api_version.as_deref(),
                        g.kind.as_deref(),
                        g.namespace.as_deref(),
                        g.name.as_deref(),
                    ])
                })
            }
        };
        if keeps_all {
            entry.unsettled = None;
            return true;
        }
        let since = match entry.unsettled {
            Some((ud, since)) if ud == d => since,
            _ => {
                entry.unsettled = Some((d, now));
                // Read it again when it may settle, whatever its stamp says.
                entry.stamp = None;
                now
            }
        };
        let due = since + SETTLE;
        if now >= due {
            entry.unsettled = None;
            return true;
        }
        tracing::debug!(file = %path.display(),
            "this version drops objects; keeping them until it settles");
        self.settle_due = Some(self.settle_due.map_or(due, |t| t.min(due)));
        false
    }

    /// What `paths` hold now, as changes for a watch.
    fn changes(&self, paths: impl IntoIterator<Item = PathBuf>) -> Vec<(PathBuf, FileChange)> {
        let mut out = vec![];
        for p in paths {
            let Some(f) = self.files.get(&p) else {
                out.push((p, FileChange::Gone));
                continue;
            };
            if let Some(g) = &f.good {
                out.push((p.clone(), FileChange::Docs(g.clone())));
            }
            if let Some(r) = &f.error {
                out.push((p, FileChange::Malformed(r.clone())));
            }
        }
        out
    }

    fn publish(&mut self, changes: Vec<(PathBuf, FileChange)>) {
        if changes.is_empty() {
            return;
        }
        let batch: Batch = Arc::new(changes.into_iter().map(|(p, _)| p).collect());
        self.subscribers
            .retain(|s| s.send(Note::Changed(batch.clone())).is_ok());
    }

    /// Record what a scan found about the directory's readability (`may_clear`: the scan
    /// listed the whole tree, so no problem means none is left) and tell the watches when
    /// that changes. Logged once per outage, not once per scan.
    fn set_health(&mut self, root: &Path, problem: Option<String>, may_clear: bool) {
        match (problem, &self.failing) {
            (Some(reason), None) => {
                tracing::warn!(dir = %root.display(), error = %reason,
                    "state directory unreadable; keeping every object it held");
                let reason: Arc<str> = reason.into();
                self.failing = Some(reason.clone());
                self.subscribers
                    .retain(|s| s.send(Note::Failed(reason.clone())).is_ok());
            }
            (None, Some(_)) if may_clear => {
                tracing::info!(dir = %root.display(), "state directory readable again");
                self.failing = None;
                self.subscribers.retain(|s| s.send(Note::Recovered).is_ok());
            }
            _ => {}
        }
    }
}

/// One watch's view: the documents of kind K per file and where each current object comes
/// from. Objects are kept as the shared documents, not as typed objects: a `K` is deserialized
/// when an event carrying it is emitted (see [`Pending`]).
struct KindWatch<K> {
    dir: Arc<StateDir>,
    files: BTreeMap<PathBuf, FileEntry>,
    current: BTreeMap<ObjKey, (Arc<Path>, Arc<Doc>)>,
    queue: VecDeque<Pending>,
    /// The initial list was handed out (not yet if the watch began while the directory was
    /// unreadable).
    listed: bool,
    /// An error was handed out since the last list.
    failed: bool,
    kind: std::marker::PhantomData<fn() -> K>,
}

impl<K: StateObject> KindWatch<K> {
    fn entry(&mut self, path: &Path) -> &mut FileEntry {
        self.files
            .entry(path.to_path_buf())
            .or_insert_with(|| FileEntry {
                path: path.into(),
                docs: None,
                reported: None,
                objects: vec![],
            })
    }

    /// Take a batch of file changes; returns the changed files with the objects they held.
    fn apply(&mut self, batch: &[(PathBuf, FileChange)]) -> Vec<(Arc<Path>, Vec<Arc<Doc>>)> {
        let kind = K::kind(&());
        let mut changed = vec![];
        for (path, change) in batch {
            match change {
                FileChange::Gone => {
                    if let Some(e) = self.files.remove(path) {
                        changed.push((e.path, e.objects));
                    }
                }
                FileChange::Malformed(reason) => {
                    let entry = self.entry(path);
                    if !entry
                        .reported
                        .as_ref()
                        .is_some_and(|r| Arc::ptr_eq(r, reason))
                    {
                        entry.reported = Some(reason.clone());
                        self.dir.report_malformed(&kind, path, reason);
                    }
                }
                FileChange::Docs(docs) => {
                    let entry = self.entry(path);
                    if entry.docs.as_ref().is_some_and(|d| Arc::ptr_eq(d, docs)) {
                        continue;
                    }
                    entry.docs = Some(docs.clone());
                    match parse_manifests::<K>(docs, &entry.objects) {
                        Ok(objects) => {
                            let old = std::mem::replace(&mut entry.objects, objects);
                            changed.push((entry.path.clone(), old));
                        }
                        Err(reason) => self.dir.report_malformed(&kind, path, &reason),
                    }
                }
            }
        }
        changed
    }

    /// The initial listing: every object, the last file (by path) winning when several files
    /// define one.
    /// Take what changed in `paths`: events for them, or (before the first list) only the
    /// files, which that list will read.
    fn take(&mut self, paths: BTreeSet<PathBuf>) {
        if paths.is_empty() {
            return;
        }
        let changes = lock(&self.dir.shared).changes(paths);
        let changed = self.apply(&changes);
        if self.listed {
            let evs = diff(
                &mut self.current,
                &self.files,
                changed,
                is_namespaced::<K>(),
            );
            self.queue.extend(evs);
        }
    }

    fn fail(&mut self, reason: Arc<str>) {
        self.failed = true;
        self.queue
            .push_back(Pending::Failed(self.dir.root.as_path().into(), reason));
    }

    /// The directory reads again: the first list if there was none yet, else a relist of the
    /// same objects (what changed meanwhile came as events), as a Kubernetes watch relists
    /// after an error. Consumers that keep their store through errors see nothing change.
    fn recover(&mut self) {
        if !self.listed {
            self.list();
        } else if std::mem::take(&mut self.failed) {
            self.queue.push_back(Pending::Init);
            for (path, d) in self.current.values() {
                self.queue
                    .push_back(Pending::InitApply(path.clone(), d.clone()));
            }
            self.queue.push_back(Pending::InitDone);
        }
    }

    fn list(&mut self) {
        self.listed = true;
        self.failed = false;
        let namespaced = is_namespaced::<K>();
        self.queue.push_back(Pending::Init);
        for entry in self.files.values() {
            for d in &entry.objects {
                let k = obj_key(d, namespaced);
                if self
                    .current
                    .insert(k.clone(), (entry.path.clone(), d.clone()))
                    .is_some()
                {
                    tracing::warn!(file = %entry.path.display(), namespace = ?k.0, name = %k.1,
                        "object defined in several files; the last file (by path) wins");
                }
            }
        }
        for (path, d) in self.current.values() {
            self.queue
                .push_back(Pending::InitApply(path.clone(), d.clone()));
        }
        self.queue.push_back(Pending::InitDone);
    }
}

struct FileEntry {
    path: Arc<Path>,
    /// The documents `objects` were taken from (an unchanged file is not looked at again).
    docs: Option<Docs>,
    /// The malformed version last reported (each bad version is reported once).
    reported: Option<Arc<str>>,
    /// The kind's documents in the last good version of the file.
    objects: Vec<Arc<Doc>>,
}

/// (namespace, name) of an object; namespace None for cluster-scoped kinds.
type ObjKey = (Option<Arc<str>>, Arc<str>);

/// A namespaced object without `metadata.namespace` is in `default`, as `kubectl apply` would
/// put it.
fn obj_key(d: &Doc, namespaced: bool) -> ObjKey {
    let ns = namespaced.then(|| d.namespace.clone().unwrap_or_else(|| "default".into()));
    (ns, d.name.clone().unwrap_or_else(|| "".into()))
}

/// An event to emit, holding the document until the consumer asks for it: a watch never holds
/// more typed objects than the one it hands out, however long the initial listing.
enum Pending {
    Init,
    InitApply(Arc<Path>, Arc<Doc>),
    InitDone,
    Apply(Arc<Path>, Arc<Doc>),
    Delete(Arc<Path>, Arc<Doc>),
    /// The state directory cannot be read (its root, and why).
    Failed(Arc<Path>, Arc<str>),
}

impl Pending {
    fn into_event<K: StateObject>(self) -> Result<Event<K>, StateError> {
        let object = |path: Arc<Path>, d: Arc<Doc>| {
            // Validated when the file was taken; this fails only if K changed meanwhile.
            parse_object::<K>(&d).map_err(|reason| StateError::Malformed {
                path: path.to_path_buf(),
                reason,
            })
        };
        Ok(match self {
            Pending::Init => Event::Init,
            Pending::InitDone => Event::InitDone,
            Pending::InitApply(p, d) => Event::InitApply(object(p, d)?),
            Pending::Apply(p, d) => Event::Apply(object(p, d)?),
            Pending::Delete(p, d) => Event::Delete(object(p, d)?),
            Pending::Failed(root, reason) => {
                return Err(StateError::Io {
                    path: root.to_path_buf(),
                    source: std::io::Error::other(reason.to_string()),
                });
            }
        })
    }
}

/// Events for the files that changed, updating `current`. Work is proportional to the changed
/// files, not to the directory. Deletes first: a consumer that frees on Delete and allocates on
/// Apply then reuses what a batch freed, in the same batch.
fn diff(
    current: &mut BTreeMap<ObjKey, (Arc<Path>, Arc<Doc>)>,
    files: &BTreeMap<PathBuf, FileEntry>,
    changed: Vec<(Arc<Path>, Vec<Arc<Doc>>)>,
    namespaced: bool,
) -> Vec<Pending> {
    let mut deletes = Vec::new();
    let mut applies = Vec::new();
    for (path, old) in &changed {
        let new: HashSet<ObjKey> = files
            .get(&**path)
            .map(|e| e.objects.iter().map(|d| obj_key(d, namespaced)).collect())
            .unwrap_or_default();
        for d in old {
            let k = obj_key(d, namespaced);
            if new.contains(&k) || current.get(&k).is_none_or(|(p, _)| p != path) {
                continue;
            }
            // Gone from this file; another file may still define it (rare: look).
            let elsewhere = files.values().rev().find_map(|e| {
                e.objects
                    .iter()
                    .find(|o| obj_key(o, namespaced) == k)
                    .map(|o| (e.path.clone(), o.clone()))
            });
            match elsewhere {
                Some((p, o)) => {
                    current.insert(k, (p.clone(), o.clone()));
                    applies.push(Pending::Apply(p, o));
                }
                None => {
                    current.remove(&k);
                    deletes.push(Pending::Delete(path.clone(), d.clone()));
                }
            }
        }
    }
    for (path, _) in &changed {
        let Some(entry) = files.get(&**path) else {
            continue;
        };
        for d in &entry.objects {
            let k = obj_key(d, namespaced);
            if current.get(&k).is_none_or(|(_, cd)| !Doc::same(cd, d)) {
                current.insert(k, (entry.path.clone(), d.clone()));
                applies.push(Pending::Apply(entry.path.clone(), d.clone()));
            }
        }
    }
    deletes.extend(applies);
    deletes
}

/// Create `dir` (and its parents) inside the state directory `root`, but never `root`
/// itself: a state directory that went away (an unmounted volume, a directory renamed) is an
/// outage to report, not an empty directory to start anew where it was.
pub fn create_inside(root: &Path, dir: &Path) -> std::io::Result<()> {
    if !fs::metadata(root).is_ok_and(|m| m.is_dir()) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("the state directory {} is missing", root.display()),
        ));
    }
    fs::create_dir_all(dir)
}

fn stamp_of(p: &Path) -> Option<Stamp> {
    stamp_from(&fs::metadata(p).ok()?)
}

fn stamp_from(m: &fs::Metadata) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    Some((m.len(), m.modified().ok()?, m.ino()))
}

/// Whether a notify event can change what the manifests say. Reads (ours included: every
/// rescan opens every file) and anything under hidden names (temp files of atomic writes, the
/// event log) cannot; without this filter the watch would wake itself up forever.
fn is_relevant(root: &Path, ev: &notify::Event) -> bool {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode};
    let kind_matters = match ev.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    };
    let hidden = |p: &PathBuf| {
        p.strip_prefix(root)
            .unwrap_or(p)
            .components()
            .any(|c| c.as_os_str().to_string_lossy().starts_with('.'))
    };
    kind_matters && (ev.paths.is_empty() || !ev.paths.iter().all(hidden))
}

fn is_hidden(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

/// Whether a file name is a manifest's, as kubectl reads a directory: `.yaml`, `.yml` or
/// `.json`. Editor backups and swap files (`svc.yaml~`, `#svc.yaml#`, `.svc.yaml.swp`) are not.
pub fn is_manifest_name(path: &Path) -> bool {
    !is_hidden(path)
        && path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
}

/// All manifest files under `root`, recursively, sorted; hidden names skipped, and only
/// `.yaml`, `.yml` and `.json` files (see [`is_manifest_name`]).
pub fn list_manifest_files(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            if is_hidden(&path) {
                continue;
            }
            let ft = match fs::metadata(&path) {
                Ok(m) => m.file_type(),
                Err(_) => continue,
            };
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_file() && is_manifest_name(&path) {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Every document of a file, as written (null documents dropped).
fn raw_documents(content: &[u8]) -> Result<Vec<Value>, String> {
    let text = std::str::from_utf8(content).map_err(|e| format!("not UTF-8: {e}"))?;
    crate::yaml::documents(text).map_err(|e| e.to_string())
}

/// Check every document is a manifest and expand `kind: List` documents. Ok(None): nothing to
/// expand, the documents are used as they are.
fn expand_documents(raw: &[Value]) -> Result<Option<Vec<Value>>, String> {
    let mut lists = false;
    for (i, v) in raw.iter().enumerate() {
        let Value::Object(m) = v else {
            return Err(format!("document {} is not a mapping", i + 1));
        };
        let kind = m.get("kind").and_then(Value::as_str);
        if kind.is_none() || m.get("apiVersion").and_then(Value::as_str).is_none() {
            return Err(format!("document {} has no apiVersion/kind", i + 1));
        }
        lists |= kind == Some("List") && matches!(m.get("items"), Some(Value::Array(_)));
    }
    if !lists {
        return Ok(None);
    }
    let mut out = Vec::new();
    for v in raw {
        match (v.get("kind").and_then(Value::as_str), v.get("items")) {
            (Some("List"), Some(Value::Array(items))) => out.extend(items.iter().cloned()),
            _ => out.push(v.clone()),
        }
    }
    Ok(Some(out))
}

/// All YAML documents of a file (null documents dropped, `kind: List` expanded).
pub fn parse_documents(content: &[u8]) -> Result<Vec<Value>, String> {
    let raw = raw_documents(content)?;
    Ok(expand_documents(&raw)?.unwrap_or(raw))
}

fn is_namespaced<K: StateObject>() -> bool {
    std::any::type_name::<K::Scope>()
        == std::any::type_name::<k8s_openapi::NamespaceResourceScope>()
}

/// The documents of kind K among a file's documents, each checked to deserialize (then
/// dropped: see [`Pending`]). A document unchanged from `old` is not deserialized again (a
/// status write changes one document of many).
fn parse_manifests<K: StateObject>(
    docs: &[Arc<Doc>],
    old: &[Arc<Doc>],
) -> Result<Vec<Arc<Doc>>, String> {
    let (api_version, kind) = (K::api_version(&()), K::kind(&()));
    let mut out = Vec::new();
    // Built only when a document is not where it was before.
    let mut old_json: Option<HashSet<&str>> = None;
    for d in docs {
        if d.api_version.as_deref() != Some(&*api_version) || d.kind.as_deref() != Some(&*kind) {
            continue;
        }
        if d.name.is_none() {
            return Err(format!("a {kind} has no metadata.name"));
        }
        // Usually at the same position as before; else look.
        let unchanged = old.get(out.len()).is_some_and(|o| Doc::same(o, d))
            || old_json
                .get_or_insert_with(|| old.iter().map(|o| &*o.json).collect())
                .contains(&*d.json);
        if !unchanged {
            parse_object::<K>(d)?;
            // What the API server's schema would refuse is refused here too.
            crate::crd::validate_manifest(&api_version, &kind, &d.json)?;
        }
        out.push(d.clone());
    }
    Ok(out)
}

/// The typed object of a document, `metadata.namespace` defaulted.
fn parse_object<K: StateObject>(d: &Doc) -> Result<K, String> {
    let mut obj: K = serde_json::from_str(&d.json).map_err(|e| {
        let (kind, name) = (K::kind(&()), d.name.as_deref().unwrap_or_default());
        if kind == "Secret" {
            // serde quotes offending values, and a Secret's values must never reach a log.
            format!("Secret {name} does not parse (details withheld: they may contain secret data)")
        } else {
            format!("{kind} {name}: {e}")
        }
    })?;
    if is_namespaced::<K>() && obj.meta().namespace.is_none() {
        obj.meta_mut().namespace = Some("default".into());
    }
    Ok(obj)
}

/// The reason a Secret manifest is rejected, as it would be logged (tests).
#[doc(hidden)]
pub fn parse_secret_for_test(content: &[u8]) -> Result<usize, String> {
    let mut names = HashSet::new();
    let docs: Vec<Arc<Doc>> = parse_documents(content)?
        .iter()
        .map(|v| Doc::new(v, &mut names))
        .collect();
    parse_manifests::<k8s_openapi::api::core::v1::Secret>(&docs, &[]).map(|v| v.len())
}

/// Every document of a file, any kind (None: the file does not parse).
fn all_documents(content: &[u8]) -> Option<Vec<Value>> {
    raw_documents(content).ok()
}

/// Where `key`'s document is: its index, and its index in the document's `items` when it is
/// an item of a `kind: List`.
fn find_document(docs: &[Value], key: &ObjectId) -> Option<(usize, Option<usize>)> {
    if let Some(i) = docs.iter().position(|d| doc_matches(d, key)) {
        return Some((i, None));
    }
    docs.iter().enumerate().find_map(|(i, d)| {
        if d.get("kind").and_then(Value::as_str) != Some("List") {
            return None;
        }
        let items = d.get("items")?.as_array()?;
        items
            .iter()
            .position(|it| doc_matches(it, key))
            .map(|j| (i, Some(j)))
    })
}

/// Byte ranges of a file's documents: the text between `---` lines. None when the file uses
/// what this simple cut does not handle (directives, `...`, content on a `---` line).
fn document_ranges(text: &str) -> Option<Vec<std::ops::Range<usize>>> {
    let mut out = vec![];
    let (mut start, mut pos) = (0, 0);
    for line in text.split_inclusive('\n') {
        let l = line.trim_end_matches(['\n', '\r']);
        if l.starts_with('%') || l.starts_with("...") {
            return None;
        }
        if let Some(rest) = l.strip_prefix("---")
            && (rest.is_empty() || rest.starts_with([' ', '\t']))
        {
            let rest = rest.trim();
            if !(rest.is_empty() || rest.starts_with('#')) {
                return None;
            }
            out.push(start..pos);
            start = pos + line.len();
        }
        pos += line.len();
    }
    out.push(start..text.len());
    Some(out)
}

/// `text` with the `status` of each touched document replaced by `docs`' (see
/// [`splice_status`]); untouched documents are kept byte for byte. None: the file's
/// documents could not be matched to `docs`.
fn splice_documents(text: &str, docs: &[Value], touched: &[bool]) -> Option<String> {
    let ranges = document_ranges(text)?;
    let mut out = String::with_capacity(text.len() + 256);
    let mut copied = 0;
    let mut idx = 0;
    for r in ranges {
        let seg = &text[r.clone()];
        let v: Value = crate::yaml::from_str(seg).ok()?;
        if v.is_null() {
            continue;
        }
        let doc = docs.get(idx)?;
        if touched.get(idx).copied().unwrap_or(false) {
            let new = splice_status(seg, doc).or_else(|| crate::yaml::to_string(doc).ok())?;
            out.push_str(&text[copied..r.start]);
            out.push_str(&new);
            copied = r.end;
        }
        idx += 1;
    }
    if idx != docs.len() {
        return None;
    }
    out.push_str(&text[copied..]);
    Some(out)
}

/// One document's text with its top-level `status:` block replaced by `doc`'s status (or
/// added at its end), everything else as written: comments, key order, flow style. Checked:
/// None unless the result parses to exactly `doc`.
fn splice_status(seg: &str, doc: &Value) -> Option<String> {
    let lines: Vec<&str> = seg.split_inclusive('\n').collect();
    let is_status_key = |l: &str| {
        ["status:", "\"status\":", "'status':"]
            .iter()
            .any(|k| l.starts_with(k))
    };
    let rendered = match doc.get("status") {
        Some(st) => crate::yaml::to_string(&serde_json::json!({ "status": st })).ok()?,
        None => String::new(),
    };
    let mut out = String::with_capacity(seg.len() + rendered.len());
    match lines.iter().position(|l| is_status_key(l)) {
        Some(i) => {
            // The block: the key's line and every following line that is indented (or a
            // sequence entry), up to the next top-level key; blank lines and top-level
            // comments right before that key stay with it.
            let mut end = i + 1;
            for (j, l) in lines.iter().enumerate().skip(i + 1) {
                let t = l.trim_end_matches(['\n', '\r']);
                if t.trim().is_empty() || t.starts_with('#') {
                    continue;
                }
                if t.starts_with([' ', '\t', '-']) {
                    end = j + 1;
                    continue;
                }
                break;
            }
            lines[..i].iter().for_each(|l| out.push_str(l));
            out.push_str(&rendered);
            lines[end..].iter().for_each(|l| out.push_str(l));
        }
        None => {
            // Only a block mapping takes another top-level key; a flow-style document is
            // written out anew by the caller.
            let first = lines
                .iter()
                .map(|l| l.trim_start())
                .find(|l| !l.trim().is_empty() && !l.starts_with('#'))?;
            if first.starts_with(['{', '[']) {
                return None;
            }
            out.push_str(seg);
            if !seg.is_empty() && !seg.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&rendered);
        }
    }
    let v: Value = crate::yaml::from_str(&out).ok()?;
    (v == *doc).then_some(out)
}

/// (apiVersion, kind, metadata.namespace, metadata.name) of a document, as written.
fn doc_identity(v: &Value) -> [Option<&str>; 4] {
    [
        v.get("apiVersion").and_then(Value::as_str),
        v.get("kind").and_then(Value::as_str),
        v.pointer("/metadata/namespace").and_then(Value::as_str),
        v.pointer("/metadata/name").and_then(Value::as_str),
    ]
}

fn doc_matches(d: &Value, key: &ObjectId) -> bool {
    d.get("apiVersion").and_then(Value::as_str) == Some(&key.0)
        && d.get("kind").and_then(Value::as_str) == Some(&key.1)
        && d.pointer("/metadata/name").and_then(Value::as_str) == Some(&key.3)
        && match &key.2 {
            None => true,
            Some(ns) => {
                d.pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("default")
                    == ns
            }
        }
}

fn not_found(r: StatusRequest) {
    let _ = r.2.send(Err(StateError::NotFound {
        kind: r.0.1.clone(),
        name: r.0.3.clone(),
    }));
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A core/v1 Event document for the state directory's event log.
pub fn core_v1_event(ev: &KubeEvent, regarding: &ObjectReference, reporter: &Reporter) -> Value {
    let now = k8s_openapi::jiff::Timestamp::now();
    let ts = now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let obj_name = regarding
        .name
        .clone()
        .unwrap_or_else(|| reporter.controller.clone());
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": format!("{obj_name}.{:x}", now.as_nanosecond()),
            "namespace": regarding.namespace.clone().unwrap_or_else(|| "default".into()),
        },
        "involvedObject": regarding,
        "type": match ev.type_ { EventType::Normal => "Normal", EventType::Warning => "Warning" },
        "reason": ev.reason,
        "message": ev.note.clone().unwrap_or_default(),
        "action": ev.action,
        "source": { "component": reporter.controller },
        "reportingComponent": reporter.controller,
        "reportingInstance": reporter.instance.clone().unwrap_or_else(|| reporter.controller.clone()),
        "firstTimestamp": ts,
        "lastTimestamp": ts,
        "count": 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scan_reads_files_without_holding_the_shared_lock() {
        let d = tempfile::tempdir().unwrap();
        for i in 0..5 {
            fs::write(
                d.path().join(format!("s{i}.yaml")),
                format!("apiVersion: v1\nkind: Service\nmetadata: {{name: s{i}}}\n"),
            )
            .unwrap();
        }
        let sd = StateDir::open(d.path().to_path_buf()).unwrap();
        sd.scan(Scope::Quick);
        assert_eq!(sd.file_reads(), 5);
        assert!(!sd.read_under_lock.load(Ordering::Relaxed));
        assert_eq!(lock(&sd.shared).files.len(), 5);
    }
}
