//! Where cluster state comes from (docs/architecture.md): one abstraction, two backends.
//!
//! Both backends deliver `kube::runtime::watcher::Event<K>` streams (`Init`, `InitApply`…,
//! `InitDone`, then `Apply`/`Delete`), so programs feed them to kube's `reflector` and
//! `Controller::for_stream` and never know which backend is underneath.
//!
//! - [`StateSource::kube`]: `kube::runtime::watcher` on `Api::all`, status by server-side apply
//!   (`PATCH …/status`, `application/apply-patch+yaml`, `force=true`), Events through
//!   `kube::runtime::events::Recorder` (events.k8s.io/v1).
//! - [`StateSource::dir`]: a directory of Kubernetes-format YAML manifests, see [`dir`].

pub mod dir;

use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, Recorder, Reporter};
use kube::runtime::watcher;
use prometheus_client::registry::Registry;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// What any watched object must be: a static-typed Kubernetes resource we can (de)serialize.
pub trait StateObject:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug + Send + Sync + 'static
{
}
impl<T> StateObject for T where
    T: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug
        + Send
        + Sync
        + 'static
{
}

/// Errors of either backend.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("kubernetes watch: {0}")]
    Watch(#[from] watcher::Error),
    #[error("state directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state directory watch: {0}")]
    Notify(#[from] notify::Error),
    #[error("{kind} {name} not found in the state directory")]
    NotFound { kind: String, name: String },
    #[error("manifest {path} is malformed: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("status write to {path} kept racing with other writers")]
    Contended { path: PathBuf },
}

/// The cluster-state source of a program.
#[derive(Clone)]
pub enum StateSource {
    Kube(kube::Client),
    Dir(Arc<dir::StateDir>),
}

impl Debug for StateSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateSource::Kube(_) => f.write_str("StateSource::Kube"),
            StateSource::Dir(d) => write!(f, "StateSource::Dir({})", d.root().display()),
        }
    }
}

/// Object reference for Events and logs.
pub fn object_ref<K: StateObject>(obj: &K) -> ObjectReference {
    obj.object_ref(&())
}

impl StateSource {
    pub fn kube(client: kube::Client) -> Self {
        StateSource::Kube(client)
    }

    /// Open (creating it if missing) a state directory.
    pub fn dir(path: impl Into<PathBuf>) -> Result<Self, StateError> {
        Ok(StateSource::Dir(Arc::new(dir::StateDir::open(
            path.into(),
        )?)))
    }

    /// Like [`StateSource::dir`] with a custom safety-net rescan interval.
    pub fn dir_with_rescan(
        path: impl Into<PathBuf>,
        rescan: std::time::Duration,
    ) -> Result<Self, StateError> {
        Ok(StateSource::Dir(Arc::new(dir::StateDir::open_with_rescan(
            path.into(),
            rescan,
        )?)))
    }

    /// Register this source's metrics (malformed manifests, status writes).
    pub fn register_metrics(&self, registry: &mut Registry) {
        if let StateSource::Dir(d) = self {
            d.register_metrics(registry);
        }
    }

