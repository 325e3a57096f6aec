//! The moment a buyer pays for: `ssh` into a real machine works with their key, and only with it.
//!
//! The lab's real compute mode (`testnet/openstack/realvm/up.sh`) boots the image `xov-tiny` under QEMU's
//! software emulation with Neutron's linuxbridge, DHCP and L3 agents; floating IPs are reached from the
//! namespace `oslab-buyer` only. A provider offers that image, a buyer orders, pays for about 90 seconds,
//! and once the lease runs `xov ssh LEASE -- uname -a` logs in through the floating IP (the buyer's `ssh`
//! runs in that namespace through `XOV_SSH`). Another key is refused, and a port outside the lease's security
//! group is not reachable even with a listener behind it. When the money runs out the machine is
//! stopped and ssh no longer reaches it; when the lease closes the server, its floating IP and its security
//! group are gone. Whatever happens, the test deletes what it made (a VM left running costs CPU).

mod common;

use common::{lab_cloud, wait_nothing_left};
use xov_provisioner::{MachineState, OpenStackProvisioner, Provisioner};
use xov_testnet::node::*;
use xov_testnet::openstack::RealMode;
use xov_testnet::scenario::*;

fn machine(
    rt: &tokio::runtime::Runtime,
    cloud: &OpenStackProvisioner,
    lease: &str,
) -> Option<xov_provisioner::Machine> {
    rt.block_on(cloud.status(lease)).unwrap()
}

