//! The node's event bus: lease state changes, wallet activity and drain warnings, published in process on a
//! tokio broadcast channel. The local API streams it as server-sent events (`GET /v1/events`, used by the
//! dashboard and `xov events`), and the optional `[events]` hooks (a webhook, a command) receive the drain
//! warnings, so that "funds are running out" reaches people where they look instead of a log line.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tracing::{debug, warn};
use xov_protocol::LeaseState;

use crate::clock::unix_now;
use crate::config::EventsConfig;
use crate::lease::record::{LeaseRecord, Role};

/// Events buffered per subscriber; a slower subscriber is told it lagged and should re-read the state.
const CAPACITY: usize = 1024;
/// How long a webhook or hook command may take before it is given up.
const HOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// One thing that happened on this node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A lease record was written: a new state, a payment, a machine, a refund.
    Lease {
        /// The state before this write (`None` for a new lease).
        #[serde(default)]
        previous: Option<LeaseState>,
        lease: Box<LeaseRecord>,
    },
    /// A lease is about to lose, or has lost, its machine for lack of funds.
    DrainWarning(DrainWarning),
    /// Something the wallet saw: payments to invoices, reorgs, a new chain tip.
    Wallet { event: xov_wallet::WalletEvent },
    /// Something about a lease a person should act on (a provider that does not start, a refund owed...).
    Alert { alert: crate::lease::machine::Alert },
    /// Sent to a subscriber that fell behind: some events were lost; re-read the state.
    Lagged { missed: u64 },
}

impl Event {
    /// The SSE event name: the same as the JSON `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Lease { .. } => "lease",
            Event::DrainWarning(_) => "drain_warning",
            Event::Wallet { .. } => "wallet",
            Event::Alert { .. } => "alert",
            Event::Lagged { .. } => "lagged",
        }
    }
}

/// "Your machine stops soon unless you pay": what the hooks receive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainWarning {
    pub lease_id: String,
    pub role: Role,
    /// `warned` (funds run out soon), `grace` (funds ran out; the machine still runs) or `halted` (stopped).
    pub state: LeaseState,
    /// When the funds run (or ran) out, unix seconds.
    pub runs_until: Option<u64>,
    /// Where to pay to extend the lease (the lease's own address).
    pub pay_address: Option<String>,
    pub message: String,
    pub at: u64,
}

impl DrainWarning {
    /// The warning a lease write implies, if it entered a draining state.
    fn of(l: &LeaseRecord, previous: Option<LeaseState>) -> Option<DrainWarning> {
        if previous == Some(l.state) {
            return None;
        }
        let now = unix_now();
        let left = l.runs_until.map(|u| u.saturating_sub(now));
        let message = match l.state {
            LeaseState::Warned => format!(
                "lease {}: funds run out in {} s; pay {} to extend it",
                short(&l.id),
                left.map_or("a few".into(), |s| s.to_string()),
                l.pay_address.as_deref().unwrap_or("the lease's address")
            ),
            LeaseState::Grace => format!(
                "lease {}: funds ran out; the machine is halted after the grace period unless topped up",
                short(&l.id)
            ),
            LeaseState::Halted => format!(
                "lease {}: the machine is halted; top up to restart it before it is deleted",
                short(&l.id)
            ),
            _ => return None,
        };
        Some(DrainWarning {
            lease_id: l.id.clone(),
            role: l.role,
            state: l.state,
            runs_until: l.runs_until,
            pay_address: l.pay_address.clone(),
            message,
            at: now,
        })
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// The bus. Cloning shares it.
#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus::new()
    }
}

impl EventBus {
    pub fn new() -> EventBus {
        EventBus {
            tx: broadcast::channel(CAPACITY).0,
        }
    }

    /// Publishes to whoever listens; nobody listening is fine.
    pub fn publish(&self, e: Event) {
        let _ = self.tx.send(e);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    /// Called by the lease engine after it persisted a record: the change, and a drain warning when the
    /// lease just entered `warned`, `grace` or `halted`.
    pub fn lease_saved(&self, l: &LeaseRecord, previous: Option<LeaseState>) {
        let warning = DrainWarning::of(l, previous);
        self.publish(Event::Lease {
            previous,
            lease: Box::new(l.clone()),
        });
        if let Some(w) = warning {
            self.publish(Event::DrainWarning(w));
        }
    }

    /// Forwards the wallet's events onto the bus until the wallet goes away.
    pub fn forward_wallet(&self, wallet: &xov_wallet::XovWallet) {
        let mut rx = wallet.subscribe();
        let bus = self.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(event) => bus.publish(Event::Wallet { event }),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        bus.publish(Event::Lagged { missed })
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
    }

    /// Runs the configured hooks for every drain warning.
    pub fn spawn_hooks(&self, cfg: EventsConfig) {
        if cfg.webhook.is_none() && cfg.command.is_none() {
            return;
        }
        let mut rx = self.subscribe();
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(HOOK_TIMEOUT)
                .build()
                .unwrap_or_default();
            loop {
                let w = match rx.recv().await {
                    Ok(Event::DrainWarning(w)) => w,
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        warn!(
                            missed = n,
                            "event hooks fell behind; some drain warnings were not delivered"
                        );
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                if let Some(url) = &cfg.webhook {
                    deliver_webhook(&http, url, &w).await;
                }
                if let Some(cmd) = &cfg.command {
                    run_command(cmd, &w).await;
                }
            }
        });
    }
}