    /// Watch every object of kind `K` (all namespaces).
    pub fn watch<K: StateObject>(
        &self,
    ) -> BoxStream<'static, Result<watcher::Event<K>, StateError>> {
        match self {
            StateSource::Kube(client) => {
                let api: kube::Api<K> = kube::Api::all(client.clone());
                watcher::watcher(api, watcher::Config::default())
                    .map_err(StateError::from)
                    .boxed()
            }
            StateSource::Dir(d) => d.watch::<K>(),
        }
    }

    /// Set `status` of one object, owned by `field_manager`. On Kubernetes a server-side apply of
    /// `{apiVersion, kind, status}` to the status subresource (forced: this program is the only
    /// writer of these fields). On the state directory the top-level keys of `status` replace
    /// those in the manifest's `.status` (so `{"loadBalancer": {}}` clears the ingress, as an
    /// apply without the field would).
    pub async fn apply_status<K: StateObject>(
        &self,
        namespace: Option<&str>,
        name: &str,
        field_manager: &str,
        status: serde_json::Value,
    ) -> Result<(), StateError> {
        match self {
            StateSource::Kube(client) => {
                let url = K::url_path(&(), namespace);
                let patch = serde_json::json!({
                    "apiVersion": K::api_version(&()),
                    "kind": K::kind(&()),
                    "status": status,
                });
                let req = kube::core::Request::new(url)
                    .patch_subresource(
                        "status",
                        name,
                        &PatchParams::apply(field_manager).force(),
                        &Patch::Apply(patch),
                    )
                    .map_err(kube::Error::BuildRequest)?;
                let _: serde_json::Value = client.request(req).await?;
                Ok(())
            }
            StateSource::Dir(d) => {
                let d = d.clone();
                let (ns, name) = (namespace.map(str::to_owned), name.to_owned());
                let (api_version, kind) =
                    (K::api_version(&()).into_owned(), K::kind(&()).into_owned());
                tokio::task::spawn_blocking(move || {
                    d.apply_status(&api_version, &kind, ns.as_deref(), &name, &status)
                })
                .await
                .expect("status writer task panicked")
            }
        }
    }

    /// Read one object (None: there is none). On Kubernetes a GET; on the state directory the
    /// current parse of the directory (a watch's initial list, then dropped).
    pub async fn get<K: StateObject>(
        &self,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<K>, StateError> {
        match self {
            StateSource::Kube(client) => {
                let req = kube::core::Request::new(K::url_path(&(), namespace))
                    .get(name, &kube::api::GetParams::default())
                    .map_err(kube::Error::BuildRequest)?;
                match client.request::<K>(req).await {
                    Ok(obj) => Ok(Some(obj)),
                    Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
                    Err(e) => Err(e.into()),
                }
            }
            StateSource::Dir(d) => {
                let mut stream = d.watch::<K>();
                let wanted_ns = namespace.map(|n| n.to_owned());
                while let Some(ev) = stream.next().await {
                    match ev? {
                        watcher::Event::InitApply(obj) | watcher::Event::Apply(obj)
                            if obj.meta().name.as_deref() == Some(name)
                                && (wanted_ns.is_none()
                                    || obj.meta().namespace.as_deref().or(Some("default"))
                                        == wanted_ns.as_deref()) =>
                        {
                            return Ok(Some(obj));
                        }
                        watcher::Event::InitDone => return Ok(None),
                        _ => {}
                    }
                }
                Ok(None)
            }
        }
    }

    /// Create `obj` unless an object of its kind and name exists (then nothing changes). On
    /// Kubernetes a POST (409 AlreadyExists is success); on the state directory a new manifest
    /// `<plural>/<namespace>-<name>.yaml` (or `<plural>/<name>.yaml`) written atomically.
    pub async fn create_if_missing<K: StateObject>(&self, obj: &K) -> Result<(), StateError> {
        let name = obj.meta().name.clone().unwrap_or_default();
        let ns = obj.meta().namespace.clone();
        match self {
            StateSource::Kube(client) => {
                let body = serde_json::to_vec(obj).map_err(|e| StateError::Malformed {
                    path: PathBuf::from(K::url_path(&(), ns.as_deref())),
                    reason: e.to_string(),
                })?;
                let req = kube::core::Request::new(K::url_path(&(), ns.as_deref()))
                    .create(&kube::api::PostParams::default(), body)
                    .map_err(kube::Error::BuildRequest)?;
                match client.request::<serde_json::Value>(req).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
            StateSource::Dir(d) => {
                if self.get::<K>(ns.as_deref(), &name).await?.is_some() {
                    return Ok(());
                }
                let mut doc = serde_json::to_value(obj).map_err(|e| StateError::Malformed {
                    path: d.root().to_owned(),
                    reason: e.to_string(),
                })?;
                doc["apiVersion"] = K::api_version(&()).into();
                doc["kind"] = K::kind(&()).into();
                let text = crate::yaml::to_string(&doc).map_err(|e| StateError::Malformed {
                    path: d.root().to_owned(),
                    reason: e.to_string(),
                })?;
                let dir = d.root().join(K::plural(&()).as_ref());
                let file = match &ns {
                    Some(ns) => format!("{ns}-{name}.yaml"),
                    None => format!("{name}.yaml"),
                };
                let root = d.root().to_owned();
                tokio::task::spawn_blocking(move || {
                    write_new_file(&root, &dir, &file, text.as_bytes())
                })
                .await
                .expect("manifest writer task panicked")
            }
        }
    }

    /// An Event publisher for `reporter` (one per program).
    pub fn event_sink(&self, reporter: Reporter) -> EventSink {
        match self {
            StateSource::Kube(client) => EventSink::Kube(Recorder::new(client.clone(), reporter)),
            StateSource::Dir(d) => EventSink::Dir(d.clone(), reporter),
        }
    }
}

/// Publishes Events: through kube's `Recorder` on Kubernetes; appended as core/v1 Event YAML
/// documents to `<state-dir>/.leafbridge/events.yaml` on the state directory.
#[derive(Clone)]
pub enum EventSink {
    Kube(Recorder),
    Dir(Arc<dir::StateDir>, Reporter),
}

impl Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EventSink::Kube(_) => "EventSink::Kube",
            EventSink::Dir(..) => "EventSink::Dir",
        })
    }
}

