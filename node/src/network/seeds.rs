//! The seed list the binary ships: where a node with no bootstrap peers and no remembered peers looks for the
//! network first (one network policy: which names a fresh node asks).
//!
//! Invariants:
//! - Seeds are `/dnsaddr/<name>` names, never fixed addresses: whoever runs the seeds moves them by editing
//!   DNS TXT records (`_dnsaddr.<name>`, one `dnsaddr=/ip4/.../p2p/<id>` each), not by shipping a release.
//! - Regtest ships none: a regtest node is a local test network and never dials out unless told to.
//! - The operator's `[network] seeds` replaces the shipped list entirely (`seeds = []` turns seeds off);
//!   bootstrap peers and remembered peers are dialed either way.
//! - A seed that does not resolve or answer costs nothing but a warning: the node goes on with what else it has.

use xov_protocol::Chain;

/// The seed names shipped for a bitcoin network; empty for regtest and for networks this build does not know.
pub fn shipped(chain: &Chain) -> &'static [&'static str] {
    match chain.name() {
        Some("bitcoin") => &["/dnsaddr/bitcoin.seed.xov.network"],
        Some("testnet4") => &["/dnsaddr/testnet4.seed.xov.network"],
        Some("signet") => &["/dnsaddr/signet.seed.xov.network"],
        Some("testnet") => &["/dnsaddr/testnet.seed.xov.network"],
        _ => &[],
    }
}

/// The seeds a node uses: the operator's list when set, else the shipped one for its network.
pub fn effective(configured: Option<&[String]>, chain: &Chain) -> Vec<String> {
    match configured {
        Some(list) => list.to_vec(),
        None => shipped(chain).iter().map(|s| s.to_string()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::multiaddr::Protocol;
    use libp2p::Multiaddr;

    #[test]
    fn shipped_seeds_are_dnsaddr_names_and_regtest_has_none() {
        for (name, chain) in Chain::KNOWN {
            let seeds = shipped(&chain);
            if name == "regtest" {
                assert!(seeds.is_empty(), "regtest dials nobody unless told");
                continue;
            }
            assert!(!seeds.is_empty(), "{name} ships seeds");
            for s in seeds {
                let a: Multiaddr = s.parse().unwrap_or_else(|e| panic!("{name}: {s}: {e}"));
                assert!(
                    matches!(
                        a.iter().collect::<Vec<_>>().as_slice(),
                        [Protocol::Dnsaddr(_)]
                    ),
                    "{name}: {s} is a bare /dnsaddr name"
                );
            }
        }
        assert!(
            shipped(&Chain::from_genesis_hash([7; 32])).is_empty(),
            "an unknown network ships none"
        );
    }

    #[test]
    fn the_operators_list_replaces_the_shipped_one() {
        struct Case {
            name: &'static str,
            configured: Option<Vec<String>>,
            chain: Chain,
            want: Vec<String>,
        }
        let own = vec!["/dnsaddr/seeds.example.org".to_string()];
        let cases = [
            Case {
                name: "unset on bitcoin: shipped",
                configured: None,
                chain: Chain::BITCOIN,
                want: vec!["/dnsaddr/bitcoin.seed.xov.network".into()],
            },
            Case {
                name: "unset on regtest: none",
                configured: None,
                chain: Chain::REGTEST,
                want: vec![],
            },
            Case {
                name: "own list on bitcoin: only the own list",
                configured: Some(own.clone()),
                chain: Chain::BITCOIN,
                want: own.clone(),
            },
            Case {
                name: "empty list: seeds off",
                configured: Some(vec![]),
                chain: Chain::SIGNET,
                want: vec![],
            },
            Case {
                name: "own list on regtest: used",
                configured: Some(own.clone()),
                chain: Chain::REGTEST,
                want: own.clone(),
            },
        ];
        for c in cases {
            assert_eq!(
                effective(c.configured.as_deref(), &c.chain),
                c.want,
                "{}",
                c.name
            );
        }
    }
}
