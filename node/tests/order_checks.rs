//! What the buyer's node checks before it asks any provider, and what it says when nothing matches: real
//! `xov` daemons on 127.0.0.1, offers published by hand.
//!
//! Each bad order fails with the buyer's own error (never "every matching provider refused"), naming the
//! file, the address's network, the offers' lease lengths, or every requirement nothing meets.

mod common;

use std::time::Duration;

use common::*;

const CONVERGE: Duration = Duration::from_secs(60);

/// `xov order ARGS` on `d`: it must fail; returns what it printed on stderr.
fn refused(d: &Daemon, args: &[&str]) -> String {
    let out = xov(&d.datadir, &[&["order"], args].concat());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "xov order {args:?} succeeded: {err}");
    assert!(
        !err.contains("refused"),
        "checked by the buyer's node, not by asking providers: {err}"
    );
    err
}

/// Waits until `d`'s book holds `n` offers.
fn book_holds(d: &Daemon, n: usize) {
    eventually(&format!("{n} offers in the book"), CONVERGE, || {
        let held = d
            .json(&["offers", "list"])
            .as_array()
            .map_or(0, |a| a.len());
        if held == n {
            Ok(())
        } else {
            Err(format!("{held} offers"))
        }
    });
}

/// A valid ed25519 public key file in `dir`.
fn public_key(dir: &std::path::Path) -> std::path::PathBuf {
    let f = dir.join("id_ed25519.pub");
    std::fs::write(
        &f,
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl buyer@host\n",
    )
    .unwrap();
    f
}

#[test]
fn a_bad_order_is_caught_by_the_buyers_node_and_says_what_to_change() {
    let (dp, db, dk) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let provider = Daemon::start(dp.path());
    let publish = |args: &[&str]| {
        let base = [
            "offer",
            "publish",
            "--disk",
            "20",
            "--country",
            "de",
            "--min-lease-secs",
            "3600",
            "--max-lease-secs",
            "86400",
        ];
        ok_json(&provider.datadir, &[&base[..], args].concat());
    };
    publish(&[
        "--vcpus",
        "2",
        "--ram",
        "2048",
        "--image",
        "debian-12",
        "--price",
        "300",
    ]);
    publish(&[
        "--vcpus",
        "16",
        "--ram",
        "65536",
        "--image",
        "ubuntu-24.04",
        "--price",
        "2400",
    ]);
    let buyer = Daemon::start_with(
        db.path(),
        &[("XOV_NETWORK_BOOTSTRAP", provider.bootstrap())],
    );
    book_holds(&buyer, 2);

    let good_key = public_key(dk.path());
    let key = good_key.to_str().unwrap();
    let hostname = dk.path().join("hostname");
    std::fs::write(&hostname, "buildhost\n").unwrap();
    let private = dk.path().join("id_ed25519");
    std::fs::write(
        &private,
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
    )
    .unwrap();

    // Three requirements nothing meets: each is named with the nearest thing the book has.
    let err = refused(
        &buyer,
        &[
            "--vcpus",
            "64",
            "--image",
            "windows",
            "--max-price",
            "10",
            "--hours",
            "1",
            "--ssh-key",
            key,
        ],
    );
    for want in [
        "no offer has image windows; images offered: debian-12, ubuntu-24.04",
        "no offer costs 10 sats/h or less; the cheapest is 300 sats/h",
        "no offer has 64 vCPUs; the largest has 16",
    ] {
        assert!(err.contains(want), "{want:?} in {err}");
    }

    // A file that is not a public key: which file, and what a valid line looks like.
    let err = refused(
        &buyer,
        &[
            "--image",
            "debian-12",
            "--hours",
            "1",
            "--ssh-key",
            hostname.to_str().unwrap(),
        ],
    );
    assert!(
        err.contains(&format!("{} is not an SSH public key", hostname.display()))
            && err.contains("'buildhost' is not a supported key type")
            && err.contains("ssh-ed25519 AAAAC3Nza"),
        "{err}"
    );
    let err = refused(
        &buyer,
        &[
            "--image",
            "debian-12",
            "--hours",
            "1",
            "--ssh-key",
            private.to_str().unwrap(),
        ],
    );
    assert!(
        err.contains("is a private key") && err.contains(&format!("{}.pub", private.display())),
        "{err}"
    );
    let missing = dk.path().join("nope.pub");
    let err = refused(
        &buyer,
        &[
            "--image",
            "debian-12",
            "--hours",
            "1",
            "--ssh-key",
            missing.to_str().unwrap(),
        ],
    );
    assert!(
        err.contains(&format!(
            "cannot read the SSH public key file {}",
            missing.display()
        )),
        "{err}"
    );

    // A refund address of another bitcoin network (mainnet, on this regtest node without a wallet).
    let err = refused(
        &buyer,
        &[
            "--image",
            "debian-12",
            "--hours",
            "1",
            "--ssh-key",
            key,
            "--refund-address",
            "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
        ],
    );
    assert!(err.contains("refund address is not usable"), "{err}");

    // Hours beyond every matching offer's lease lengths.
    let err = refused(
        &buyer,
        &["--image", "debian-12", "--hours", "100", "--ssh-key", key],
    );
    assert!(
        err.contains("1 offer has the machine asked for, but none leases it for 100 h: they lease for 1 h to 24 h; ask for --hours between 1 and 24"),
        "{err}"
    );
}

