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
pub fn classify(hash: &TopicHash, chain: &Chain) -> Option<TopicKind> {
    if *hash == charters_topic(chain).hash() {
        return Some(TopicKind::Charters);
    }
    hash.as_str()
        .strip_prefix(POOL_TOPIC_PREFIX)
        .and_then(|id| id.parse().ok())
        .map(TopicKind::Pool)
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