impl EventSink {
    pub async fn publish(
        &self,
        ev: &KubeEvent,
        regarding: &ObjectReference,
    ) -> Result<(), StateError> {
        match self {
            EventSink::Kube(r) => Ok(r.publish(ev, regarding).await?),
            EventSink::Dir(d, reporter) => {
                let d = d.clone();
                let doc = dir::core_v1_event(ev, regarding, reporter);
                tokio::task::spawn_blocking(move || d.append_event(&doc))
                    .await
                    .expect("event writer task panicked")
            }
        }
    }
}

/// Write `dir/file` atomically (temp file named with a leading dot, which the state directory
/// ignores, fsync, rename), never replacing an existing file.
fn write_new_file(
    root: &std::path::Path,
    dir: &std::path::Path,
    file: &str,
    content: &[u8],
) -> Result<(), StateError> {
    use std::io::Write as _;
    let io = |path: &std::path::Path| {
        let path = path.to_owned();
        move |source| StateError::Io { path, source }
    };
    dir::create_inside(root, dir).map_err(io(dir))?;
    let target = dir.join(file);
    if target.exists() {
        return Ok(());
    }
    let tmp = dir.join(format!(".{file}.tmp-{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(content).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    // A hard link fails when the target appeared meanwhile: another writer won, and its file
    // stays (rename would replace it).
    let linked = std::fs::hard_link(&tmp, &target);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io(&target)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BGPNodeState;

    #[tokio::test]
    async fn create_if_missing_writes_a_manifest_once_and_get_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let src = StateSource::dir(dir.path()).unwrap();
        assert!(src.get::<BGPNodeState>(None, "n1").await.unwrap().is_none());
        let mut obj = BGPNodeState::new("n1", Default::default());
        src.create_if_missing(&obj).await.unwrap();
        let path = dir.path().join("bgpnodestates/n1.yaml");
        let first = std::fs::read_to_string(&path).unwrap();
        assert!(first.contains("kind: BGPNodeState"), "{first}");
        // A second call changes nothing, even with other content.
        obj.metadata.labels = Some([("x".to_owned(), "y".to_owned())].into());
        src.create_if_missing(&obj).await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), first);
        let got = src.get::<BGPNodeState>(None, "n1").await.unwrap();
        assert_eq!(got.unwrap().metadata.name.as_deref(), Some("n1"));
        // Status can be written to it.
        src.apply_status::<BGPNodeState>(
            None,
            "n1",
            "test",
            serde_json::json!({"announcedPrefixes": 3}),
        )
        .await
        .unwrap();
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("announcedPrefixes: 3")
        );
    }
}
