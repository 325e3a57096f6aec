//! `xov ssh LEASE [-- COMMAND]`: logs in to a leased machine with the key the lease was ordered with.
//!
//! Invariants:
//! - The private key is found by its public half: the one whose `.pub` matches the lease's key (type and
//!   base64, the comment ignored) among an explicit `-i`, the public key file the order was placed with
//!   (recorded in `<datadir>/ssh/<lease>.key` by `xov order`) and `~/.ssh/*.pub`; never a guess.
//! - Each lease has its own known-hosts file (`<datadir>/ssh/<lease>.known_hosts`): a floating IP passes
//!   from machine to machine, so one shared file would meet a changed host key and refuse.
//! - Nothing here talks to the network; [`plan`] is pure and `main.rs` executes its result.

use std::path::{Path, PathBuf};

use crate::lease::record::{InstanceInfo, LeaseRecord};
use xov_protocol::LeaseState;

/// Why `xov ssh` cannot log in; each says what to do.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SshError {
    #[error(
        "lease {id} has no machine yet (state {state}); wait with `xov leases show {id} --wait`"
    )]
    NoMachine { id: String, state: String },
    #[error("lease {id} has ended (state {state}); its machine is gone")]
    Ended { id: String, state: String },
    #[error("the cloud gave lease {id}'s machine (server {server}) no network address; ask its provider")]
    NoAddress { id: String, server: String },
    #[error("no private key for lease {id}'s public key ({key}) found in {searched}; pass `-i PATH` to the private key")]
    NoKey {
        id: String,
        key: String,
        searched: String,
    },
}

/// The ssh invocation for a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshPlan {
    pub program: String,
    pub args: Vec<String>,
}

/// A public key's identity: its type and base64 body, without the comment.
fn key_id(public_key: &str) -> Option<(String, String)> {
    let mut parts = public_key.split_whitespace();
    Some((parts.next()?.to_string(), parts.next()?.to_string()))
}

/// The private key next to `pub_path` (`id_ed25519.pub` → `id_ed25519`), if the public key there is
/// `want`'s.
fn private_for(pub_path: &Path, contents: &str, want: &(String, String)) -> Option<PathBuf> {
    if key_id(contents).as_ref() != Some(want) {
        return None;
    }
    let name = pub_path.to_str()?.strip_suffix(".pub")?;
    Some(PathBuf::from(name))
}

/// Where to look for the lease's key, in order: an explicit private key (its `.pub` beside it), the
/// public key file recorded at order time, then `~/.ssh/*.pub`.
pub fn candidates(
    explicit: Option<&Path>,
    recorded: Option<PathBuf>,
    home: Option<&Path>,
) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(e) = explicit {
        let mut p = e.as_os_str().to_owned();
        p.push(".pub");
        out.push(PathBuf::from(p));
    }
    out.extend(recorded);
    if let Some(h) = home {
        if let Ok(rd) = std::fs::read_dir(h.join(".ssh")) {
            let mut pubs: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "pub"))
                .collect();
            pubs.sort();
            out.extend(pubs);
        }
    }
    out
}

