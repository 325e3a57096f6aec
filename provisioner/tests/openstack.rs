//! The OpenStack backend against the real lab (`testnet/openstack/up.sh`, started if it does not answer):
//! the lease lifecycle, idempotent launches, inventory, faults injected by a proxy in front of Nova, and
//! reconciliation. Tests run in parallel on the shared lab: random lease ids, no assumption of an empty
//! cloud, and a janitor that removes what each test created.

mod support;

use std::time::{Duration, Instant};

use axum::http::Method;
use serde_json::json;
use support::fault_proxy::{Fault, FaultProxy, Path};
use support::{lease_id, setup, BUYER_KEY, OTHER_KEY};
use xov_provisioner::{
    keypair_name, reconcile, Auth, ImageEntry, KeyDelivery, MachineState, MappingEntry,
    OpenStackProvisioner, ProvisionError, Provisioner, RetryPolicy, Secret, LEASE_TAG,
};

fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        initial_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(400),
    }
}

#[tokio::test]
async fn launch_stop_start_delete() {
    let Some(ctx) = setup("launch_stop_start_delete").await else {
        return;
    };
    let p = OpenStackProvisioner::new(ctx.config(), ctx.mapping()).unwrap();
    let lease = lease_id();
    let image_id = ctx.raw.image_id(&ctx.lab.image_name).await;

    let m = p.launch(&ctx.request(&lease, BUYER_KEY)).await.unwrap();
    assert_eq!(m.state, MachineState::Running);
    assert_eq!(m.cloud_status, "ACTIVE");
    assert_eq!(m.lease_id, lease);
    assert_eq!(m.key_name.as_deref(), Some(keypair_name(&lease).as_str()));
    assert_eq!(m.flavor.as_deref(), Some("m1.tiny"));
    assert_eq!(
        m.image_id.as_deref(),
        Some(image_id.as_str()),
        "debian-12 maps to tiny-raw"
    );
    assert!(m.addresses.is_empty(), "networks: none");

    // Nova agrees: tagged with the lease, booted with the buyer's key
    let raw = ctx.raw.server(&m.server_id).await.expect("server exists");
    assert_eq!(raw["metadata"][LEASE_TAG], lease.as_str());
    assert_eq!(raw["status"], "ACTIVE");
    assert_eq!(raw["key_name"], keypair_name(&lease));
    let kp = ctx
        .raw
        .keypair(&keypair_name(&lease))
        .await
        .expect("key pair");
    assert_eq!(kp["public_key"], BUYER_KEY);
    assert_eq!(
        p.status(&lease).await.unwrap().map(|m| m.server_id),
        Some(m.server_id.clone())
    );

    let stopped = p.stop(&lease).await.unwrap();
    assert_eq!(stopped.state, MachineState::Stopped);
    assert_eq!(
        ctx.raw.server(&m.server_id).await.unwrap()["status"],
        "SHUTOFF"
    );
    // stopping a stopped machine is not an error
    assert_eq!(p.stop(&lease).await.unwrap().state, MachineState::Stopped);

    let started = p.start(&lease).await.unwrap();
    assert_eq!(started.state, MachineState::Running);
    assert_eq!(started.server_id, m.server_id);
    assert_eq!(
        ctx.raw.server(&m.server_id).await.unwrap()["status"],
        "ACTIVE"
    );

    assert!(p.delete(&lease).await.unwrap(), "a machine was deleted");
    assert!(ctx.raw.gone(&m.server_id).await, "gone when delete returns");
    assert!(
        ctx.raw.keypair(&keypair_name(&lease)).await.is_none(),
        "key pair deleted"
    );
    assert_eq!(p.status(&lease).await.unwrap(), None);
    assert!(!p.delete(&lease).await.unwrap(), "deleting twice is fine");
    assert!(matches!(
        p.stop(&lease).await,
        Err(ProvisionError::NoMachine { .. })
    ));
    // one token served the whole lifecycle
    assert_eq!(p.keystone_authentications(), 1);
}

