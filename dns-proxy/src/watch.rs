//! The state watches as the server consumes them: on the Kubernetes API a failing watch
//! backs off (kube's `default_backoff()`: 0.8 s doubling to 30 s, reset after two quiet
//! minutes) instead of relisting in a tight loop and flooding the log; a bad manifest in a
//! state directory is skipped, not counted as a failing watch.

use futures::StreamExt;
use futures::stream::BoxStream;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::Event;
use leafbridge_api::state::{StateError, StateObject, StateSource};

/// A kind's watch from `source`, backing off after errors on the Kubernetes API.
pub fn watch<K: StateObject>(
    source: &StateSource,
) -> BoxStream<'static, Result<Event<K>, StateError>> {
    let stream = source.watch::<K>();
    match source {
        StateSource::Kube(_) => stream.default_backoff().boxed(),
        StateSource::Dir(_) => stream,
    }
}

/// An error that means the watch itself failed (the API server, the network, a missing
/// CRD), as opposed to one bad manifest in the state directory, which is skipped.
pub fn is_watch_failure(e: &StateError) -> bool {
    !matches!(
        e,
        StateError::Malformed { .. } | StateError::NotFound { .. }
    )
}
