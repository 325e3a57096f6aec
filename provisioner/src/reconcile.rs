//! Reconciliation: compare what the cloud runs under our tag with what the node's leases believe, at start
//! and periodically. It only reports; deciding (delete an orphan, fail a lease whose machine vanished) is
//! the lease logic's job, and nothing without our tag is ever even listed. "Ours" is what
//! [`Provisioner::list_ours`] says: with OpenStack, machines marked with our provider owner or with none
//! (made before provider markers), never those of another provider sharing the project, which therefore
//! never show as `unknown` here (nor are their network resources reclaimed).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::error::Result;
use crate::provisioner::{Machine, MachineState, Provisioner};

/// What differs between the cloud and the node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileReport {
    /// Machines tagged as ours whose lease the node does not expect to have a machine (created behind the
    /// node's back, or left over from a lease the node has closed). Another provider's machines in the same
    /// project are not ours and never listed here.
    pub unknown: Vec<Machine>,
    /// Leases expected to have a machine that have none.
    pub missing: Vec<String>,
    /// Leases with more than one machine (should never happen; a repeated launch keeps the oldest).
    pub duplicates: BTreeMap<String, Vec<String>>,
    /// Our machines in ERROR (known leases or not).
    pub errored: Vec<Machine>,
    /// How many tagged machines were seen.
    pub seen: usize,
    /// Leases whose network resources (floating IP, security group) outlived their machine and were
    /// released now.
    #[serde(default)]
    pub reclaimed: Vec<String>,
}

impl ReconcileReport {
    pub fn is_clean(&self) -> bool {
        self.unknown.is_empty()
            && self.missing.is_empty()
            && self.duplicates.is_empty()
            && self.errored.is_empty()
    }
}

/// The report for these machines, given the leases that should have one.
pub fn compare(machines: Vec<Machine>, expected: &BTreeSet<String>) -> ReconcileReport {
    let mut by_lease: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut report = ReconcileReport {
        seen: machines.len(),
        ..ReconcileReport::default()
    };
    for m in machines {
        by_lease
            .entry(m.lease_id.clone())
            .or_default()
            .push(m.server_id.clone());
        if m.state == MachineState::Error {
            report.errored.push(m.clone());
        }
        if !expected.contains(&m.lease_id) {
            report.unknown.push(m);
        }
    }
    report.missing = expected
        .iter()
        .filter(|l| !by_lease.contains_key(*l))
        .cloned()
        .collect();
    report.duplicates = by_lease.into_iter().filter(|(_, v)| v.len() > 1).collect();
    report
}

/// One reconciliation: `expected` are the leases the node believes have a machine (Provisioning, Running,
/// Warned, Grace, Halted).
pub async fn reconcile<P, I, S>(provisioner: &P, expected: I) -> Result<ReconcileReport>
where
    P: Provisioner,
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let expected: BTreeSet<String> = expected.into_iter().map(Into::into).collect();
    let mut report = compare(provisioner.list_ours().await?, &expected);
    report.reclaimed = provisioner.reclaim(&expected).await?;
    for m in &report.unknown {
        warn!(
            lease = m.lease_id,
            server = m.server_id,
            status = m.cloud_status,
            "reconcile: machine of a lease the node does not know"
        );
    }
    for l in &report.missing {
        warn!(
            lease = l,
            "reconcile: lease expects a machine, the cloud has none"
        );
    }
    for (l, ids) in &report.duplicates {
        warn!(lease = l, ?ids, "reconcile: several machines for one lease");
    }
    for l in &report.reclaimed {
        info!(
            lease = l,
            "reconcile: released the network resources a lease's machine left"
        );
    }
    for m in &report.errored {
        warn!(lease = m.lease_id, server = m.server_id, fault = ?m.fault, "reconcile: machine in ERROR");
    }
    if report.is_clean() {
        info!(machines = report.seen, "reconcile: cloud and leases agree");
    }
    Ok(report)
}

