//! A peer that speaks the node's protocols (built from the node's own network code) but does whatever the
//! test tells it to: publish any bytes on a pool's or the charters topic, answer sync requests with a script,
//! send its own sync requests, and report what happened to its connection.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance};
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::swarm::SwarmEvent;
use libp2p::{identity, Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};
use xov_node::network::behaviour::BehaviourEvent;
use xov_node::network::sync::{SyncRequest, SyncResponse};
use xov_node::network::{build_swarm_with_max_frame, topics};
use xov_protocol::{Chain, OfferKey, PoolId};

/// How the adversary answers the sync requests it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncScript {
    /// An empty last page (or no charters): what an honest peer with nothing does.
    Empty,
    /// A page of another pool than the one asked for.
    WrongPool,
    /// A page whose `next` points at where the request started: paging without progress.
    NoProgress,
    /// Empty pages whose `next` always moves forward: paging for ever, if the asker let it.
    Endless,
    /// One page of [`PAGE_OFFERS`] valid offers of the pool asked for, each by its own provider
    /// ([`page_key`]), but the one at `forged` with a broken signature.
    ForgedInPage { forged: usize },
    /// Holds [`PAGE_OFFERS`] valid offers of the pool ([`page_key`]) but serves none of them in book pages
    /// (as if they had been lost): only its digest shows them, and bucket pages hand them over.
    OnlyByDigest,
    /// Answers every digest with one that differs from any book in every bucket, and every bucket page empty
    /// but with a `next` further on in the bucket: paging for ever, if the asker let it.
    DigestDiffersEverywhere,
}

/// Offers in a [`SyncScript::ForgedInPage`] page.
pub const PAGE_OFFERS: usize = 48;

/// The provider of the `i`th offer of a [`SyncScript::ForgedInPage`] page.
pub fn page_key(i: usize) -> xov_protocol::Keypair {
    let mut secret = [0x5A; 32];
    secret[..8].copy_from_slice(&(i as u64).to_le_bytes());
    xov_protocol::Keypair::from_secret_bytes(&secret)
}

fn page_signed(pool: [u8; 32]) -> Vec<xov_protocol::Signed<xov_protocol::Offer>> {
    use xov_protocol::*;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut offers: Vec<Signed<Offer>> = (0..PAGE_OFFERS)
        .map(|i| {
            let key = page_key(i);
            Signed::sign(
                super::signed_offer(&key, 1, now - 5, now + 3600, PoolId(pool)),
                &key,
            )
        })
        .collect();
    // A page is in key order (provider, offer id), as the node serves it.
    offers.sort_by_key(|o| OfferKey::of(o.body()));
    offers
}

fn page_offers(pool: [u8; 32], forged: usize) -> Vec<Vec<u8>> {
    let offers = page_signed(pool);
    let forged_by = page_key(forged).node_id();
    offers
        .iter()
        .map(|o| {
            let mut bytes = o.to_bytes();
            if o.body().provider == forged_by {
                let at = bytes.len() - 20;
                bytes[at] ^= 0x10;
            }
            bytes
        })
        .collect()
}

enum Cmd {
    Publish(IdentTopic, Vec<u8>),
    Subscribe(IdentTopic),
    Sync(SyncRequest, oneshot::Sender<Result<SyncResponse, String>>),
    Redial(oneshot::Sender<bool>),
}

pub struct Adversary {
    pub peer_id: PeerId,
    tx: mpsc::UnboundedSender<Cmd>,
    /// Sync requests the adversary received.
    pub sync_requests: Arc<AtomicU64>,
    /// Of those, requests for a digest bucket's page.
    pub bucket_requests: Arc<AtomicU64>,
    /// Connections to the target that closed.
    pub closed: Arc<AtomicU64>,
    pool: PoolId,
    chain: Chain,
}

fn key_after(after: Option<OfferKey>, step: u64) -> OfferKey {
    let provider = xov_protocol::Keypair::from_secret_bytes(&[77; 32]).node_id();
    OfferKey {
        provider,
        offer_id: after.map_or(0, |a| a.offer_id) + step,
    }
}

/// A key after `after` in digest bucket `bucket` (a provider found by trying keys: ~1,024 tries).
fn key_in_bucket(bucket: u16, after: Option<OfferKey>) -> OfferKey {
    if let Some(a) = after.filter(|a| xov_protocol::bucket_of(a) == bucket) {
        return OfferKey {
            provider: a.provider,
            offer_id: a.offer_id + 1,
        };
    }
    let provider = (0u64..)
        .map(|i| {
            let mut secret = [0x42; 32];
            secret[..8].copy_from_slice(&i.to_le_bytes());
            xov_protocol::Keypair::from_secret_bytes(&secret).node_id()
        })
        .find(|p| {
            xov_protocol::bucket_of(&OfferKey {
                provider: *p,
                offer_id: 0,
            }) == bucket
        })
        .expect("some key falls in every bucket");
    OfferKey {
        provider,
        offer_id: 1,
    }
}