#[tokio::test]
async fn repeated_launch_returns_the_same_server() {
    let Some(ctx) = setup("repeated_launch_returns_the_same_server").await else {
        return;
    };
    let p = OpenStackProvisioner::new(ctx.config(), ctx.mapping()).unwrap();
    let lease = lease_id();
    let req = ctx.request(&lease, BUYER_KEY);
    let first = p.launch(&req).await.unwrap();
    let again = p.launch(&req).await.unwrap();
    assert_eq!(again.server_id, first.server_id);

    // a restarted node: new provisioner, empty caches, finds the tagged server
    let restarted = OpenStackProvisioner::new(ctx.config(), ctx.mapping()).unwrap();
    let after_restart = restarted.launch(&req).await.unwrap();
    assert_eq!(after_restart.server_id, first.server_id);
    assert_eq!(ctx.raw.servers_of_lease(&lease).await.len(), 1);

    // two launches of one lease at the same time in one node: one server
    let lease2 = lease_id();
    let req2 = ctx.request(&lease2, OTHER_KEY);
    let (a, b) = tokio::join!(p.launch(&req2), p.launch(&req2));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.server_id, b.server_id);
    assert_eq!(ctx.raw.servers_of_lease(&lease2).await.len(), 1);

    assert!(p.delete(&lease).await.unwrap());
    assert!(p.delete(&lease2).await.unwrap());
}

#[tokio::test]
async fn inventory_lists_the_lab_flavor_and_image() {
    let Some(ctx) = setup("inventory_lists_the_lab_flavor_and_image").await else {
        return;
    };
    let mut mapping = ctx.mapping();
    mapping.entries[0]
        .images
        .push(ImageEntry::Name("no-such-image-xov".into()));
    mapping.entries.push(MappingEntry {
        flavor: "no-such-flavor-xov".into(),
        images: vec![ImageEntry::Name(ctx.lab.image_name.clone())],
        price_sats_per_hour: 100,
        max_instances: None,
        gpu: None,
    });
    // the same flavor by id, capped at zero by the provider: offered with capacity 0
    mapping.entries.push(MappingEntry {
        flavor: ctx.lab.flavor_id.clone(),
        images: vec![ImageEntry::Name(ctx.lab.image_name.clone())],
        price_sats_per_hour: 5000,
        max_instances: Some(0),
        gpu: None,
    });
    let p = OpenStackProvisioner::new(ctx.config(), mapping).unwrap();
    let inv = p.inventory().await.unwrap();
    let image_id = ctx.raw.image_id(&ctx.lab.image_name).await;

    assert_eq!(inv.shapes.len(), 2, "{inv:#?}");
    let tiny = &inv.shapes[0];
    assert_eq!(
        (tiny.flavor_id.as_str(), tiny.flavor_name.as_str()),
        ("1", "m1.tiny")
    );
    assert_eq!((tiny.vcpus, tiny.ram_mib, tiny.disk_gib), (1, 512, 1));
    assert_eq!(tiny.price_sats_per_hour, 900);
    let names: Vec<&str> = tiny.images.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["tiny-raw", "debian-12"]);
    assert!(tiny
        .images
        .iter()
        .all(|i| i.image_id == image_id && i.cloud_name == "tiny-raw"));
    // capacity comes from the quota left (the lab has room; other tests may be running machines)
    let left = inv
        .quota_left
        .instances
        .expect("the lab has an instance quota");
    assert!(
        tiny.capacity >= 1 && u64::from(tiny.capacity) <= left,
        "{inv:#?}"
    );
    assert_eq!(inv.shapes[1].capacity, 0, "max_instances = 0");
    assert_eq!(inv.shapes[1].price_sats_per_hour, 5000);

    assert!(
        inv.warnings.iter().any(|w| w.contains("no-such-image-xov")),
        "{:?}",
        inv.warnings
    );
    assert!(
        inv.warnings
            .iter()
            .any(|w| w.contains("no-such-flavor-xov")),
        "{:?}",
        inv.warnings
    );
}