/// Reconciles now and then every `every`, handing each outcome to `on_report`. Runs until the future is
/// dropped (the node spawns it and aborts it at shutdown). `expected` is asked afresh each time.
pub async fn reconcile_periodically<P, E, R>(
    provisioner: &P,
    every: Duration,
    mut expected: E,
    mut on_report: R,
) where
    P: Provisioner,
    E: FnMut() -> Vec<String>,
    R: FnMut(Result<ReconcileReport>),
{
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await; // the first tick is immediate: reconcile at start
        let report = reconcile(provisioner, expected()).await;
        if let Err(e) = &report {
            warn!(error = %e, "reconcile: could not list our machines");
        }
        on_report(report);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::error::ProvisionError;
    use crate::provisioner::{Inventory, LaunchRequest, QuotaLeft};

    fn machine(lease: &str, id: &str, state: MachineState) -> Machine {
        Machine {
            lease_id: lease.into(),
            server_id: id.into(),
            name: format!("xov-{lease}"),
            state,
            cloud_status: "ACTIVE".into(),
            addresses: vec![],
            key_name: None,
            flavor: None,
            image_id: None,
            created_at: None,
            fault: None,
        }
    }

    /// An in-memory cloud: shows that the reconciliation works for any `Provisioner`.
    struct Fake(Mutex<Vec<Machine>>);

    impl Provisioner for Fake {
        async fn launch(&self, _: &LaunchRequest) -> Result<Machine> {
            Err(ProvisionError::InvalidRequest("fake".into()))
        }
        async fn status(&self, lease: &str) -> Result<Option<Machine>> {
            Ok(self
                .0
                .lock()
                .unwrap()
                .iter()
                .find(|m| m.lease_id == lease)
                .cloned())
        }
        async fn stop(&self, lease: &str) -> Result<Machine> {
            Err(ProvisionError::NoMachine {
                lease_id: lease.into(),
            })
        }
        async fn start(&self, lease: &str) -> Result<Machine> {
            Err(ProvisionError::NoMachine {
                lease_id: lease.into(),
            })
        }
        async fn delete(&self, _: &str) -> Result<bool> {
            Ok(false)
        }
        async fn list_ours(&self) -> Result<Vec<Machine>> {
            Ok(self.0.lock().unwrap().clone())
        }
        async fn inventory(&self) -> Result<Inventory> {
            Ok(Inventory {
                shapes: vec![],
                quota_left: QuotaLeft::default(),
                warnings: vec![],
            })
        }
    }

    #[tokio::test]
    async fn reports_unknown_missing_duplicates_and_errors() {
        let fake = Fake(Mutex::new(vec![
            machine("known", "s1", MachineState::Running),
            machine("orphan", "s2", MachineState::Running),
            machine("twice", "s3", MachineState::Running),
            machine("twice", "s4", MachineState::Building),
            machine("broken", "s5", MachineState::Error),
        ]));
        let r = reconcile(&fake, ["known", "twice", "gone", "broken"])
            .await
            .unwrap();
        let unknown: Vec<&str> = r.unknown.iter().map(|m| m.server_id.as_str()).collect();
        assert_eq!(unknown, ["s2"]);
        assert_eq!(r.missing, ["gone"]);
        assert_eq!(r.duplicates.get("twice").unwrap(), &["s3", "s4"]);
        assert_eq!(r.errored.len(), 1);
        assert_eq!(r.seen, 5);
        assert!(!r.is_clean());

        let clean = reconcile(&Fake(Mutex::new(vec![])), Vec::<String>::new())
            .await
            .unwrap();
        assert!(clean.is_clean());
    }

    #[tokio::test]
    async fn periodic_reconciliation_starts_at_once_and_repeats() {
        let fake = Fake(Mutex::new(vec![machine(
            "orphan",
            "s1",
            MachineState::Running,
        )]));
        let mut reports = Vec::new();
        let run = reconcile_periodically(&fake, Duration::from_millis(50), Vec::new, |r| {
            reports.push(r.unwrap())
        });
        let _ = tokio::time::timeout(Duration::from_millis(180), run).await;
        assert!(reports.len() >= 3, "{}", reports.len());
        assert!(reports.iter().all(|r| r.unknown.len() == 1));
    }
}
