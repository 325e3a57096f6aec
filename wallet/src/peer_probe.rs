//! A short `version` exchange of our own with a light-client peer: it tells the peer's current tip (the
//! `start_height` of its `version`) and its network (the frame's magic), which the light client library does
//! not expose. The supervisor ([`crate::health`]) compares that tip with the client's, and a peer on another
//! network is refused before the client ever talks to it.
//!
//! Invariants: plain v1 framing; at most one `version` read, bounded in size and time; the connection is
//! closed when the probe returns, whatever happens.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bdk_wallet::bitcoin::consensus::encode;
use bdk_wallet::bitcoin::p2p::message::{NetworkMessage, RawNetworkMessage};
use bdk_wallet::bitcoin::p2p::message_network::VersionMessage;
use bdk_wallet::bitcoin::p2p::{Address, Magic, ServiceFlags};
use bdk_wallet::bitcoin::Network;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest `version` payload we read (Core's is about 100 bytes; the user agent is bounded at 256).
const MAX_VERSION_PAYLOAD: usize = 1024;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProbeError {
    #[error("cannot connect to {peer}: {detail}")]
    Connect { peer: SocketAddr, detail: String },
    #[error("{peer} did not answer in {} s", .secs)]
    Timeout { peer: SocketAddr, secs: u64 },
    /// The peer speaks for another chain (the frame's magic bytes say which).
    #[error("{peer} is a {theirs} node, this wallet is on {ours}; remove it from the peers")]
    WrongNetwork {
        peer: SocketAddr,
        ours: Network,
        theirs: String,
    },
    #[error("{peer} sent something that is not a version message: {detail}")]
    Malformed { peer: SocketAddr, detail: String },
}

/// What a peer said about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerVersion {
    pub height: u32,
    pub services: ServiceFlags,
    pub user_agent: String,
}

impl PeerVersion {
    /// Whether the peer serves compact block filters (BIP157).
    pub fn serves_filters(&self) -> bool {
        self.services.has(ServiceFlags::COMPACT_FILTERS)
    }
}

/// Sends our `version` and reads the peer's.
pub async fn probe(
    peer: SocketAddr,
    network: Network,
    timeout: Duration,
) -> Result<PeerVersion, ProbeError> {
    match tokio::time::timeout(timeout, exchange(peer, network)).await {
        Ok(r) => r,
        Err(_) => Err(ProbeError::Timeout {
            peer,
            secs: timeout.as_secs(),
        }),
    }
}

async fn exchange(peer: SocketAddr, network: Network) -> Result<PeerVersion, ProbeError> {
    let malformed = |detail: String| ProbeError::Malformed { peer, detail };
    let mut stream = TcpStream::connect(peer)
        .await
        .map_err(|e| ProbeError::Connect {
            peer,
            detail: e.to_string(),
        })?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let local = stream
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let version = VersionMessage::new(
        ServiceFlags::NONE,
        now,
        Address::new(&peer, ServiceFlags::NONE),
        Address::new(&local, ServiceFlags::NONE),
        rand_core::RngCore::next_u64(&mut rand_core::OsRng),
        "/xov-probe/".into(),
        0,
    );
    let ours = Magic::from(network);
    let msg = RawNetworkMessage::new(ours, NetworkMessage::Version(version));
    stream
        .write_all(&encode::serialize(&msg))
        .await
        .map_err(|e| ProbeError::Connect {
            peer,
            detail: e.to_string(),
        })?;
    // Frames until the peer's version: magic (4), command (12), length (4), checksum (4), payload.
    loop {
        let mut header = [0u8; 24];
        stream
            .read_exact(&mut header)
            .await
            .map_err(|e| malformed(format!("connection ended: {e}")))?;
        let magic = Magic::from_bytes(header[0..4].try_into().expect("4 bytes"));
        if magic != ours {
            return Err(ProbeError::WrongNetwork {
                peer,
                ours: network,
                theirs: Network::from_magic(magic)
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| format!("unknown network (magic {magic})")),
            });
        }
        let len = u32::from_le_bytes(header[16..20].try_into().expect("4 bytes")) as usize;
        if len > MAX_VERSION_PAYLOAD {
            return Err(malformed(format!("a {len}-byte frame before its version")));
        }
        let mut frame = header.to_vec();
        frame.resize(24 + len, 0);
        stream
            .read_exact(&mut frame[24..])
            .await
            .map_err(|e| malformed(format!("connection ended: {e}")))?;
        let raw: RawNetworkMessage =
            encode::deserialize(&frame).map_err(|e| malformed(e.to_string()))?;
        if let NetworkMessage::Version(v) = raw.payload() {
            return Ok(PeerVersion {
                height: v.start_height.max(0) as u32,
                services: v.services,
                user_agent: v.user_agent.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A listener that answers with one frame of the given network's `version`.
    async fn fake_peer(network: Network, height: i32) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let v = VersionMessage::new(
                ServiceFlags::NETWORK | ServiceFlags::COMPACT_FILTERS,
                0,
                Address::new(&addr, ServiceFlags::NONE),
                Address::new(&addr, ServiceFlags::NONE),
                7,
                "/fake/".into(),
                height,
            );
            let m = RawNetworkMessage::new(Magic::from(network), NetworkMessage::Version(v));
            let _ = s.write_all(&encode::serialize(&m)).await;
            let mut sink = [0u8; 256];
            let _ = s.read(&mut sink).await;
        });
        addr
    }

    #[tokio::test]
    async fn reads_the_peers_height_and_services() {
        let peer = fake_peer(Network::Regtest, 321).await;
        let v = probe(peer, Network::Regtest, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(v.height, 321);
        assert!(v.serves_filters());
        assert_eq!(v.user_agent, "/fake/");
    }

    #[tokio::test]
    async fn a_peer_on_another_network_is_named_and_refused() {
        let peer = fake_peer(Network::Signet, 5).await;
        let e = probe(peer, Network::Regtest, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(
            e,
            ProbeError::WrongNetwork {
                peer,
                ours: Network::Regtest,
                theirs: "signet".into()
            }
        );
    }

    #[tokio::test]
    async fn a_silent_peer_times_out() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = l.local_addr().unwrap();
        let e = probe(peer, Network::Regtest, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(e, ProbeError::Timeout { .. }), "{e:?}");
        drop(l);
    }
}
