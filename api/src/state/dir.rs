//! State-directory backend: a directory of Kubernetes-format YAML manifests.
//!
//! - Any file names and subdirectories; multi-document files (`---`) and `kind: List` files are
//!   fine. Names starting with `.` (files and directories) are ignored: that is where temp files
//!   of atomic writes and leafbridge's own bookkeeping (`.leafbridge/`) live.
//! - Objects are matched to a watched type by `apiVersion` + `kind`; a namespaced object without
//!   `metadata.namespace` is in `default`, as `kubectl apply` would put it.
//! - Changes are picked up from `notify` events (debounced) plus a periodic full rescan as a
//!   safety net (notify can miss events, e.g. on some network filesystems).
//! - A malformed file (bad YAML, a document without apiVersion/kind/name, or a matching document
//!   that does not deserialize) is logged and counted in
//!   `leafbridge_state_dir_malformed_manifests_total{kind}` and skipped as a whole: objects loaded
//!   from a good earlier version of that file stay, so a typo never deletes Services.
//! - Status writes re-read the file right before writing, write a temp file in the same
//!   directory, fsync it, check the original did not change meanwhile (else retry) and rename it
//!   over the original: readers never see half a file and a concurrent spec edit is never lost.
//!   Writers in several processes serialise on `.leafbridge/write.lock` (advisory lock).
//! - Events are appended as core/v1 Event YAML documents to `.leafbridge/events.yaml` (rotated to
//!   `events.yaml.1` past 8 MiB).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event as KubeEvent, EventType, Reporter};
use kube::runtime::watcher::Event;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{StateError, StateObject};