/// The lab's GPU flavor (`g1.a100`: one unit of the custom resource class CUSTOM_GPU_A100, which the lab's
/// compute node carries) becomes a GPU offer under the operator's name for the class, the CPU-only flavor
/// stays without one, and a lease of the GPU shape boots that flavor.
#[tokio::test]
async fn a_gpu_flavor_is_offered_as_a_gpu_and_boots() {
    let Some(ctx) = setup("a_gpu_flavor_is_offered_as_a_gpu_and_boots").await else {
        return;
    };
    let mut mapping = ctx.mapping();
    mapping.entries.push(MappingEntry {
        flavor: "g1.a100".into(),
        images: vec![ImageEntry::Name(ctx.lab.image_name.clone())],
        price_sats_per_hour: 90_000,
        max_instances: None,
        gpu: None,
    });
    mapping
        .gpu_names
        .insert("CUSTOM_GPU_A100".into(), "NVIDIA A100".into());
    let p = OpenStackProvisioner::new(ctx.config(), mapping).unwrap();
    let inv = p.inventory().await.unwrap();
    let by_name = |n: &str| {
        inv.shapes
            .iter()
            .find(|s| s.flavor_name == n)
            .unwrap_or_else(|| panic!("{n} offered: {inv:#?}"))
    };
    let tiny = by_name(&ctx.lab.flavor_name);
    assert_eq!(tiny.gpu, None);
    assert_eq!(tiny.arch, xov_provisioner::CpuArch::X86_64);
    let gpu = by_name("g1.a100");
    assert_eq!(
        gpu.gpu,
        Some(xov_provisioner::GpuSpec {
            model: "NVIDIA A100".into(),
            count: 1
        })
    );
    assert_eq!((gpu.vcpus, gpu.ram_mib), (2, 1024));

    let lease = lease_id();
    let mut req = ctx.request(&lease, BUYER_KEY);
    req.flavor = gpu.flavor_id.clone();
    let m = p.launch(&req).await.unwrap();
    assert_eq!(m.state, MachineState::Running, "{m:?}");
    let server = ctx.raw.server(&m.server_id).await.unwrap();
    assert_eq!(server["flavor"]["original_name"], "g1.a100", "{server}");
    assert!(p.delete(&lease).await.unwrap());
}

/// A lease's reachability, in Neutron's own records: one security group opening port 22 and the port the
/// buyer asked for (IPv4 and IPv6, nothing else inbound) on the machine's one port, and one floating IP from
/// the external network on that port; the group and the floating IP carry the lease's marker as description
/// and tag, the port as tag. A crash after the group was made, or after the server booted, and a relaunch
/// still end with exactly one of each; the launch and the status give the floating address first; the
/// lease's end removes them all.
#[tokio::test]
async fn a_lease_gets_one_security_group_and_one_floating_ip_and_releases_them() {
    let Some(ctx) =
        setup("a_lease_gets_one_security_group_and_one_floating_ip_and_releases_them").await
    else {
        return;
    };
    let mut cfg = ctx.networked_config();
    let fixed_only = xov_provisioner::OpenStackConfig {
        access: Default::default(),
        ..cfg.clone()
    };
    let p_fixed = OpenStackProvisioner::new(fixed_only, ctx.mapping()).unwrap();
    // This one reaches Neutron through a proxy (`network_endpoint_override`), which sees its requests.
    let neutron = FaultProxy::start(&ctx.lab.network_origin).await;
    cfg.network_endpoint_override = Some(neutron.origin.clone());
    let p = OpenStackProvisioner::new(cfg, ctx.mapping()).unwrap();
    let n = p.neutron();
    let lease = lease_id();
    let tag = xov_provisioner::neutron::marker(&lease);

    // A crash right after the group was made: the launch finds it instead of making another.
    let early = n.ensure_security_group(&lease, &[22]).await.unwrap();
    // A crash after the server booted, before the floating IP (a launch without an external network).
    let booted = p_fixed
        .launch(&ctx.request(&lease, BUYER_KEY))
        .await
        .unwrap();
    assert!(
        booted
            .addresses
            .iter()
            .all(|a| a.ip.starts_with("10.99.0.")),
        "{booted:?}"
    );
    // The buyer asked for port 8080 besides SSH: added to the group found again.
    let mut wants_web = ctx.request(&lease, BUYER_KEY);
    wants_web.extra_ports = vec![8080];
    let m = p.launch(&wants_web).await.unwrap();
    assert_eq!(m.server_id, booted.server_id);
    let again = p.launch(&wants_web).await.unwrap();
    assert_eq!(again.server_id, m.server_id);
    assert_eq!(
        neutron.count(&Method::POST, "/v2.0/floatingips"),
        (1, 1),
        "the floating IP was made once, through the overriding endpoint"
    );

    let groups = n.security_groups_of(&lease).await.unwrap();
    assert_eq!(groups.len(), 1, "{groups:?}");
    let sg = &groups[0];
    assert_eq!(sg.id, early.id);
    assert!(sg.tags.contains(&tag) && sg.description == tag, "{sg:?}");
    for ethertype in ["IPv4", "IPv6"] {
        for port in [22, 8080] {
            assert!(
                sg.security_group_rules
                    .iter()
                    .any(|r| r.direction == "ingress"
                        && r.ethertype == ethertype
                        && r.protocol.as_deref() == Some("tcp")
                        && r.port_range_min == Some(port)
                        && r.port_range_max == Some(port)),
                "port {port} open over {ethertype}: {sg:?}"
            );
        }
    }
    let inbound: std::collections::BTreeSet<Option<u16>> = sg
        .security_group_rules
        .iter()
        .filter(|r| r.direction == "ingress")
        .map(|r| r.port_range_min)
        .collect();
    assert_eq!(
        inbound,
        [Some(22), Some(8080)].into(),
        "nothing else inbound: {sg:?}"
    );
    let ports = n.ports_of_server(&m.server_id).await.unwrap();
    assert_eq!(ports.len(), 1, "{ports:?}");
    assert_eq!(ports[0].security_groups, [sg.id.clone()]);
    assert!(
        ports[0].tags.contains(&tag),
        "the port is tagged too: {ports:?}"
    );

    let fips = n.floating_ips_of(&lease).await.unwrap();
    assert_eq!(fips.len(), 1, "{fips:?}");
    let fip = &fips[0];
    assert!(fip.floating_ip_address.starts_with("198.18.10."), "{fip:?}");
    assert_eq!(fip.port_id.as_deref(), Some(ports[0].id.as_str()));
    assert!(fip.tags.contains(&tag), "{fip:?}");
    assert_eq!(
        m.addresses[0].ip, fip.floating_ip_address,
        "floating first: {m:?}"
    );
    assert_eq!(again.addresses[0].ip, fip.floating_ip_address, "{again:?}");
    // the status the lease engine polls says the same at once, from Neutron's record (Nova's view of the
    // server learns of the floating IP only when Neutron tells it)
    let st = p
        .status(&lease)
        .await
        .unwrap()
        .expect("the lease's machine");
    assert_eq!(st.addresses[0].ip, fip.floating_ip_address, "{st:?}");
    assert_eq!(
        st.addresses
            .iter()
            .filter(|a| a.ip == fip.floating_ip_address)
            .count(),
        1,
        "listed once: {st:?}"
    );
    let marked = n.marked().await.unwrap();
    for (kind, id) in [("security_group", &sg.id), ("floating_ip", &fip.id)] {
        assert!(
            marked
                .iter()
                .any(|m| m.lease_id == lease && m.kind == kind && m.id == *id),
            "{kind} listed as the lease's: {marked:?}"
        );
    }

    assert!(p.delete(&lease).await.unwrap());
    assert!(n.security_groups_of(&lease).await.unwrap().is_empty());
    assert!(n.floating_ips_of(&lease).await.unwrap().is_empty());
    assert!(
        n.ports_of_server(&m.server_id).await.unwrap().is_empty(),
        "the server's port went with it"
    );
}

