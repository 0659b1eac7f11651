//! Polling fallback for the state directory (`--state-dir-poll`): the same manifests as
//! `leafbridge_api::state::dir`, checked by mtime and size every interval.
//!
//! Why it exists: `leafbridge_api`'s notify-driven watch currently rescans on every inotify
//! event, including the open/access events of its own reads, so with several watched kinds
//! it never goes idle (about half a core with 10,000 Services). Until that is fixed in api/,
//! this keeps the benchmark honest. A malformed file is reported (log and metric) and
//! skipped: the objects loaded from its last good version stay.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Deserialize;

use crate::index::{Indexed, NsName, ZoneIndex};
use crate::server::Server;

#[derive(Debug, Clone, PartialEq)]
enum Object {
    Service(Box<Service>),
    EndpointSlice(Box<EndpointSlice>),
    Pod(Box<Pod>),
}

type ObjKey = (&'static str, NsName);

impl Object {
    fn key(&self) -> Option<ObjKey> {
        match self {
            Self::Service(o) => Some(("Service", o.key()?)),
            Self::EndpointSlice(o) => Some(("EndpointSlice", o.key()?)),
            Self::Pod(o) => Some(("Pod", o.key()?)),
        }
    }
    fn apply(&self, index: &mut ZoneIndex) {
        match self {
            Self::Service(o) => index.apply_service(o),
            Self::EndpointSlice(o) => index.apply_endpoint_slice(o),
            Self::Pod(o) => index.apply_pod(o),
        }
    }
}

fn delete(index: &mut ZoneIndex, key: &ObjKey) {
    match key.0 {
        "Service" => index.delete_service(&key.1),
        "EndpointSlice" => index.delete_endpoint_slice(&key.1),
        _ => index.delete_pod(&key.1),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Yaml {
        path: String,
        source: serde_yaml::Error,
    },
}

/// Parse every document of a manifest file; kinds we do not index are ignored.
fn parse_file(path: &Path) -> Result<Vec<Object>, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let yaml = |source| ManifestError::Yaml {
        path: path.display().to_string(),
        source,
    };
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_yaml::Value::deserialize(doc).map_err(yaml)?;
        collect(value, &mut out).map_err(yaml)?;
    }
    Ok(out)
}

fn collect(value: serde_yaml::Value, out: &mut Vec<Object>) -> Result<(), serde_yaml::Error> {
    let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
    match kind {
        "Service" => out.push(Object::Service(Box::new(serde_yaml::from_value(value)?))),
        "EndpointSlice" => out.push(Object::EndpointSlice(Box::new(serde_yaml::from_value(
            value,
        )?))),
        "Pod" => out.push(Object::Pod(Box::new(serde_yaml::from_value(value)?))),
        "List" => {
            if let Some(items) = value.get("items").and_then(|i| i.as_sequence()) {
                for item in items.clone() {
                    collect(item, out)?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn is_manifest(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    ) && !p
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else if is_manifest(&p) {
            out.push(p);
        }
    }
}

/// Tracks which objects each file contributed, so edits and removals become precise
/// apply/delete updates.
#[derive(Debug, Default)]
pub struct StateDir {
    files: HashMap<PathBuf, (SystemTime, u64, BTreeMap<ObjKey, Object>)>,
}

impl StateDir {
    /// One scan: apply what changed to `index`. Returns the number of malformed files.
    pub fn scan(&mut self, dir: &Path, index: &std::sync::RwLock<ZoneIndex>) -> usize {
        let mut paths = Vec::new();
        walk(dir, &mut paths);
        let mut errors = 0;
        let mut changes: Vec<(Option<ObjKey>, Option<Object>)> = Vec::new();
        for p in &paths {
            let Ok(meta) = std::fs::metadata(p) else {
                continue;
            };
            let stamp = (
                meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                meta.len(),
            );
            if let Some((m, l, _)) = self.files.get(p)
                && (*m, *l) == stamp
            {
                continue;
            }
            match parse_file(p) {
                Ok(objs) => {
                    let new: BTreeMap<ObjKey, Object> = objs
                        .into_iter()
                        .filter_map(|o| Some((o.key()?, o)))
                        .collect();
                    let old = self
                        .files
                        .insert(p.clone(), (stamp.0, stamp.1, new.clone()))
                        .map(|f| f.2)
                        .unwrap_or_default();
                    for k in old.keys() {
                        if !new.contains_key(k) {
                            changes.push((Some(k.clone()), None));
                        }
                    }
                    for (k, o) in new {
                        if old.get(&k) != Some(&o) {
                            changes.push((None, Some(o)));
                        }
                    }
                }
                Err(e) => {
                    errors += 1;
                    tracing::warn!(error = %e, "skipping malformed manifest; keeping its last good objects");
                    // Remember the stamp so the error is reported once per version.
                    if let Some(f) = self.files.get_mut(p) {
                        f.0 = stamp.0;
                        f.1 = stamp.1;
                    } else {
                        self.files
                            .insert(p.clone(), (stamp.0, stamp.1, BTreeMap::new()));
                    }
                }
            }
        }
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !paths.contains(p))
            .cloned()
            .collect();
        for p in gone {
            if let Some((_, _, objs)) = self.files.remove(&p) {
                changes.extend(objs.into_keys().map(|k| (Some(k), None)));
            }
        }
        if !changes.is_empty() {
            let mut idx = index.write().unwrap_or_else(|e| e.into_inner());
            // Deletes first, so an object moved between files ends up present.
            for (k, _) in &changes {
                if let Some(k) = k {
                    delete(&mut idx, k);
                }
            }
            for (_, o) in &changes {
                if let Some(o) = o {
                    o.apply(&mut idx);
                }
            }
        }
        errors
    }
}

/// Poll `dir` forever, keeping the server's index current; ready after the first scan.
pub async fn watch(
    server: Arc<Server>,
    dir: PathBuf,
    interval: Duration,
    readiness: leafbridge_api::ops::Readiness,
) {
    let mut state = StateDir::default();
    loop {
        let errors = state.scan(&dir, &server.index);
        server.metrics.state_errors.inc_by(errors as u64);
        let services = server
            .index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .service_count();
        server.metrics.services.set(services as i64);
        readiness.set_ready(true);
        tokio::time::sleep(interval).await;
    }
}
