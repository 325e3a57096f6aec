//! Gossipsub topics: one per pool, derived from the pool id (itself the hash of the signed charter), plus one
//! topic on which every node hears pool charters, so `xov pool join NAME` can find pools it has never seen.

use libp2p::gossipsub::{IdentTopic, TopicHash};
use xov_protocol::PoolId;

pub const CHARTERS_TOPIC: &str = "xov/charters/1";

pub fn pool_topic(pool: &PoolId) -> IdentTopic {
    IdentTopic::new(format!("xov/pool/1/{pool}"))
}

pub fn charters_topic() -> IdentTopic {
    IdentTopic::new(CHARTERS_TOPIC)
}

/// What a topic hash names, if it is one of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    Charters,
    Pool(PoolId),
}

pub fn classify(hash: &TopicHash) -> Option<TopicKind> {
    let s = hash.as_str();
    if s == CHARTERS_TOPIC {
        return Some(TopicKind::Charters);
    }
    s.strip_prefix("xov/pool/1/")
        .and_then(|id| id.parse().ok())
        .map(TopicKind::Pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip_to_their_pool() {
        let id = xov_protocol::public_charter().body().pool_id();
        assert_eq!(classify(&pool_topic(&id).hash()), Some(TopicKind::Pool(id)));
        assert_eq!(
            classify(&charters_topic().hash()),
            Some(TopicKind::Charters)
        );
        assert_eq!(classify(&IdentTopic::new("other").hash()), None);
    }
}