#[test]
fn a_buyer_logs_into_a_real_vm_with_their_key_only_until_the_lease_drains() {
    // `cleanup` deletes the lease's machine and its Neutron resources when the test ends, passed or not.
    let Some((btc, lab, cleanup)) = real_parts("real VM") else {
        return;
    };
    let real: RealMode = lab.ensure_real().unwrap_or_else(|e| panic!("{e}"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let owner = cleanup.owner("provider");
    let cloud = lab_cloud(&lab, &owner);
    let root = tempfile::tempdir().unwrap();
    let opts = ProviderOpts {
        glance_image: Some(real.image_name.clone()),
        ssh_user: Some(real.user.clone()),
        ..Default::default()
    };
    let provider = start(
        &subdir(root.path(), "provider"),
        &provider_toml_with(&lab, &btc, PRICE_P1, &owner, &opts),
        None,
    );
    let buyer = start(
        &subdir(root.path(), "buyer"),
        &buyer_toml(&btc),
        Some(&provider),
    );
    fund(&buyer, &btc);
    wait_any_offer(&buyer);

    let keys = tempfile::tempdir().unwrap();
    let key_file = ssh_key(keys.path());
    let l = order_one_vcpu(&buyer, &key_file, &[]);
    let id = l["id"].as_str().unwrap().to_string();
    cleanup.lease(&id);
    assert_eq!(l["state"], "invoiced", "{l}");
    // 900 sats at PRICE_P1 sats/h: 90 s, long enough to boot and log in, short enough to drain here.
    let pay_to = l["pay_address"].as_str().unwrap().to_string();
    buyer.json(&["wallet", "send", &pay_to, "900"]);
    wait_state(&provider, &id, "payment_seen");
    btc.mine(1).unwrap();

    // The provider boots the machine on the real host; the buyer learns its floating IP.
    wait_state(&provider, &id, "running");
    let m = machine(&rt, &cloud, &id).expect("the lease's server exists");
    assert_eq!(m.state, MachineState::Running, "{m:?}");
    let seen = wait_state(&buyer, &id, "running");
    let floating = seen["instance"]["addresses"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        floating.starts_with("198.18.10."),
        "a floating IP first: {seen}"
    );
    assert_eq!(seen["instance"]["user"], real.user.as_str(), "{seen}");

    // `xov ssh` logs in with the key the order was placed with, once the machine's sshd is up (it boots
    // under software emulation; its console says when sshd listens).
    let wrapper = real.ssh_wrapper(keys.path()).unwrap();
    let console = real.console_log(&m.server_id);
    let login = || buyer.xov_ssh(&wrapper, &id, &["uname", "-a"]).unwrap();
    // What the machine's console said last while it existed: once the lease ends its instance directory
    // goes, and a failure must still tell how far the boot got (kernel, init, network, sshd).
    let mut last_console = String::new();
    let uname = eventually("`xov ssh LEASE -- uname -a` succeeds", WAIT, || {
        let out = login();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).to_string())
        } else {
            if let Ok(text) = std::fs::read_to_string(&console) {
                last_console = text;
            }
            let tail: Vec<&str> = last_console.lines().rev().take(25).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            Err(format!(
                "{}; the console's last lines ({} bytes in all):\n{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                last_console.len(),
                tail.join("\n")
            ))
        }
    });
    assert!(
        uname.starts_with("Linux ") && uname.contains("x86_64"),
        "the machine's own kernel answered: {uname}"
    );
    // The lease's known-hosts file now holds the machine's host key, as the console printed it.
    let console_text = std::fs::read_to_string(&console).unwrap();
    assert!(
        console_text.contains("xov-image: key installed (1 from config drive"),
        "the key came from Nova's config drive: {console_text}"
    );

    // Another key is refused: the buyer's key is the only way in.
    let other = tempfile::tempdir().unwrap();
    let other_pub = ssh_key(other.path());
    let refused = real
        .ssh(&other_pub.with_extension(""), &floating, &["uname", "-a"])
        .unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("Permission denied (publickey)"),
        "another key must be refused by the machine, not fail to connect: {refused:?}"
    );
    // The right key through the same path still works (the refusal was the key's, not the network's).
    let ok = real
        .ssh(&key_file.with_extension(""), &floating, &["true"])
        .unwrap();
    assert!(ok.status.success(), "{ok:?}");

    // The security group is enforced: with something listening on 8080 inside the machine (a port the offer
    // allows but this order did not ask for), a connection from outside does not get through, while 22 does.
    let listen = real
        .ssh(
            &key_file.with_extension(""),
            &floating,
            // one string: ssh hands it to the remote shell (httpd binds before it goes to the background)
            &["busybox httpd -p 8080 -h /tmp && busybox netstat -ltn"],
        )
        .unwrap();
    let sockets = String::from_utf8_lossy(&listen.stdout);
    assert!(
        listen.status.success() && sockets.contains(":8080"),
        "a listener on 8080 inside the machine: {listen:?}"
    );
    let tcp = |port: u16| {
        std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &real.buyer_ns,
                "timeout",
                "3",
                "bash",
                "-c",
            ])
            .arg(format!("exec 3<>/dev/tcp/{floating}/{port}"))
            .status()
            .unwrap()
            .success()
    };
    assert!(tcp(22), "port 22 is open to the buyer");
    assert!(
        !tcp(8080),
        "port 8080 is not in the lease's security group, so it must not be reachable"
    );

    // The money runs out: warned, grace, halted. The machine is stopped and ssh no longer reaches it.
    wait_state(&provider, &id, "halted");
    let m = machine(&rt, &cloud, &id).expect("halted keeps the server");
    assert_eq!(m.state, MachineState::Stopped, "{m:?}");
    let after = real
        .ssh(&key_file.with_extension(""), &floating, &["true"])
        .unwrap();
    assert!(
        !after.status.success(),
        "a halted lease's machine must not take logins: {after:?}"
    );

    // Closed: the server, its floating IP and its security group are gone.
    wait_state(&provider, &id, "closed");
    assert!(machine(&rt, &cloud, &id).is_none(), "the server is deleted");
    let client = reqwest::Client::new();
    let (fips, groups) = rt.block_on(async {
        let token = lab.admin_token(&client).await.unwrap();
        let fips = lab
            .neutron_get(
                &client,
                &token,
                &format!("/floatingips?floating_ip_address={floating}"),
            )
            .await
            .unwrap();
        let groups = lab
            .neutron_get(
                &client,
                &token,
                &format!("/security-groups?name=xov-{}", &id[..12]),
            )
            .await
            .unwrap();
        (fips, groups)
    });
    assert_eq!(
        fips["floatingips"].as_array().map(Vec::len),
        Some(0),
        "the floating IP is released: {fips}"
    );
    assert_eq!(
        groups["security_groups"].as_array().map(Vec::len),
        Some(0),
        "the security group is deleted: {groups}"
    );
    // Nothing of it is left on the real host either.
    eventually("the VM's instance directory is gone", WAIT, || {
        if console.parent().is_some_and(|d| d.exists()) {
            Err(format!("{} still exists", console.display()))
        } else {
            Ok(())
        }
    });
    // Nor anything else of the lease in the lab: port, key pair.
    wait_nothing_left(&cleanup);
}