async fn deliver_webhook(http: &reqwest::Client, url: &str, w: &DrainWarning) {
    let body = Event::DrainWarning(w.clone());
    match http.post(url).json(&body).send().await {
        Ok(r) if r.status().is_success() => {
            debug!(lease = %w.lease_id, "drain warning sent to webhook")
        }
        Ok(r) => {
            warn!(lease = %w.lease_id, status = %r.status(), "events.webhook refused the drain warning")
        }
        Err(e) => {
            warn!(lease = %w.lease_id, error = %e, "cannot deliver the drain warning to events.webhook")
        }
    }
}

/// Runs `sh -c COMMAND` with the warning in the environment (`XOV_EVENT` holds it as JSON).
async fn run_command(cmd: &str, w: &DrainWarning) {
    let json = serde_json::to_string(&Event::DrainWarning(w.clone())).unwrap_or_default();
    let state = serde_json::to_value(w.state)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("XOV_EVENT", json)
        .env("XOV_LEASE_ID", &w.lease_id)
        .env("XOV_LEASE_STATE", state)
        .env("XOV_MESSAGE", &w.message)
        .env(
            "XOV_RUNS_UNTIL",
            w.runs_until.map(|u| u.to_string()).unwrap_or_default(),
        )
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .status();
    match tokio::time::timeout(HOOK_TIMEOUT, child).await {
        Ok(Ok(s)) if s.success() => {}
        Ok(Ok(s)) => warn!(lease = %w.lease_id, status = %s, "events.command failed"),
        Ok(Err(e)) => warn!(lease = %w.lease_id, error = %e, "cannot run events.command"),
        Err(_) => warn!(lease = %w.lease_id, "events.command took too long and was stopped"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(state: LeaseState) -> LeaseRecord {
        serde_json::from_value(serde_json::json!({
            "id": "ab".repeat(32), "role": "buyer", "state": state, "counterparty": "x", "pool": "p",
            "offer_id": 1, "image": "debian-12", "hours": 1, "price_sats_per_hour": 3600, "vcpus": 1,
            "ram_mib": 512, "disk_gib": 1, "ssh_public_key": "k", "refund_address": null, "order_hex": "",
            "invoice_hex": null, "pay_address": "bcrt1qpay", "pay_uri": null, "amount_sat": 3600,
            "paid_sat": 3600, "started_at": 1, "runs_until": unix_now() + 30, "instance": null,
            "refunded_sat": 0, "history": []
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn entering_a_draining_state_warns_once() {
        let bus = EventBus::new();
        let mut rx = bus.subscribe();
        bus.lease_saved(&lease(LeaseState::Warned), Some(LeaseState::Running));
        assert!(matches!(rx.recv().await.unwrap(), Event::Lease { .. }));
        match rx.recv().await.unwrap() {
            Event::DrainWarning(w) => {
                assert_eq!(w.state, LeaseState::Warned);
                assert!(w.message.contains("pay bcrt1qpay"), "{}", w.message);
            }
            other => panic!("expected a drain warning, got {other:?}"),
        }
        // The same state written again (a top-up note, say) does not warn again.
        bus.lease_saved(&lease(LeaseState::Warned), Some(LeaseState::Warned));
        assert!(matches!(rx.recv().await.unwrap(), Event::Lease { .. }));
        assert!(rx.try_recv().is_err());
        // A running lease never warns.
        bus.lease_saved(&lease(LeaseState::Running), Some(LeaseState::Warned));
        assert!(matches!(rx.recv().await.unwrap(), Event::Lease { .. }));
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn the_hook_command_receives_the_warning() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("hook.out");
        let bus = EventBus::new();
        bus.spawn_hooks(EventsConfig {
            webhook: None,
            command: Some(format!(
                "echo \"$XOV_LEASE_STATE $XOV_LEASE_ID\" > {}.tmp && mv {0}.tmp {0}",
                out.display()
            )),
        });
        let mut rx = bus.subscribe();
        bus.lease_saved(&lease(LeaseState::Grace), Some(LeaseState::Warned));
        // Wait for the warning to be on the bus, then for the file the hook writes (atomically, by rename).
        while !matches!(rx.recv().await.unwrap(), Event::DrainWarning(_)) {}
        let text = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Ok(t) = tokio::fs::read_to_string(&out).await {
                    return t;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("hook command ran");
        assert_eq!(text.trim(), format!("grace {}", "ab".repeat(32)));
    }
}