/// The create reaches Nova but its answer is lost (502 after forwarding), on top of a dropped connection,
/// 5xx and slow answers elsewhere and a build that looks slow: still exactly one server, the one returned.
#[tokio::test]
async fn lost_create_answer_gives_exactly_one_server() {
    let Some(ctx) = setup("lost_create_answer_gives_exactly_one_server").await else {
        return;
    };
    let proxy = FaultProxy::start(&ctx.lab.compute_origin).await;
    proxy
        .rule(Some(Method::GET), Path::Exact("/v2.1"), 1, Fault::Drop)
        .rule(
            Some(Method::GET),
            Path::Exact("/v2.1/servers/detail"),
            1,
            Fault::Reply(503),
        )
        .rule(
            Some(Method::GET),
            Path::Exact("/v2.1/servers/detail"),
            1,
            Fault::Delay(Duration::from_secs(2)),
        )
        .rule(
            Some(Method::POST),
            Path::Exact("/v2.1/os-keypairs"),
            1,
            Fault::ForwardThenDrop,
        )
        .rule(
            Some(Method::POST),
            Path::Exact("/v2.1/servers"),
            1,
            Fault::ForwardThenReply(502),
        )
        .rule(Some(Method::GET), Path::ServerItem, 1, Fault::Reply(500))
        .rule(Some(Method::GET), Path::ServerItem, 1, Fault::Drop)
        .rule(
            Some(Method::GET),
            Path::ServerItem,
            3,
            Fault::PretendBuilding,
        );
    let mut cfg = ctx.config();
    cfg.compute_endpoint_override = Some(proxy.compute_url());
    let p = OpenStackProvisioner::new(cfg, ctx.mapping()).unwrap();
    let lease = lease_id();

    let m = p.launch(&ctx.request(&lease, BUYER_KEY)).await.unwrap();
    assert_eq!(m.state, MachineState::Running);
    let direct = ctx.raw.servers_of_lease(&lease).await;
    assert_eq!(direct.len(), 1, "exactly one server: {direct:#?}");
    assert_eq!(
        direct[0]["id"],
        m.server_id.as_str(),
        "and it is the one returned"
    );
    assert_eq!(
        proxy.count(&Method::POST, "/v2.1/servers"),
        (1, 1),
        "the create was sent once: the lost answer was followed by a listing, not a second create"
    );
    let kp = ctx.raw.keypair(&keypair_name(&lease)).await.unwrap();
    assert_eq!(
        kp["public_key"], BUYER_KEY,
        "key pair reused after its lost answer"
    );

    // stop whose answer is lost, delete whose connection drops after Nova got it
    proxy
        .rule(
            Some(Method::POST),
            Path::ServerAction,
            1,
            Fault::ForwardThenReply(502),
        )
        .rule(
            Some(Method::DELETE),
            Path::ServerItem,
            1,
            Fault::ForwardThenDrop,
        );
    assert_eq!(p.stop(&lease).await.unwrap().state, MachineState::Stopped);
    assert_eq!(
        ctx.raw.server(&m.server_id).await.unwrap()["status"],
        "SHUTOFF"
    );
    assert!(p.delete(&lease).await.unwrap());
    assert!(ctx.raw.gone(&m.server_id).await);
}

