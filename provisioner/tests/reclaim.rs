//! Reconciliation reclaims what a lease's machine left behind in Neutron: a floating IP and a security group
//! whose server is gone (deleted behind the node's back, or the node crashed between deleting the server and
//! releasing them). Its own test binary: with no grace period it would release the groups that launches of
//! tests running beside it make before their servers.

mod support;

use support::{lease_id, setup, BUYER_KEY};
use xov_provisioner::{reconcile, OpenStackProvisioner, Provisioner};

#[tokio::test]
async fn an_orphaned_floating_ip_and_group_are_reclaimed_by_reconciliation() {
    let Some(ctx) =
        setup("an_orphaned_floating_ip_and_group_are_reclaimed_by_reconciliation").await
    else {
        return;
    };
    let mut cfg = ctx.networked_config();
    cfg.access.orphan_grace_secs = 0;
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
