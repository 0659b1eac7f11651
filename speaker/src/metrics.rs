//! The speaker's Prometheus metrics, one label set per peer.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::bgp::fsm::State;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PeerLabels {
    pub peer: String,
}

/// Shared by every session task (the families are internally synchronised).
#[derive(Debug, Clone, Default)]
pub struct SpeakerMetrics {
    /// BGP4-MIB bgpPeerState numbering: idle(1) connect(2) active(3) opensent(4)
    /// openconfirm(5) established(6).
    pub session_state: Family<PeerLabels, Gauge>,
    pub prefixes_advertised: Family<PeerLabels, Gauge>,
    pub updates_sent: Family<PeerLabels, Counter>,
    /// Established sessions that went down.
    pub session_flaps: Family<PeerLabels, Counter>,
    pub config_reloads: Counter,
    pub config_reload_errors: Counter,
    /// BFD session state, RFC 5880 §4.1 numbering: AdminDown 0, Down 1, Init 2, Up 3.
    pub bfd_session_state: Family<PeerLabels, Gauge>,
    pub bfd_state_changes: Family<PeerLabels, Counter>,
    /// Sessions taken down because the Detection Time passed without a packet (Diag 1).
    pub bfd_detection_expiries: Family<PeerLabels, Counter>,
    /// Received BFD packets discarded (malformed, wrong TTL, no session, §6.8.6 checks).
    pub bfd_packets_dropped: Counter,
}

impl SpeakerMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("leafbridge_speaker");
        r.register(
            "bgp_session_state",
            "BGP session state (BGP4-MIB numbering, 6 = Established)",
            self.session_state.clone(),
        );
        r.register(
            "bgp_prefixes_advertised",
            "Prefixes in the peer's Adj-RIB-Out",
            self.prefixes_advertised.clone(),
        );
        r.register(
            "bgp_updates_sent",
            "UPDATE messages sent",
            self.updates_sent.clone(),
        );
        r.register(
            "bgp_session_flaps",
            "Established sessions that went down",
            self.session_flaps.clone(),
        );
        r.register(
            "config_reloads",
            "Configuration reloads applied",
            self.config_reloads.clone(),
        );
        r.register(
            "config_reload_errors",
            "Configuration edits rejected (running config kept)",
            self.config_reload_errors.clone(),
        );
        r.register(
            "bfd_session_state",
            "BFD session state (RFC 5880 numbering, 3 = Up)",
            self.bfd_session_state.clone(),
        );
        r.register(
            "bfd_state_changes",
            "BFD session state changes",
            self.bfd_state_changes.clone(),
        );
        r.register(
            "bfd_detection_expiries",
            "BFD sessions declared down by the Detection Time",
            self.bfd_detection_expiries.clone(),
        );
        r.register(
            "bfd_packets_dropped",
            "Received BFD packets discarded",
            self.bfd_packets_dropped.clone(),
        );
    }

    pub fn labels(peer: &str) -> PeerLabels {
        PeerLabels {
            peer: peer.to_owned(),
        }
    }

    pub fn forget(&self, peer: &str) {
        let l = Self::labels(peer);
        self.session_state.remove(&l);
        self.prefixes_advertised.remove(&l);
        self.updates_sent.remove(&l);
        self.session_flaps.remove(&l);
    }

    pub fn forget_bfd(&self, peer: &str) {
        let l = Self::labels(peer);
        self.bfd_session_state.remove(&l);
        self.bfd_state_changes.remove(&l);
        self.bfd_detection_expiries.remove(&l);
    }
}

pub fn state_number(s: State) -> i64 {
    match s {
        State::Idle => 1,
        State::Connect => 2,
        State::Active => 3,
        State::OpenSent => 4,
        State::OpenConfirm => 5,
        State::Established => 6,
    }
}