/// Creates refused without reaching Nova (503) are retried, each only after a listing showed nothing.
#[tokio::test]
async fn refused_creates_are_retried_into_one_server() {
    let Some(ctx) = setup("refused_creates_are_retried_into_one_server").await else {
        return;
    };
    let proxy = FaultProxy::start(&ctx.lab.compute_origin).await;
    proxy.rule(
        Some(Method::POST),
        Path::Exact("/v2.1/servers"),
        2,
        Fault::Reply(503),
    );
    let mut cfg = ctx.config();
    cfg.compute_endpoint_override = Some(proxy.compute_url());
    let p = OpenStackProvisioner::new(cfg, ctx.mapping()).unwrap();
    let lease = lease_id();

    let m = p.launch(&ctx.request(&lease, BUYER_KEY)).await.unwrap();
    assert_eq!(proxy.count(&Method::POST, "/v2.1/servers"), (3, 1));
    let direct = ctx.raw.servers_of_lease(&lease).await;
    assert_eq!(direct.len(), 1);
    assert_eq!(direct[0]["id"], m.server_id.as_str());
    assert!(p.delete(&lease).await.unwrap());
}

/// The create's answer comes after the client gave up (timeout): the listing finds the server.
#[tokio::test]
async fn create_answer_after_timeout_gives_one_server() {
    let Some(ctx) = setup("create_answer_after_timeout_gives_one_server").await else {
        return;
    };
    let proxy = FaultProxy::start(&ctx.lab.compute_origin).await;
    proxy
        .rule(
            Some(Method::POST),
            Path::Exact("/v2.1/servers"),
            1,
            Fault::ForwardThenDelay(Duration::from_secs(8)),
        )
        .rule(
            Some(Method::GET),
            Path::Any,
            2,
            Fault::Delay(Duration::from_secs(2)),
        );
    let mut cfg = ctx.config();
    cfg.compute_endpoint_override = Some(proxy.compute_url());
    cfg.request_timeout = Duration::from_secs(4);
    let p = OpenStackProvisioner::new(cfg, ctx.mapping()).unwrap();
    let lease = lease_id();

    let m = p.launch(&ctx.request(&lease, BUYER_KEY)).await.unwrap();
    assert_eq!(proxy.count(&Method::POST, "/v2.1/servers"), (1, 1));
    let direct = ctx.raw.servers_of_lease(&lease).await;
    assert_eq!(direct.len(), 1);
    assert_eq!(direct[0]["id"], m.server_id.as_str());
    assert!(p.delete(&lease).await.unwrap());
}