/// The answer to `req` by `script`; `book` holds what an [`SyncScript::OnlyByDigest`] adversary holds.
fn answer(script: SyncScript, req: SyncRequest, book: &xov_protocol::OfferBook) -> SyncResponse {
    match req {
        SyncRequest::Digest { pool, .. } => SyncResponse::Digest {
            pool,
            buckets: match script {
                SyncScript::DigestDiffersEverywhere => (0..xov_protocol::DIGEST_BUCKETS)
                    .map(|i| xov_protocol::BucketSum {
                        count: 1,
                        sum: i as u64 + 0x5EED,
                    })
                    .collect(),
                _ => book.digest(&PoolId(pool)),
            },
        },
        SyncRequest::Bucket {
            pool,
            bucket,
            after,
            ..
        } if script == SyncScript::DigestDiffersEverywhere => SyncResponse::Book {
            pool,
            offers: Vec::new(),
            withdrawals: Vec::new(),
            next: Some(key_in_bucket(bucket, after)),
            evidence: Vec::new(),
        },
        SyncRequest::Bucket {
            pool,
            bucket,
            after,
            ..
        } => {
            let (offers, more) =
                book.bucket_page(&PoolId(pool), bucket, after, xov_node::network::sync::PAGE);
            SyncResponse::Book {
                pool,
                next: more.then(|| OfferKey::of(offers.last().unwrap().body())),
                offers: offers.iter().map(|o| o.to_bytes()).collect(),
                withdrawals: Vec::new(),
                evidence: Vec::new(),
            }
        }
        SyncRequest::Charters { after, .. } => SyncResponse::Charters {
            charters: Vec::new(),
            next: match script {
                SyncScript::Empty
                | SyncScript::WrongPool
                | SyncScript::ForgedInPage { .. }
                | SyncScript::OnlyByDigest
                | SyncScript::DigestDiffersEverywhere => None,
                SyncScript::NoProgress => Some(after.unwrap_or([1; 32])),
                // Only books page for ever: the charters answer ends, so it can serve as a barrier.
                SyncScript::Endless => None,
            },
        },
        SyncRequest::Book { pool, after, .. } => SyncResponse::Book {
            pool: if script == SyncScript::WrongPool {
                [0xEE; 32]
            } else {
                pool
            },
            offers: match script {
                SyncScript::ForgedInPage { forged } if after.is_none() => page_offers(pool, forged),
                _ => Vec::new(),
            },
            withdrawals: Vec::new(),
            next: match script {
                SyncScript::Empty
                | SyncScript::WrongPool
                | SyncScript::ForgedInPage { .. }
                | SyncScript::OnlyByDigest
                | SyncScript::DigestDiffersEverywhere => None,
                SyncScript::NoProgress => Some(after.unwrap_or_else(|| key_after(None, 1))),
                SyncScript::Endless => Some(key_after(after, 1)),
            },
            evidence: Vec::new(),
        },
    }
}

impl Adversary {
    /// Connects to `target`, joins `pool`'s topic, and returns once the target is known to be subscribed.
    pub async fn connect(target: &str, pool: PoolId) -> Adversary {
        Self::connect_with(target, pool, SyncScript::Empty).await
    }