/// Works out the ssh command for `lease`: `found` are the candidate public key files with their contents
/// (see [`candidates`]), `known_hosts` the lease's own file, `extra` the remote command.
pub fn plan(
    lease: &LeaseRecord,
    found: &[(PathBuf, String)],
    known_hosts: &Path,
    program: &str,
    extra: &[String],
) -> Result<SshPlan, SshError> {
    let id = lease.id.clone();
    let state = format!("{:?}", lease.state).to_lowercase();
    let i: &InstanceInfo = match &lease.instance {
        Some(i) => i,
        None if lease.state.is_terminal() => return Err(SshError::Ended { id, state }),
        None => return Err(SshError::NoMachine { id, state }),
    };
    if matches!(lease.state, LeaseState::Closed) {
        return Err(SshError::Ended { id, state });
    }
    let Some(address) = i.addresses.first() else {
        return Err(SshError::NoAddress {
            id,
            server: i.server_id.clone(),
        });
    };
    let want = key_id(&lease.ssh_public_key);
    let key = want.as_ref().and_then(|w| {
        found
            .iter()
            .find_map(|(path, contents)| private_for(path, contents, w))
    });
    let Some(key) = key else {
        let short: String = lease.ssh_public_key.chars().take(40).collect();
        return Err(SshError::NoKey {
            id,
            key: format!("{short}…"),
            searched: if found.is_empty() {
                "no key files".to_string()
            } else {
                found
                    .iter()
                    .map(|(p, _)| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        });
    };
    // An IPv6 literal needs no brackets in `user@host` for ssh.
    let mut args = vec![
        "-i".to_string(),
        key.display().to_string(),
        "-o".to_string(),
        "IdentitiesOnly=yes".to_string(),
        "-o".to_string(),
        format!("UserKnownHostsFile={}", known_hosts.display()),
        "-o".to_string(),
        "StrictHostKeyChecking=accept-new".to_string(),
        "-p".to_string(),
        i.ssh_port.to_string(),
        format!("{}@{address}", i.user),
    ];
    if !extra.is_empty() {
        args.push("--".to_string());
        args.extend(extra.iter().cloned());
    }
    Ok(SshPlan {
        program: program.to_string(),
        args,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE0testkeybody buyer@laptop";

    fn lease(state: LeaseState, instance: Option<InstanceInfo>) -> LeaseRecord {
        LeaseRecord {
            id: "ab".repeat(32),
            state,
            ssh_public_key: KEY.into(),
            instance,
            ..Default::default()
        }
    }

    fn machine(addresses: &[&str], port: u16) -> InstanceInfo {
        InstanceInfo {
            server_id: "srv-1".into(),
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
            image: "debian-12".into(),
            user: "debian".into(),
            ssh_port: port,
            open_ports: vec![port],
        }
    }

    fn keys() -> Vec<(PathBuf, String)> {
        vec![
            (
                PathBuf::from("/home/b/.ssh/other.pub"),
                "ssh-ed25519 AAAAother x".into(),
            ),
            // The same key with another comment still matches.
            (
                PathBuf::from("/home/b/.ssh/id_ed25519.pub"),
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE0testkeybody another-comment\n".into(),
            ),
        ]
    }

    #[test]
    fn plans() {
        let kh = Path::new("/d/ssh/lease.known_hosts");
        let running = LeaseState::Running;
        let ok = |l: LeaseRecord, extra: &[&str]| {
            let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
            plan(&l, &keys(), kh, "ssh", &extra)
        };
        let p = ok(
            lease(running, Some(machine(&["198.18.10.20", "10.99.0.5"], 2222))),
            &["uname", "-a"],
        )
        .unwrap();
        assert_eq!(
            p.args,
            [
                "-i",
                "/home/b/.ssh/id_ed25519",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "UserKnownHostsFile=/d/ssh/lease.known_hosts",
                "-o",
                "StrictHostKeyChecking=accept-new",
                "-p",
                "2222",
                "debian@198.18.10.20",
                "--",
                "uname",
                "-a"
            ]
        );
        for (name, l, found, want) in [
            (
                "not running yet",
                lease(LeaseState::Invoiced, None),
                keys(),
                "no machine yet",
            ),
            (
                "ended",
                lease(LeaseState::Closed, Some(machine(&["198.18.10.20"], 22))),
                keys(),
                "has ended",
            ),
            (
                "no address",
                lease(running, Some(machine(&[], 22))),
                keys(),
                "no network address",
            ),
            (
                "no matching key",
                lease(running, Some(machine(&["198.18.10.20"], 22))),
                vec![(
                    PathBuf::from("/k/other.pub"),
                    "ssh-ed25519 AAAAother".into(),
                )],
                "pass `-i PATH`",
            ),
            (
                "a matching key not named .pub",
                lease(running, Some(machine(&["198.18.10.20"], 22))),
                vec![(PathBuf::from("/k/key"), KEY.into())],
                "pass `-i PATH`",
            ),
        ] {
            let e = plan(&l, &found, kh, "ssh", &[]).expect_err(name);
            assert!(e.to_string().contains(want), "{name}: {e}");
        }
        // No remote command: no `--`.
        let p = ok(lease(running, Some(machine(&["fd00::5"], 22))), &[]).unwrap();
        assert_eq!(p.args.last().unwrap(), "debian@fd00::5");
    }

    #[test]
    fn candidates_put_the_explicit_key_first_then_the_recorded_then_home() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(home.path().join(".ssh")).unwrap();
        std::fs::write(home.path().join(".ssh/b.pub"), "x").unwrap();
        std::fs::write(home.path().join(".ssh/a.pub"), "x").unwrap();
        std::fs::write(home.path().join(".ssh/a"), "private").unwrap();
        let c = candidates(
            Some(Path::new("/k/mine")),
            Some(PathBuf::from("/r/ordered.pub")),
            Some(home.path()),
        );
        assert_eq!(
            c,
            [
                PathBuf::from("/k/mine.pub"),
                PathBuf::from("/r/ordered.pub"),
                home.path().join(".ssh/a.pub"),
                home.path().join(".ssh/b.pub"),
            ]
        );
    }
}