/// The create reaches Nova only after the client gave up (a slow gateway): the first listing shows
/// nothing, and the launch waits for the late create to show up instead of sending a second one.
#[tokio::test]
async fn create_reaching_nova_after_timeout_is_not_repeated() {
    let Some(ctx) = setup("create_reaching_nova_after_timeout_is_not_repeated").await else {
        return;
    };
    let proxy = FaultProxy::start(&ctx.lab.compute_origin).await;
    proxy.rule(
        Some(Method::POST),
        Path::Exact("/v2.1/servers"),
        1,
        Fault::Delay(Duration::from_secs(6)),
    );
    let mut cfg = ctx.config();
    cfg.compute_endpoint_override = Some(proxy.compute_url());
    cfg.request_timeout = Duration::from_secs(4);
    let p = OpenStackProvisioner::new(cfg, ctx.mapping()).unwrap();
    let lease = lease_id();

    let m = p.launch(&ctx.request(&lease, BUYER_KEY)).await.unwrap();
    assert_eq!(proxy.count(&Method::POST, "/v2.1/servers"), (1, 1));
    let direct = ctx.raw.servers_of_lease(&lease).await;
    assert_eq!(direct.len(), 1, "{direct:#?}");
    assert_eq!(direct[0]["id"], m.server_id.as_str());
    assert!(p.delete(&lease).await.unwrap());
}

/// Nova answering 503 to everything, Nova not listening, Keystone not listening, a wrong password: clear
/// errors after bounded retries, and no server.
#[tokio::test]
async fn services_down_give_clear_errors_and_no_server() {
    let Some(ctx) = setup("services_down_give_clear_errors_and_no_server").await else {
        return;
    };
    let lease = lease_id();
    let req = ctx.request(&lease, BUYER_KEY);

    let proxy = FaultProxy::start(&ctx.lab.compute_origin).await;
    proxy.rule(None, Path::Any, usize::MAX, Fault::Reply(503));
    let mut cfg = ctx.config();
    cfg.compute_endpoint_override = Some(proxy.compute_url());
    cfg.retry = quick_retries();
    let p = OpenStackProvisioner::new(cfg, ctx.mapping()).unwrap();
    match p.launch(&req).await {
        Err(
            e @ ProvisionError::Unavailable {
                service: "compute",
                attempts: 3,
                ..
            },
        ) => {
            assert!(e.is_transient());
            assert!(e.to_string().contains("503"), "{e}");
        }
        other => panic!("expected compute unavailable, got {other:?}"),
    }
    assert!(proxy.seen().iter().all(|s| !s.forwarded));

    let closed = free_port();
    let mut cfg = ctx.config();
    cfg.compute_endpoint_override = Some(format!("http://127.0.0.1:{closed}/v2.1"));
    cfg.retry = quick_retries();
    let p = OpenStackProvisioner::new(cfg, ctx.mapping()).unwrap();
    match p.launch(&req).await {
        Err(
            e @ ProvisionError::Unavailable {
                service: "compute", ..
            },
        ) => {
            assert!(e.to_string().contains("connect"), "{e}")
        }
        other => panic!("expected compute unavailable, got {other:?}"),
    }

    let mut cfg = ctx.config();
    cfg.auth_url = format!("http://127.0.0.1:{closed}/v3");
    cfg.retry = quick_retries();
    let p = OpenStackProvisioner::new(cfg, ctx.mapping()).unwrap();
    assert!(matches!(
        p.launch(&req).await,
        Err(ProvisionError::Unavailable {
            service: "identity",
            ..
        })
    ));
    assert!(matches!(
        p.inventory().await,
        Err(ProvisionError::Unavailable {
            service: "identity",
            ..
        })
    ));

    let mut cfg = ctx.config();
    if let Auth::Password { password, .. } = &mut cfg.auth {
        *password = Secret::new("wrong-password");
    }
    let p = OpenStackProvisioner::new(cfg, ctx.mapping()).unwrap();
    let t = Instant::now();
    match p.launch(&req).await {
        Err(ProvisionError::Auth { status: 401, .. }) => {}
        other => panic!("expected auth refused, got {other:?}"),
    }
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "refused credentials are not retried"
    );

    assert!(ctx.raw.servers_of_lease(&lease).await.is_empty());
}