    /// As [`Adversary::connect`], answering sync requests by `script`.
    pub async fn connect_with(target: &str, pool: PoolId, script: SyncScript) -> Adversary {
        // Frames up to 4 MiB, so it can send what the node's limit refuses.
        let mut swarm =
            build_swarm_with_max_frame(identity::Keypair::generate_ed25519(), 4 << 20).unwrap();
        let peer_id = *swarm.local_peer_id();
        swarm
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .unwrap();
        let topic = topics::pool_topic(&pool);
        swarm.behaviour_mut().gossipsub.subscribe(&topic).unwrap();
        let target: Multiaddr = target.parse().unwrap();
        swarm.dial(target.clone()).unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel::<Cmd>();
        let (ready_tx, ready_rx) = oneshot::channel();
        let mut ready_tx = Some(ready_tx);
        let hash = topic.hash();
        let sync_requests = Arc::new(AtomicU64::new(0));
        let closed = Arc::new(AtomicU64::new(0));
        let bucket_requests = Arc::new(AtomicU64::new(0));
        let (requests, buckets, closes) = (
            sync_requests.clone(),
            bucket_requests.clone(),
            closed.clone(),
        );
        let mut book = xov_protocol::OfferBook::new();
        if script == SyncScript::OnlyByDigest {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            for o in page_signed(pool.0) {
                book.insert(o, now).unwrap();
            }
        }
        tokio::spawn(async move {
            let mut pending: std::collections::HashMap<
                OutboundRequestId,
                oneshot::Sender<Result<SyncResponse, String>>,
            > = Default::default();
            let mut redial: Option<oneshot::Sender<bool>> = None;
            // Messages gossipsub could not queue yet (its per-peer queues were full): sent again as the
            // queues drain, so a flood arrives whole.
            let mut backlog: std::collections::VecDeque<(IdentTopic, Vec<u8>)> = Default::default();
            let mut retry = tokio::time::interval(Duration::from_millis(5));
            loop {
                while let Some((t, data)) = backlog.pop_front() {
                    if let Err(gossipsub::PublishError::AllQueuesFull(_)) = swarm
                        .behaviour_mut()
                        .gossipsub
                        .publish(t.clone(), data.clone())
                    {
                        backlog.push_front((t, data));
                        break;
                    }
                }
                tokio::select! {
                    _ = retry.tick(), if !backlog.is_empty() => {}
                    ev = swarm.select_next_some() => match ev {
                        SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed { topic: t, .. })) if t == hash => {
                            if let Some(r) = ready_tx.take() { let _ = r.send(()); }
                        }
                        SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message { propagation_source, message_id, .. })) => {
                            // It forwards nothing it hears.
                            swarm.behaviour_mut().gossipsub.report_message_validation_result(&message_id, &propagation_source, MessageAcceptance::Ignore);
                        }
                        SwarmEvent::Behaviour(BehaviourEvent::Sync(request_response::Event::Message { message, .. })) => match message {
                            request_response::Message::Request { request, channel, .. } => {
                                requests.fetch_add(1, Ordering::SeqCst);
                                if matches!(request, SyncRequest::Bucket { .. }) {
                                    buckets.fetch_add(1, Ordering::SeqCst);
                                }
                                let _ = swarm.behaviour_mut().sync.send_response(channel, answer(script, request, &book));
                            }
                            request_response::Message::Response { request_id, response } => {
                                if let Some(tx) = pending.remove(&request_id) { let _ = tx.send(Ok(response)); }
                            }
                        },
                        SwarmEvent::Behaviour(BehaviourEvent::Sync(request_response::Event::OutboundFailure { request_id, error, .. })) => {
                            if let Some(tx) = pending.remove(&request_id) { let _ = tx.send(Err(error.to_string())); }
                        }
                        SwarmEvent::ConnectionEstablished { .. } => {
                            if let Some(r) = redial.take() { let _ = r.send(true); }
                        }
                        SwarmEvent::ConnectionClosed { .. } => {
                            closes.fetch_add(1, Ordering::SeqCst);
                        }
                        SwarmEvent::OutgoingConnectionError { .. } => {
                            if let Some(r) = redial.take() { let _ = r.send(false); }
                        }
                        _ => {}
                    },
                    cmd = rx.recv() => match cmd {
                        Some(Cmd::Publish(t, data)) => backlog.push_back((t, data)),
                        Some(Cmd::Subscribe(t)) => { let _ = swarm.behaviour_mut().gossipsub.subscribe(&t); }
                        Some(Cmd::Sync(req, reply)) => {
                            let target_peer = swarm.connected_peers().next().copied();
                            match target_peer {
                                Some(p) => { let id = swarm.behaviour_mut().sync.send_request(&p, req); pending.insert(id, reply); }
                                None => { let _ = reply.send(Err("not connected".into())); }
                            }
                        }
                        Some(Cmd::Redial(reply)) => {
                            redial = Some(reply);
                            let _ = swarm.dial(target.clone());
                        }
                        None => break,
                    },
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(30), ready_rx)
            .await
            .expect("target subscribed in time")
            .unwrap();
        Adversary {
            peer_id,
            tx,
            sync_requests,
            bucket_requests,
            closed,
            pool,
            chain: Chain::REGTEST,
        }
    }

    /// Publishes `data` on the pool's topic.
    pub fn send(&self, data: Vec<u8>) {
        self.publish(topics::pool_topic(&self.pool), data);
    }

    pub fn publish(&self, topic: IdentTopic, data: Vec<u8>) {
        self.tx.send(Cmd::Publish(topic, data)).unwrap();
    }

    /// Joins the chain's charters topic (the target then asks it for charters).
    pub fn subscribe_charters(&self) {
        self.tx
            .send(Cmd::Subscribe(topics::charters_topic(&self.chain)))
            .unwrap();
    }

    /// Sends a sync request to the target and waits for the answer (or the failure).
    pub async fn sync(&self, req: SyncRequest) -> Result<SyncResponse, String> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Cmd::Sync(req, tx)).unwrap();
        rx.await.unwrap_or_else(|_| Err("adversary stopped".into()))
    }

    /// Dials the target again; true once a connection is established, false when the dial failed.
    pub async fn redial(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Cmd::Redial(tx)).unwrap();
        tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .expect("dial outcome in time")
            .unwrap_or(false)
    }
}
