//! `GET /metrics`: the node's numbers in the Prometheus text format (version 0.0.4), computed at each scrape
//! from the live state, so there are no counters to keep in step. Behind the same token as the rest of the
//! API: point Prometheus' `authorization.credentials_file` at `<datadir>/.cookie`.

use std::collections::BTreeMap;
use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use xov_protocol::LeaseState;

use crate::api::AppState;
use crate::clock::unix_now;
use crate::lease::record::{LeaseRecord, Role};

/// Upper bounds (seconds) of the provisioning latency histogram: payment confirmed → machine running.
const LATENCY_BUCKETS: [f64; 8] = [5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0];

/// Every lease state, so each series exists (at 0) from the first scrape.
const STATES: [LeaseState; 13] = xov_protocol::lease::ALL_STATES;

/// The name a state has in the API and in metric labels (`payment_seen`).
pub fn state_name(s: LeaseState) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_else(|| format!("{s:?}").to_lowercase())
}

/// Seconds from the step that asked for the machine to the first `running` step, for provider leases that ran.
pub fn provisioning_latency(l: &LeaseRecord) -> Option<u64> {
    let start = l
        .history
        .iter()
        .find(|s| s.state == LeaseState::Provisioning)?
        .at;
    let running = l
        .history
        .iter()
        .find(|s| s.state == LeaseState::Running)?
        .at;
    Some(running.saturating_sub(start))
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            let l: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = write!(self.0, "{{{}}}", l.join(","));
        }
        let _ = writeln!(self.0, " {value}");
    }
    fn gauge(&mut self, name: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, "gauge", help);
        self.sample(name, &[], value);
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders the metrics text from the node's parts.
pub fn render(
    net: Option<(usize, &crate::network::GossipStats)>,
    offers: usize,
    own_offers: usize,
    leases: &[LeaseRecord],
    tip_height: Option<u32>,
    chain: Option<&xov_wallet::ChainHealth>,
    uptime_secs: u64,
) -> String {
    let mut o = Out(String::new());
    o.gauge(
        "xov_up_seconds",
        "Seconds since the node started.",
        uptime_secs,
    );
    if let Some((p, g)) = net {
        o.gauge("xov_peers", "Connected libp2p peers.", p);
        o.family(
            "xov_connections_refused_at_caps_total",
            "counter",
            "Connections (dialed or accepted) refused before their handshake because the node was at its connection caps ([network] max_connections, max_incoming).",
        );
        o.sample(
            "xov_connections_refused_at_caps_total",
            &[],
            g.refused_at_caps,
        );
        o.gauge(
            "xov_lease_slots_used",
            "Connections to lease counterparties held above the connection caps, in lease slots (at most 4).",
            g.lease_slots_used,
        );
        o.family(
            "xov_gossip_messages_total",
            "counter",
            "Gossip messages by outcome of this node's checks.",
        );
        for (outcome, n) in [
            ("accepted", g.accepted),
            ("rejected", g.rejected),
            ("ignored", g.ignored),
            ("rate_limited", g.rate_limited),
            ("other_chain", g.other_chain),
            ("other_version", g.other_version),
        ] {
            o.sample("xov_gossip_messages_total", &[("outcome", outcome)], n);
        }
        o.family(
            "xov_abuse_total",
            "counter",
            "Defences that fired: peers banned, gossip frames refused unread, sync answers that broke the protocol, sync requests refused over their rate.",
        );
        for (kind, n) in [
            ("bans", g.bans),
            ("invalid_frames", g.invalid_frames),
            ("sync_faults", g.sync_faults),
            ("sync_refused", g.sync_refused),
        ] {
            o.sample("xov_abuse_total", &[("kind", kind)], n);
        }
    }
    o.gauge(
        "xov_offers",
        "Live offers in this node's book (all pools).",
        offers,
    );
    o.gauge(
        "xov_own_offers",
        "Live offers this node publishes.",
        own_offers,
    );

    let mut by: BTreeMap<(String, &'static str), u64> = BTreeMap::new();
    for s in STATES {
        for role in ["provider", "buyer"] {
            by.insert((state_name(s), role), 0);
        }
    }
    for l in leases {
        let role = match l.role {
            Role::Provider => "provider",
            Role::Buyer => "buyer",
        };
        *by.entry((state_name(l.state), role)).or_default() += 1;
    }
    o.family(
        "xov_leases",
        "gauge",
        "Leases by state and by this node's role.",
    );
    for ((state, role), n) in &by {
        o.sample("xov_leases", &[("state", state), ("role", role)], n);
    }

    let received: u64 = leases
        .iter()
        .filter(|l| l.role == Role::Provider)
        .map(|l| l.paid_sat)
        .sum();
    let paid: u64 = leases
        .iter()
        .filter(|l| l.role == Role::Buyer)
        .map(|l| l.paid_sat)
        .sum();
    let refunded: u64 = leases
        .iter()
        .filter(|l| l.role == Role::Provider)
        .map(|l| l.refunded_sat)
        .sum();
    o.family(
        "xov_sats_received_total",
        "counter",
        "Confirmed sats received for leases this node provided.",
    );
    o.sample("xov_sats_received_total", &[], received);
    o.family(
        "xov_sats_refunded_total",
        "counter",
        "Sats this node refunded to buyers.",
    );
    o.sample("xov_sats_refunded_total", &[], refunded);
    o.family(
        "xov_sats_paid_total",
        "counter",
        "Sats providers confirmed for leases this node bought.",
    );
    o.sample("xov_sats_paid_total", &[], paid);

    let latencies: Vec<u64> = leases
        .iter()
        .filter(|l| l.role == Role::Provider)
        .filter_map(provisioning_latency)
        .collect();
    let name = "xov_provisioning_seconds";
    o.family(
        name,
        "histogram",
        "Time from a paid lease's launch request to its machine running.",
    );
    for b in LATENCY_BUCKETS {
        let n = latencies.iter().filter(|&&s| s as f64 <= b).count();
        o.sample(&format!("{name}_bucket"), &[("le", &b.to_string())], n);
    }
    o.sample(
        &format!("{name}_bucket"),
        &[("le", "+Inf")],
        latencies.len(),
    );
    o.sample(&format!("{name}_sum"), &[], latencies.iter().sum::<u64>());
    o.sample(&format!("{name}_count"), &[], latencies.len());

    if let Some(h) = tip_height {
        o.gauge("xov_chain_height", "Height of the wallet's chain tip.", h);
    }
    if let Some(c) = chain {
        o.family(
            "xov_chain_state",
            "gauge",
            "The chain source's state: 1 for the current one (connecting, syncing, synced, stalled).",
        );
        for s in ["connecting", "syncing", "synced", "stalled"] {
            let v = u8::from(c.state.as_str() == s);
            o.sample("xov_chain_state", &[("state", s), ("source", &c.source)], v);
        }
        o.gauge("xov_chain_peers", "Chain-source peers connected.", c.peers);
        o.family(
            "xov_chain_tip",
            "gauge",
            "Chain tips: the wallet's, the chain client's headers', the peers' announced.",
        );
        o.sample("xov_chain_tip", &[("which", "wallet")], c.wallet_tip);
        if let Some(t) = c.header_tip {
            o.sample("xov_chain_tip", &[("which", "headers")], t);
        }
        if let Some(t) = c.peer_tip {
            o.sample("xov_chain_tip", &[("which", "peers")], t);
        }
        o.gauge(
            "xov_chain_secs_since_progress",
            "Seconds since the chain source last made progress.",
            c.secs_since_progress,
        );
        o.family(
            "xov_chain_restarts_total",
            "counter",
            "Light-client restarts by the supervisor.",
        );
        o.sample("xov_chain_restarts_total", &[], c.restarts);
    }
    o.0
}

/// `GET /metrics`.
pub async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    let net = st.net.status().await.ok();
    let (offers, own) = match st.market.read() {
        Ok(m) => (m.book().len(), m.own_offers().len()),
        Err(_) => (0, 0),
    };
    let leases = st.leases.list();
    let tip = st.wallet.as_ref().map(|w| w.tip_height());
    let chain = st.wallet.as_ref().map(|w| w.chain_health());
    let body = render(
        net.as_ref().map(|s| (s.connected_peers, &s.gossip)),
        offers,
        own,
        &leases,
        tip,
        chain.as_ref(),
        unix_now().saturating_sub(st.started_at),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::record::Step;

    fn lease(role: &str, state: LeaseState, steps: &[(u64, LeaseState)]) -> LeaseRecord {
        let mut l: LeaseRecord = serde_json::from_value(serde_json::json!({
            "id": "cd".repeat(32), "role": role, "state": state, "counterparty": "x", "pool": "p",
            "offer_id": 1, "image": "debian-12", "hours": 1, "price_sats_per_hour": 3600, "vcpus": 1,
            "ram_mib": 512, "disk_gib": 1, "ssh_public_key": "k", "refund_address": null, "order_hex": "",
            "invoice_hex": null, "pay_address": null, "pay_uri": null, "amount_sat": 3600,
            "paid_sat": 3600, "started_at": null, "runs_until": null, "instance": null,
            "refunded_sat": 0, "history": []
        }))
        .unwrap();
        l.history = steps
            .iter()
            .map(|&(at, state)| Step {
                at,
                state,
                detail: String::new(),
            })
            .collect();
        l
    }

    #[test]
    fn text_format_has_every_family_and_counts() {
        let leases = vec![
            lease(
                "provider",
                LeaseState::Running,
                &[
                    (100, LeaseState::Funded),
                    (101, LeaseState::Provisioning),
                    (121, LeaseState::Running),
                ],
            ),
            lease(
                "provider",
                LeaseState::Invoiced,
                &[(5, LeaseState::Invoiced)],
            ),
            lease("buyer", LeaseState::Running, &[]),
        ];
        let chain = xov_wallet::ChainHealth {
            source: "compact block filters".into(),
            state: xov_wallet::ChainState::Stalled,
            peers: 1,
            header_tip: Some(152),
            peer_tip: Some(153),
            wallet_tip: 150,
            secs_since_progress: 95,
            restarts: 4,
            last_restart_reason: None,
            last_warning: None,
        };
        let gossip = crate::network::GossipStats {
            accepted: 11,
            bans: 2,
            invalid_frames: 1,
            refused_at_caps: 5,
            lease_slots_used: 1,
            ..Default::default()
        };
        let t = render(
            Some((3, &gossip)),
            7,
            2,
            &leases,
            Some(150),
            Some(&chain),
            42,
        );
        for line in [
            "xov_chain_state{state=\"stalled\",source=\"compact block filters\"} 1",
            "xov_chain_state{state=\"synced\",source=\"compact block filters\"} 0",
            "xov_chain_peers 1",
            "xov_connections_refused_at_caps_total 5",
            "xov_lease_slots_used 1",
            "xov_chain_tip{which=\"wallet\"} 150",
            "xov_chain_tip{which=\"headers\"} 152",
            "xov_chain_tip{which=\"peers\"} 153",
            "xov_chain_secs_since_progress 95",
            "xov_chain_restarts_total 4",
        ] {
            assert!(t.lines().any(|l| l == line), "{line} missing from\n{t}");
        }
        for line in [
            "xov_peers 3",
            "xov_gossip_messages_total{outcome=\"accepted\"} 11",
            "xov_abuse_total{kind=\"bans\"} 2",
            "xov_abuse_total{kind=\"invalid_frames\"} 1",
            "xov_abuse_total{kind=\"sync_faults\"} 0",
            "xov_offers 7",
            "xov_own_offers 2",
            "xov_leases{state=\"running\",role=\"provider\"} 1",
            "xov_leases{state=\"running\",role=\"buyer\"} 1",
            "xov_leases{state=\"invoiced\",role=\"provider\"} 1",
            "xov_leases{state=\"closed\",role=\"buyer\"} 0",
            "xov_sats_received_total 7200",
            "xov_sats_paid_total 3600",
            "xov_provisioning_seconds_bucket{le=\"15\"} 0",
            "xov_provisioning_seconds_bucket{le=\"30\"} 1",
            "xov_provisioning_seconds_bucket{le=\"+Inf\"} 1",
            "xov_provisioning_seconds_sum 20",
            "xov_provisioning_seconds_count 1",
            "xov_chain_height 150",
            "# TYPE xov_sats_received_total counter",
        ] {
            assert!(t.lines().any(|l| l == line), "missing `{line}` in:\n{t}");
        }
        // Every sample line is `name{labels} value` with a numeric value.
        for l in t.lines().filter(|l| !l.starts_with('#')) {
            let v = l.rsplit(' ').next().unwrap();
            assert!(v.parse::<f64>().is_ok(), "bad sample {l}");
        }
    }
}