/// A build slower than the boot timeout: the launch reports it and leaves the server; launching again
/// (after a restart, with the cloud back to normal) returns that server instead of booting another.
#[tokio::test]
async fn slow_build_times_out_and_a_relaunch_finds_the_server() {
    let Some(ctx) = setup("slow_build_times_out_and_a_relaunch_finds_the_server").await else {
        return;
    };
    let proxy = FaultProxy::start(&ctx.lab.compute_origin).await;
    proxy.rule(
        Some(Method::GET),
        Path::ServerItem,
        usize::MAX,
        Fault::PretendBuilding,
    );
    let mut cfg = ctx.config();
    cfg.compute_endpoint_override = Some(proxy.compute_url());
    cfg.boot_timeout = Duration::from_secs(2);
    let p = OpenStackProvisioner::new(cfg, ctx.mapping()).unwrap();
    let lease = lease_id();
    let req = ctx.request(&lease, BUYER_KEY);

    let server_id = match p.launch(&req).await {
        Err(e @ ProvisionError::BootTimeout { .. }) => {
            assert!(e.is_transient() && !e.is_launch_failure());
            let ProvisionError::BootTimeout { server_id, .. } = e else {
                unreachable!()
            };
            server_id
        }
        other => panic!("expected a boot timeout, got {other:?}"),
    };
    let direct = ctx.raw.servers_of_lease(&lease).await;
    assert_eq!(direct.len(), 1, "left in place");
    assert_eq!(direct[0]["id"], server_id.as_str());

    let p = OpenStackProvisioner::new(ctx.config(), ctx.mapping()).unwrap();
    let m = p.launch(&req).await.unwrap();
    assert_eq!(m.server_id, server_id);
    assert_eq!(m.state, MachineState::Running);
    assert_eq!(ctx.raw.servers_of_lease(&lease).await.len(), 1);
    assert!(p.delete(&lease).await.unwrap());
}

/// An instance that goes to ERROR (no host has a million GiB of disk) is deleted and the launch fails.
#[tokio::test]
async fn error_instance_is_deleted_and_reported_failed() {
    let Some(ctx) = setup("error_instance_is_deleted_and_reported_failed").await else {
        return;
    };
    let name = format!("xov-test-huge-{}", &lease_id()[..12]);
    let flavor = ctx.raw.create_flavor(&name, 1, 512, 1_000_000).await;
    ctx.janitor.flavor(&flavor);
    let p = OpenStackProvisioner::new(ctx.config(), ctx.mapping()).unwrap();
    let lease = lease_id();
    let mut req = ctx.request(&lease, BUYER_KEY);
    req.flavor = name;

    match p.launch(&req).await {
        Err(e @ ProvisionError::LaunchFailed { .. }) => {
            assert!(e.is_launch_failure());
            assert!(e.to_string().contains("ERROR"), "{e}");
        }
        other => panic!("expected a failed launch, got {other:?}"),
    }
    assert!(
        ctx.raw.servers_of_lease(&lease).await.is_empty(),
        "the ERROR instance was deleted"
    );
    assert!(ctx.raw.keypair(&keypair_name(&lease)).await.is_none());
    assert_eq!(p.status(&lease).await.unwrap(), None);

    // an unknown flavor fails the launch before anything is created
    let lease = lease_id();
    let mut req = ctx.request(&lease, BUYER_KEY);
    req.flavor = "no-such-flavor-xov".into();
    assert!(p.launch(&req).await.unwrap_err().is_launch_failure());
    assert!(ctx.raw.keypair(&keypair_name(&lease)).await.is_none());
}

