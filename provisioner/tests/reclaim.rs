//! Reconciliation reclaims what a lease's machine left behind in Neutron: a floating IP and a security group
//! whose server is gone (deleted behind the node's back, or the node crashed between deleting the server and
//! releasing them). Its own test binary: with no grace period it would release the groups that launches of
//! tests running beside it make before their servers; its tests' providers have owners of their own, so they
//! never reclaim each other's.
//!
//! Providers sharing one project (each with its own owner): each lists and reconciles only its own machines
//! and those made before provider markers, never the other's, and reclaims only its own orphans.

mod support;

use serde_json::json;
use support::{lease_id, owner, setup, BUYER_KEY};
use xov_provisioner::{reconcile, OpenStackProvisioner, Provisioner, LEASE_TAG, PROVIDER_TAG};

#[tokio::test]
async fn an_orphaned_floating_ip_and_group_are_reclaimed_by_reconciliation() {
    let Some(ctx) =
        setup("an_orphaned_floating_ip_and_group_are_reclaimed_by_reconciliation").await
    else {
        return;
    };
    let mut cfg = ctx.networked_config();
    cfg.access.orphan_grace_secs = 0;
    cfg.owner = Some(owner("reclaimer"));
    let p = OpenStackProvisioner::new(cfg, ctx.mapping()).unwrap();
    let n = p.neutron();
    let lease = lease_id();
    let m = p.launch(&ctx.request(&lease, BUYER_KEY)).await.unwrap();
    assert_eq!(n.floating_ips_of(&lease).await.unwrap().len(), 1);
    assert_eq!(n.security_groups_of(&lease).await.unwrap().len(), 1);

    // The server goes without the provider releasing the rest.
    ctx.raw.delete_server(&m.server_id).await;
    assert!(ctx.raw.wait_gone(&m.server_id, 120).await, "server deleted");

    // While the node still expects a machine for the lease, nothing is released (it reports it missing).
    let report = reconcile(&p, [lease.clone()]).await.unwrap();
    assert_eq!(report.missing, [lease.clone()]);
    assert!(!report.reclaimed.contains(&lease), "{report:?}");
    assert_eq!(n.floating_ips_of(&lease).await.unwrap().len(), 1);

    // Once it does not: the floating IP and the group are released, as Neutron's own listing shows.
    let report = reconcile(&p, Vec::<String>::new()).await.unwrap();
    assert!(report.reclaimed.contains(&lease), "{report:?}");
    assert!(n.floating_ips_of(&lease).await.unwrap().is_empty());
    assert!(n.security_groups_of(&lease).await.unwrap().is_empty());
    let again = reconcile(&p, Vec::<String>::new()).await.unwrap();
    assert!(
        !again.reclaimed.contains(&lease),
        "released once: {again:?}"
    );
    p.delete(&lease).await.unwrap();
}

#[tokio::test]
async fn providers_sharing_a_project_see_and_reclaim_only_their_own() {
    let Some(ctx) = setup("providers_sharing_a_project_see_and_reclaim_only_their_own").await
    else {
        return;
    };
    let provider = |name: &str| {
        let mut cfg = ctx.networked_config();
        cfg.access.orphan_grace_secs = 0;
        cfg.owner = Some(owner(name));
        OpenStackProvisioner::new(cfg, ctx.mapping()).unwrap()
    };
    let (a, b) = (provider("a"), provider("b"));
    let (la, lb, legacy, stranger) = (lease_id(), lease_id(), lease_id(), lease_id());
    let ma = a.launch(&ctx.request(&la, BUYER_KEY)).await.unwrap();
    let mb = b.launch(&ctx.request(&lb, BUYER_KEY)).await.unwrap();
    // Made before provider markers (only the lease tag), and by a provider that is neither.
    let image = ctx.raw.image_id(&ctx.lab.image_name).await;
    let old = ctx
        .raw
        .create_server("legacy", "1", &image, json!({ LEASE_TAG: legacy }))
        .await;
    ctx.janitor.server(&old);
    let strangers = ctx
        .raw
        .create_server(
            "stranger",
            "1",
            &image,
            json!({ LEASE_TAG: stranger, PROVIDER_TAG: "someone-else" }),
        )
        .await;
    ctx.janitor.server(&strangers);

    struct Case<'a> {
        name: &'a str,
        p: &'a OpenStackProvisioner,
        sees: Vec<&'a str>,
        never: Vec<&'a str>,
    }
    let cases = [
        Case {
            name: "provider a",
            p: &a,
            sees: vec![&ma.server_id, &old],
            never: vec![&mb.server_id, &strangers],
        },
        Case {
            name: "provider b",
            p: &b,
            sees: vec![&mb.server_id, &old],
            never: vec![&ma.server_id, &strangers],
        },
    ];
    for c in &cases {
        let listed: Vec<String> =
            c.p.list_ours()
                .await
                .unwrap()
                .into_iter()
                .map(|m| m.server_id)
                .collect();
        for id in &c.sees {
            assert!(listed.iter().any(|l| l == id), "{}: lists {id}", c.name);
        }
        for id in &c.never {
            assert!(
                !listed.iter().any(|l| l == id),
                "{}: never lists {id}",
                c.name
            );
        }
        let report = reconcile(c.p, Vec::<String>::new()).await.unwrap();
        let unknown: Vec<&str> = report
            .unknown
            .iter()
            .map(|m| m.server_id.as_str())
            .collect();
        for id in &c.never {
            assert!(
                !unknown.contains(id),
                "{}: {id} is not its to report",
                c.name
            );
        }
    }
    assert_eq!(
        a.status(&lb).await.unwrap(),
        None,
        "a cannot find b's lease"
    );
    assert!(a.neutron().floating_ips_of(&lb).await.unwrap().is_empty());
    assert!(!a.delete(&lb).await.unwrap(), "nor delete it");
    assert!(ctx.raw.server(&mb.server_id).await.is_some());

    // B's server goes behind its back: its floating IP and group are B's orphans, and only B reclaims them.
    ctx.raw.delete_server(&mb.server_id).await;
    assert!(
        ctx.raw.wait_gone(&mb.server_id, 120).await,
        "server deleted"
    );
    let by_a = reconcile(&a, [la.clone()]).await.unwrap();
    assert!(!by_a.reclaimed.contains(&lb), "{by_a:?}");
    assert_eq!(b.neutron().floating_ips_of(&lb).await.unwrap().len(), 1);
    assert_eq!(b.neutron().security_groups_of(&lb).await.unwrap().len(), 1);
    let by_b = reconcile(&b, Vec::<String>::new()).await.unwrap();
    assert!(by_b.reclaimed.contains(&lb), "{by_b:?}");
    assert!(b.neutron().floating_ips_of(&lb).await.unwrap().is_empty());
    assert!(b
        .neutron()
        .security_groups_of(&lb)
        .await
        .unwrap()
        .is_empty());
    // A's lease kept everything throughout.
    assert_eq!(a.neutron().floating_ips_of(&la).await.unwrap().len(), 1);
    assert!(a.delete(&la).await.unwrap());
}
