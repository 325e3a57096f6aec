//! Gossipsub topics: one per pool, derived from the pool id (itself the hash of the charter, chain included),
//! plus one topic per chain on which every node of that chain hears pool charters, so `xov pool join NAME` can
//! find pools it has never seen.
//!
//! Invariants: a node subscribes only to its own chain's charters topic and to pools of its chain, so gossip
//! of another chain never reaches it (a pool of another chain has another id, hence another topic); a topic
//! this node does not carry classifies as `None`.

use libp2p::gossipsub::{IdentTopic, TopicHash};
use xov_protocol::{Chain, PoolId};

/// Prefix of the charters topic; the chain's genesis block hash (hex, as bitcoind prints it) follows.
pub const CHARTERS_TOPIC_PREFIX: &str = "xov/charters/1/";
const POOL_TOPIC_PREFIX: &str = "xov/pool/1/";

pub fn pool_topic(pool: &PoolId) -> IdentTopic {
    IdentTopic::new(format!("{POOL_TOPIC_PREFIX}{pool}"))
}

/// The topic on which the charters of `chain`'s pools travel.
pub fn charters_topic(chain: &Chain) -> IdentTopic {
    IdentTopic::new(format!("{CHARTERS_TOPIC_PREFIX}{}", chain.genesis_hex()))
}

/// What a topic hash names, if it is one of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    Charters,
    Pool(PoolId),
}

/// What `hash` names for a node on `chain`: its charters topic, a pool's topic, or nothing (the charters
/// topic of another chain, or anything else).
/// Allocates nothing: it runs for every gossip message and every topic of every peer listed.
pub fn classify(hash: &TopicHash, chain: &Chain) -> Option<TopicKind> {
    let s = hash.as_str();
    if let Some(genesis) = s.strip_prefix(CHARTERS_TOPIC_PREFIX) {
        return is_genesis_hex(genesis, chain).then_some(TopicKind::Charters);
    }
    s.strip_prefix(POOL_TOPIC_PREFIX)
        .and_then(|id| id.parse().ok())
        .map(TopicKind::Pool)
}

/// Whether `s` is exactly `chain.genesis_hex()` (lower-case: the same hash in capitals is another topic).
fn is_genesis_hex(s: &str, chain: &Chain) -> bool {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let s = s.as_bytes();
    s.len() == 64
        && chain.as_bytes().iter().rev().enumerate().all(|(i, b)| {
            s[2 * i] == HEX[usize::from(b >> 4)] && s[2 * i + 1] == HEX[usize::from(b & 15)]
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip_to_their_pool() {
        let id = xov_protocol::public_charter(Chain::REGTEST)
            .body()
            .pool_id();
        let chain = Chain::REGTEST;
        assert_eq!(
            classify(&pool_topic(&id).hash(), &chain),
            Some(TopicKind::Pool(id))
        );
        assert_eq!(
            classify(&charters_topic(&chain).hash(), &chain),
            Some(TopicKind::Charters)
        );
        assert_eq!(classify(&IdentTopic::new("other").hash(), &chain), None);
        // The same genesis in capitals names another topic, which this node does not carry.
        let upper = charters_topic(&chain)
            .to_string()
            .to_uppercase()
            .replace("XOV/CHARTERS/1/", CHARTERS_TOPIC_PREFIX);
        assert_eq!(classify(&IdentTopic::new(upper).hash(), &chain), None);
        assert_eq!(
            classify(&IdentTopic::new(CHARTERS_TOPIC_PREFIX).hash(), &chain),
            None
        );
    }

    #[test]
    fn each_chain_has_its_own_charters_topic_and_public_pool_topic() {
        assert_eq!(
            charters_topic(&Chain::REGTEST).to_string(),
            "xov/charters/1/0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"
        );
        let signet = charters_topic(&Chain::SIGNET);
        assert_ne!(signet.hash(), charters_topic(&Chain::REGTEST).hash());
        // Another chain's charters topic is not ours.
        assert_eq!(classify(&signet.hash(), &Chain::REGTEST), None);
        let public = |c: Chain| pool_topic(&xov_protocol::public_charter(c).body().pool_id());
        assert_ne!(public(Chain::REGTEST).hash(), public(Chain::SIGNET).hash());
    }
}