/// Servers made behind the node's back: tagged ones are reported (and a duplicate is removed by the next
/// launch), a lease without its server is reported, an untagged server is never touched.
#[tokio::test]
async fn reconciliation_reports_unknown_and_missing_and_leaves_untagged_alone() {
    let Some(ctx) =
        setup("reconciliation_reports_unknown_and_missing_and_leaves_untagged_alone").await
    else {
        return;
    };
    let p = OpenStackProvisioner::new(ctx.config(), ctx.mapping()).unwrap();
    let image = ctx.raw.image_id(&ctx.lab.image_name).await;
    let (known, behind, missing) = (lease_id(), lease_id(), lease_id());
    ctx.janitor.lease(&behind);

    let m = p.launch(&ctx.request(&known, BUYER_KEY)).await.unwrap();
    let sneaky = ctx
        .raw
        .create_server("behind-the-back", "1", &image, json!({ LEASE_TAG: behind }))
        .await;
    let untagged = ctx
        .raw
        .create_server(
            "not-xov",
            "1",
            &image,
            json!({"purpose": "xov-test-untagged"}),
        )
        .await;
    ctx.janitor.server(&untagged);

    let report = reconcile(&p, [known.clone(), missing.clone()])
        .await
        .unwrap();
    let unknown: Vec<(&str, &str)> = report
        .unknown
        .iter()
        .map(|m| (m.lease_id.as_str(), m.server_id.as_str()))
        .collect();
    assert!(
        unknown.contains(&(behind.as_str(), sneaky.as_str())),
        "{report:#?}"
    );
    assert!(!unknown.iter().any(|(l, _)| *l == known));
    assert!(report.missing.contains(&missing));
    assert!(!report.missing.contains(&known));
    let everything = format!("{report:?}");
    assert!(
        !everything.contains(&untagged),
        "untagged server never listed"
    );
    let ours = p.list_ours().await.unwrap();
    assert!(ours.iter().all(|m| m.server_id != untagged));
    assert!(ours.iter().any(|m| m.server_id == sneaky));

    // a second server for a known lease, behind the node's back: reported, then removed by a launch
    tokio::time::sleep(Duration::from_millis(1100)).await; // strictly newer `created`
    let dup = ctx
        .raw
        .create_server("duplicate", "1", &image, json!({ LEASE_TAG: known }))
        .await;
    let report = reconcile(&p, [known.clone()]).await.unwrap();
    let dups = report.duplicates.get(&known).expect("duplicate reported");
    assert!(dups.contains(&m.server_id) && dups.contains(&dup));
    let again = p.launch(&ctx.request(&known, BUYER_KEY)).await.unwrap();
    assert_eq!(again.server_id, m.server_id, "the oldest is kept");
    assert!(
        ctx.raw.wait_gone(&dup, 60).await,
        "the duplicate is deleted"
    );

    // deleting a lease that has no server touches nothing; the untagged server lives on
    assert!(!p.delete(&lease_id()).await.unwrap());
    let u = ctx
        .raw
        .server(&untagged)
        .await
        .expect("untagged server untouched");
    assert_ne!(u["OS-EXT-STS:task_state"], "deleting");

    assert!(
        p.delete(&behind).await.unwrap(),
        "a tagged orphan can be cleaned up by lease"
    );
    assert!(p.delete(&known).await.unwrap());
    assert!(ctx.raw.server(&untagged).await.is_some());
}

/// Application credentials, one cached token for many calls, and a refused token renewed once.
#[tokio::test]
async fn application_credential_and_token_renewal() {
    let Some(ctx) = setup("application_credential_and_token_renewal").await else {
        return;
    };
    let (id, secret) = ctx
        .raw
        .create_app_cred(&format!("xov-test-{}", &lease_id()[..12]))
        .await;
    ctx.janitor.app_cred(&id);
    let mut cfg = ctx.config();
    cfg.auth = Auth::ApplicationCredential {
        id,
        secret: Secret::new(secret),
    };

    let p = OpenStackProvisioner::new(cfg.clone(), ctx.mapping()).unwrap();
    assert_eq!(p.check().await.unwrap(), "2.90");
    let inv = p.inventory().await.unwrap();
    assert!(inv.shapes.iter().any(|s| s.flavor_name == "m1.tiny"));
    p.list_ours().await.unwrap();
    assert_eq!(p.status(&lease_id()).await.unwrap(), None);
    assert_eq!(p.keystone_authentications(), 1, "one token for all calls");

    let proxy = FaultProxy::start(&ctx.lab.compute_origin).await;
    proxy.rule(
        Some(Method::GET),
        Path::Exact("/v2.1/servers/detail"),
        1,
        Fault::Reply(401),
    );
    cfg.compute_endpoint_override = Some(proxy.compute_url());
    let p = OpenStackProvisioner::new(cfg, ctx.mapping()).unwrap();
    p.list_ours().await.unwrap();
    assert_eq!(
        p.keystone_authentications(),
        2,
        "renewed once after the 401"
    );
}

/// With `key_delivery = "user_data"` the key travels as cloud-config, and no key pair is made.
#[tokio::test]
async fn user_data_key_delivery() {
    let Some(ctx) = setup("user_data_key_delivery").await else {
        return;
    };
    let mut cfg = ctx.config();
    cfg.key_delivery = KeyDelivery::UserData;
    let p = OpenStackProvisioner::new(cfg, ctx.mapping()).unwrap();
    let lease = lease_id();
    let m = p.launch(&ctx.request(&lease, OTHER_KEY)).await.unwrap();
    assert_eq!(m.key_name, None);
    let raw = ctx.raw.server(&m.server_id).await.unwrap();
    assert_eq!(
        raw["OS-EXT-SRV-ATTR:user_data"],
        xov_provisioner::openstack::user_data_for(OTHER_KEY).unwrap()
    );
    assert!(ctx.raw.keypair(&keypair_name(&lease)).await.is_none());
    assert!(p.delete(&lease).await.unwrap());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