/// An order for a picked offer (the dashboard's Order button, `xov order --offer`) goes to that offer's
/// provider only, though a cheaper offer matches too; a picked offer that is gone fails the order.
#[test]
fn an_order_for_a_picked_offer_asks_that_provider_only() {
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let cheap = Daemon::start(dirs[0].path());
    let gpu = Daemon::start_with(
        dirs[1].path(),
        &[("XOV_NETWORK_BOOTSTRAP", cheap.bootstrap())],
    );
    let publish = |d: &Daemon, extra: &[&str]| -> u64 {
        let base = [
            "offer",
            "publish",
            "--vcpus",
            "2",
            "--ram",
            "2048",
            "--disk",
            "20",
            "--image",
            "debian-12",
            "--country",
            "de",
        ];
        ok_json(&d.datadir, &[&base[..], extra].concat())["offer_id"]
            .as_u64()
            .unwrap()
    };
    publish(&cheap, &["--price", "300"]);
    let picked = publish(
        &gpu,
        &["--price", "900", "--gpu", "A100", "--region", "paris"],
    );
    let buyer = Daemon::start_with(
        dirs[2].path(),
        &[("XOV_NETWORK_BOOTSTRAP", cheap.bootstrap())],
    );
    book_holds(&buyer, 2);
    let key = public_key(dirs[3].path());
    let key = key.to_str().unwrap();
    let pick = format!("{}:{picked}", gpu.node_id);
    // Neither node sells (no cloud): each refusal names the provider asked. Only the picked one is.
    let out = xov(
        &buyer.datadir,
        &[
            "order",
            "--image",
            "debian-12",
            "--hours",
            "1",
            "--ssh-key",
            key,
            "--offer",
            &pick,
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&gpu.node_id[..8]),
        "the picked offer's provider was asked: {err}"
    );
    assert!(
        !err.contains(&cheap.node_id[..8]),
        "the cheaper provider was not: {err}"
    );
    // Without the pick, the cheaper one is asked first.
    let out = xov(
        &buyer.datadir,
        &[
            "order",
            "--image",
            "debian-12",
            "--hours",
            "1",
            "--ssh-key",
            key,
        ],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains(&cheap.node_id[..8]));
    // The picked offer withdrawn: the order fails saying so, and asks nobody else.
    ok_json(&gpu.datadir, &["offer", "withdraw", &picked.to_string()]);
    book_holds(&buyer, 1);
    let err = refused(
        &buyer,
        &[
            "--image",
            "debian-12",
            "--hours",
            "1",
            "--ssh-key",
            key,
            "--offer",
            &pick,
        ],
    );
    assert!(
        err.contains(&format!(
            "offer {picked} of {} is no longer in the book",
            gpu.node_id
        )),
        "{err}"
    );
}