/// Directory (inside the state directory) for leafbridge's own files.
pub const META_DIR: &str = ".leafbridge";
/// Event log, relative to the state directory.
pub const EVENTS_FILE: &str = ".leafbridge/events.yaml";
const EVENTS_ROTATE_BYTES: u64 = 8 << 20;
const DEBOUNCE: Duration = Duration::from_millis(25);
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
    tmp_seq: AtomicU64,
    rescans: AtomicU64,
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
            tmp_seq: AtomicU64::new(0),
            rescans: AtomicU64::new(0),
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

    /// How many times any watch of this directory rescanned it (tests: the watch goes idle).
    pub fn rescan_count(&self) -> u64 {
        self.rescans.load(Ordering::Relaxed)
    }

    /// Malformed-manifest count for `kind` (tests, diagnostics).
    pub fn malformed_count(&self, kind: &str) -> u64 {
        self.malformed
            .get_or_create(&vec![("kind".into(), kind.into())])
            .get()
    }

    pub(super) fn watch<K: StateObject>(
        self: &std::sync::Arc<Self>,
    ) -> BoxStream<'static, Result<Event<K>, StateError>> {
        let (tx, rx) = mpsc::channel(256);
        let me = self.clone();
        tokio::spawn(async move { me.run_watch::<K>(tx).await });
        Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|ev| (ev, rx))
        }))
    }

    async fn run_watch<K: StateObject>(&self, tx: mpsc::Sender<Result<Event<K>, StateError>>) {
        let (ntx, mut nrx) = mpsc::unbounded_channel::<()>();
        let root = self.root.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if res.as_ref().is_ok_and(|ev| !is_relevant(&root, ev)) {
                return;
            }
            let _ = ntx.send(());
        })
        .and_then(|mut w| {
            notify::Watcher::watch(&mut w, &self.root, notify::RecursiveMode::Recursive).map(|()| w)
        });
        let _watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(dir = %self.root.display(), error = %e,
                    "cannot watch state directory for changes; relying on periodic rescans");
                None
            }
        };

        let mut files = BTreeMap::new();
        self.rescan::<K>(&mut files, true);
        // Where each object currently comes from: (file, manifest).
        let mut current: BTreeMap<ObjKey, (PathBuf, Value)> = BTreeMap::new();
        let mut init = vec![Event::Init];
        for (k, (path, v, o)) in collect(&files) {
            current.insert(k, (path, v));
            init.push(Event::InitApply(o));
        }
        init.push(Event::InitDone);
        for ev in init {
            if tx.send(Ok(ev)).await.is_err() {
                return;
            }
        }

        let mut ticker = tokio::time::interval(self.rescan);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        let mut ticks = 0u64;
        loop {
            let full = tokio::select! {
                n = nrx.recv(), if _watcher.is_some() => {
                    if n.is_none() { continue; }
                    tokio::time::sleep(DEBOUNCE).await;
                    while nrx.try_recv().is_ok() {}
                    false
                }
                // The periodic safety net checks stamps too; every 15th tick it compares
                // contents (an edit that kept size and mtime, on a coarse-mtime filesystem).
                _ = ticker.tick() => {
                    ticks += 1;
                    ticks.is_multiple_of(15)
                }
                _ = tx.closed() => return,
            };
            let changed = self.rescan::<K>(&mut files, full);
            for ev in diff(&mut current, &files, changed) {
                if tx.send(Ok(ev)).await.is_err() {
                    return;
                }
            }
        }
    }

    /// Re-read changed files and return the objects of kind K now in the directory. A quick
    /// rescan skips files whose size, mtime and inode are unchanged; a full one compares every
    /// file's content.
    fn rescan<K: StateObject>(
        &self,
        files: &mut BTreeMap<PathBuf, FileEntry<K>>,
        full: bool,
    ) -> Vec<(PathBuf, Vec<Parsed<K>>)> {
        self.rescans.fetch_add(1, Ordering::Relaxed);
        let kind = K::kind(&());
        let list = match list_manifest_files(&self.root) {
            Ok(l) => l,
            Err(e) => {
                // Keep everything we have: an unreadable directory is not "everything deleted".
                tracing::warn!(dir = %self.root.display(), error = %e, "cannot list state directory");
                return vec![];
            }
        };
        let mut changed = vec![];
        let gone: Vec<PathBuf> = files
            .keys()
            .filter(|p| list.binary_search(p).is_err())
            .cloned()
            .collect();
        for p in gone {
            if let Some(e) = files.remove(&p) {
                changed.push((p, e.objects));
            }
        }
        for path in list {
            let stamp = stamp_of(&path);
            if !full && stamp.is_some() && files.get(&path).is_some_and(|e| e.stamp == stamp) {
                continue;
            }
            let content = match fs::read(&path) {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if let Some(e) = files.remove(&path) {
                        changed.push((path, e.objects));
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot read manifest; keeping what it held");
                    continue;
                }
            };
            let entry = files.entry(path.clone()).or_insert_with(|| FileEntry {
                seen: None,
                stamp: None,
                objects: vec![],
            });
            entry.stamp = stamp;
            if entry.seen.as_deref() == Some(&content[..]) {
                continue;
            }
            match parse_manifests::<K>(&content) {
                Ok(objects) => {
                    let old = std::mem::replace(&mut entry.objects, objects);
                    changed.push((path.clone(), old));
                }
                Err(reason) => {
                    self.malformed
                        .get_or_create(&vec![("kind".into(), kind.to_string())])
                        .inc();
                    tracing::warn!(file = %path.display(), %kind, %reason,
                        "malformed manifest skipped; objects from its last good version are kept");
                }
            }
            entry.seen = Some(content);
        }
        changed
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
        fs::create_dir_all(&meta).map_err(io)?;
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
            for (path, reqs) in by_file {
                stale.extend(self.write_file(&path, reqs));
            }
            // Objects not where the hints said (moved between files): look once more.
            if stale.is_empty() || reindexed {
                stale.into_iter().for_each(not_found);
                return;
            }
            lock(&self.hints).clear();
            todo = stale;
        }
    }

    /// Where every object is: one parse of the whole directory.
    fn reindex(&self) {
        let mut h = HashMap::new();
        for p in list_manifest_files(&self.root).unwrap_or_default() {
            let Ok(content) = fs::read(&p) else { continue };
            let Some(docs) = all_documents(&content) else {
                continue;
            };
            for d in &docs {
                let field = |ptr: &str| d.pointer(ptr).and_then(Value::as_str).map(str::to_owned);
                let (Some(api), Some(kind), Some(name)) = (
                    field("/apiVersion"),
                    field("/kind"),
                    field("/metadata/name"),
                ) else {
                    continue;
                };
                match field("/metadata/namespace") {
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

    /// Apply `reqs` to one file atomically. Returns the requests whose object is not in it.
    fn write_file(&self, path: &Path, reqs: Vec<StatusRequest>) -> Vec<StatusRequest> {
        for _ in 0..WRITE_ATTEMPTS {
            let Ok(content) = fs::read(path) else {
                return reqs;
            };
            let Some(mut docs) = all_documents(&content) else {
                for (_, _, tx) in reqs {
                    let _ = tx.send(Err(StateError::Malformed {
                        path: path.to_path_buf(),
                        reason: "the manifest does not parse; status not written".into(),
                    }));
                }
                return vec![];
            };
            let mut outcome = Vec::with_capacity(reqs.len());
            let mut changed = false;
            for (key, status, _) in &reqs {
                let Some(idx) = docs.iter().position(|d| doc_matches(d, key)) else {
                    outcome.push(None);
                    continue;
                };
                let doc = &mut docs[idx];
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
                outcome.push(Some(true));
            }
            if changed {
                match self.replace_file(path, &content, &docs) {
                    Ok(true) => {}
                    // Changed under us: start over from the new version.
                    Ok(false) => continue,
                    Err(e) => {
                        for (_, _, tx) in reqs {
                            let _ = tx.send(Err(StateError::Io {
                                path: path.to_path_buf(),
                                source: std::io::Error::other(e.to_string()),
                            }));
                        }
                        return vec![];
                    }
                }
            }
            let mut missing = vec![];
            for (r, o) in reqs.into_iter().zip(outcome) {
                match o {
                    Some(written) => {
                        let _ = r.2.send(Ok(written));
                    }
                    None => missing.push(r),
                }
            }
            return missing;
        }
        for (_, _, tx) in reqs {
            let _ = tx.send(Err(StateError::Contended {
                path: path.to_path_buf(),
            }));
        }
        vec![]
    }

    /// Write `docs` to a temp file, fsync, and rename it over `path` unless `path` no longer
    /// holds `expected` (someone edited it: their edit must not be lost). Ok(false): retry.
    fn replace_file(
        &self,
        path: &Path,
        expected: &[u8],
        docs: &[Value],
    ) -> Result<bool, StateError> {
        let mut text = String::new();
        for (i, d) in docs.iter().enumerate() {
            if i > 0 {
                text.push_str("---\n");
            }
            text.push_str(
                &serde_yaml::to_string(d).map_err(|e| StateError::Malformed {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?,
            );
        }
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
        {
            let mut f = File::create(&tmp).map_err(io)?;
            f.write_all(text.as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        if fs::read(path).ok().as_deref() != Some(expected) {
            let _ = fs::remove_file(&tmp);
            return Ok(false);
        }
        fs::rename(&tmp, path).map_err(|source| {
            let _ = fs::remove_file(&tmp);
            StateError::Io {
                path: path.to_path_buf(),
                source,
            }
        })?;
        // Make the rename itself durable.
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(true)
    }

    /// Append one Event document to the events file.
    pub fn append_event(&self, doc: &Value) -> Result<(), StateError> {
        let meta = self.root.join(META_DIR);
        let path = self.root.join(EVENTS_FILE);
        let io = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(&meta).map_err(io)?;
        if fs::metadata(&path).is_ok_and(|m| m.len() > EVENTS_ROTATE_BYTES) {
            let _ = fs::rename(&path, meta.join("events.yaml.1"));
        }
        let yaml = serde_yaml::to_string(doc).map_err(|e| StateError::Malformed {
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

struct FileEntry<K> {
    /// (size, mtime, inode) when `seen` was read.
    stamp: Option<(u64, std::time::SystemTime, u64)>,
    /// Content last read (good or bad): unchanged content is not parsed (or reported) again.
    seen: Option<Vec<u8>>,
    /// Objects from the last good version of the file.
    objects: Vec<Parsed<K>>,
}

type ObjKey = (Option<String>, String);
/// One object parsed from a manifest: key, the manifest as JSON, the typed object.
type Parsed<K> = (ObjKey, Value, K);

/// Every object with the file it comes from; when several files define one, the last file
/// (by path) wins.
fn collect<K: StateObject>(
    files: &BTreeMap<PathBuf, FileEntry<K>>,
) -> BTreeMap<ObjKey, (PathBuf, Value, K)> {
    let mut out = BTreeMap::new();
    for (path, entry) in files {
        for (k, v, o) in &entry.objects {
            if out
                .insert(k.clone(), (path.clone(), v.clone(), o.clone()))
                .is_some()
            {
                tracing::warn!(file = %path.display(), namespace = ?k.0, name = %k.1,
                    "object defined in several files; the last file (by path) wins");
            }
        }
    }
    out
}

/// Events for the files that changed, updating `current`. Work is proportional to the changed
/// files, not to the directory. Deletes first: a consumer that frees on Delete and allocates on
/// Apply then reuses what a batch freed, in the same batch.
fn diff<K: StateObject>(
    current: &mut BTreeMap<ObjKey, (PathBuf, Value)>,
    files: &BTreeMap<PathBuf, FileEntry<K>>,
    changed: Vec<(PathBuf, Vec<Parsed<K>>)>,
) -> Vec<Event<K>> {
    let mut deletes = Vec::new();
    let mut applies = Vec::new();
    for (path, old) in &changed {
        let new = files.get(path).map(|e| &e.objects[..]).unwrap_or(&[]);
        for (k, _, o) in old {
            if new.iter().any(|(nk, _, _)| nk == k) || current.get(k).is_none_or(|(p, _)| p != path)
            {
                continue;
            }
            // Gone from this file; another file may still define it (rare: look).
            let elsewhere = files
                .iter()
                .rev()
                .find_map(|(p, e)| e.objects.iter().find(|(ok, _, _)| ok == k).map(|x| (p, x)));
            match elsewhere {
                Some((p, (_, v, o2))) => {
                    current.insert(k.clone(), (p.clone(), v.clone()));
                    applies.push(Event::Apply(o2.clone()));
                }
                None => {
                    current.remove(k);
                    deletes.push(Event::Delete(o.clone()));
                }
            }
        }
    }
    for (path, _) in &changed {
        let Some(entry) = files.get(path) else {
            continue;
        };
        for (k, v, o) in &entry.objects {
            if current.get(k).is_none_or(|(_, cv)| cv != v) {
                current.insert(k.clone(), (path.clone(), v.clone()));
                applies.push(Event::Apply(o.clone()));
            }
        }
    }
    deletes.extend(applies);
    deletes
}

fn stamp_of(p: &Path) -> Option<(u64, std::time::SystemTime, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(p).ok()?;
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

/// All manifest files under `root`, recursively, sorted; hidden names skipped.
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
            } else if ft.is_file() {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// All YAML documents of a file (null documents dropped, `kind: List` expanded).
pub fn parse_documents(content: &[u8]) -> Result<Vec<Value>, String> {
    let text = std::str::from_utf8(content).map_err(|e| format!("not UTF-8: {e}"))?;
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let v = Value::deserialize(doc).map_err(|e| format!("document {}: {e}", i + 1))?;
        match v {
            Value::Null => {}
            Value::Object(ref m) => {
                let kind = m.get("kind").and_then(Value::as_str);
                let api = m.get("apiVersion").and_then(Value::as_str);
                if kind.is_none() || api.is_none() {
                    return Err(format!("document {} has no apiVersion/kind", i + 1));
                }
                if kind == Some("List")
                    && let Some(Value::Array(items)) = m.get("items")
                {
                    out.extend(items.iter().cloned());
                } else {
                    out.push(v);
                }
            }
            _ => return Err(format!("document {} is not a mapping", i + 1)),
        }
    }
    Ok(out)
}

fn is_namespaced<K: StateObject>() -> bool {
    std::any::type_name::<K::Scope>()
        == std::any::type_name::<k8s_openapi::NamespaceResourceScope>()
}

fn parse_manifests<K: StateObject>(content: &[u8]) -> Result<Vec<(ObjKey, Value, K)>, String> {
    let (api_version, kind) = (K::api_version(&()), K::kind(&()));
    let namespaced = is_namespaced::<K>();
    let mut out = Vec::new();
    for mut v in parse_documents(content)? {
        if v.get("apiVersion").and_then(Value::as_str) != Some(&api_version)
            || v.get("kind").and_then(Value::as_str) != Some(&kind)
        {
            continue;
        }
        let Some(name) = v
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            return Err(format!("a {kind} has no metadata.name"));
        };
        let ns = if namespaced {
            let ns = v
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_owned();
            if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert("namespace".into(), Value::String(ns.clone()));
            }
            Some(ns)
        } else {
            None
        };
        let obj: K = serde_json::from_value(v.clone()).map_err(|e| {
            if kind == "Secret" {
                // serde quotes offending values, and a Secret's values must never reach a log.
                format!(
                    "Secret {name} does not parse (details withheld: they may contain secret data)"
                )
            } else {
                format!("{kind} {name}: {e}")
            }
        })?;
        out.push(((ns, name), v, obj));
    }
    Ok(out)
}

/// The reason a Secret manifest is rejected, as it would be logged (tests).
#[doc(hidden)]
pub fn parse_secret_for_test(content: &[u8]) -> Result<usize, String> {
    parse_manifests::<k8s_openapi::api::core::v1::Secret>(content).map(|v| v.len())
}

/// Every document of a file, any kind (None: the file does not parse).
fn all_documents(content: &[u8]) -> Option<Vec<Value>> {
    let text = std::str::from_utf8(content).ok()?;
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        match Value::deserialize(doc) {
            Ok(Value::Null) => {}
            Ok(v) => docs.push(v),
            Err(_) => return None,
        }
    }
    Some(docs)
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
