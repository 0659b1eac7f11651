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
