//! The Bitcoin P2P fault proxy against a real regtest bitcoind: a minimal hand-written P2P client does the
//! version handshake through the proxy and watches its pings' pongs get dropped, held and released,
//! reordered, delayed, and its connection cut; then a light-client xov wallet (compact block filters)
//! syncs through the proxy, and stalls when the proxy swallows every `cfilter`.
//!
//! No sleeps as synchronisation: the tests wait on the proxy's counters (`wait_seen`) and on reads with a
//! deadline. A bounded wait is only used to show that something does *not* happen.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use xov_testnet::bitcoind::Bitcoind;
use xov_testnet::p2p_proxy::{Direction::*, Frame, FrameDecoder, P2pProxy, REGTEST_MAGIC};

/// How long anything that should happen may take.
const WAIT: Duration = Duration::from_secs(30);
/// How long we watch for something that should not happen (a pong crosses localhost in well under 1 ms).
const QUIET: Duration = Duration::from_millis(500);

/// A bare v1 P2P client.
struct Client {
    stream: TcpStream,
    decoder: FrameDecoder,
}

enum Got {
    Frame(Frame),
    Timeout,
    Closed,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        Client {
            stream: TcpStream::connect(addr).expect("connect to the proxy"),
            decoder: FrameDecoder::new(),
        }
    }

    fn send(&mut self, cmd: &str, payload: Vec<u8>) {
        self.stream
            .write_all(&Frame::new(REGTEST_MAGIC, cmd, payload).encode())
            .expect("send");
    }

    /// The next frame, waiting until `deadline` at most.
    fn recv(&mut self, deadline: Instant) -> Got {
        let mut buf = [0u8; 8192];
        loop {
            if let Some(f) = self.decoder.next_frame().expect("a valid frame") {
                assert_eq!(f.magic, REGTEST_MAGIC);
                assert!(f.checksum_ok(), "{} has a bad checksum", f.command);
                return Got::Frame(f);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Got::Timeout;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut buf) {
                Ok(0) => return Got::Closed,
                Ok(n) => self.decoder.push(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Got::Timeout
                }
                Err(_) => return Got::Closed,
            }
        }
    }

    /// Reads (and skips other frames) until a `cmd` frame arrives; `None` if none did by `wait`.
    fn expect(&mut self, cmd: &str, wait: Duration) -> Option<Frame> {
        let deadline = Instant::now() + wait;
        loop {
            match self.recv(deadline) {
                Got::Frame(f) if f.command == cmd => return Some(f),
                Got::Frame(_) => {}
                Got::Timeout => return None,
                Got::Closed => panic!("connection closed while waiting for {cmd}"),
            }
        }
    }

    fn handshake(&mut self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut v = Vec::new();
        v.extend_from_slice(&70016i32.to_le_bytes());
        v.extend_from_slice(&0u64.to_le_bytes()); // services
        v.extend_from_slice(&(now as i64).to_le_bytes());
        for _ in 0..2 {
            // addr_recv, addr_from: services, IPv4-mapped 127.0.0.1, port
            v.extend_from_slice(&0u64.to_le_bytes());
            v.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1]);
            v.extend_from_slice(&0u16.to_be_bytes());
        }
        v.extend_from_slice(&0x5eed_u64.to_le_bytes()); // nonce
        let ua = b"/xov-p2p-proxy-test/";
        v.push(ua.len() as u8);
        v.extend_from_slice(ua);
        v.extend_from_slice(&0i32.to_le_bytes()); // start height
        v.push(0); // relay
        self.send("version", v);
        assert!(self.expect("version", WAIT).is_some(), "bitcoind's version");
        assert!(self.expect("verack", WAIT).is_some(), "bitcoind's verack");
        self.send("verack", vec![]);
    }

    fn ping(&mut self, nonce: u64) {
        self.send("ping", nonce.to_le_bytes().to_vec());
    }

    /// The nonce of the next pong, if one arrives within `wait`.
    fn pong(&mut self, wait: Duration) -> Option<u64> {
        self.expect("pong", wait)
            .map(|f| u64::from_le_bytes(f.payload[..8].try_into().unwrap()))
    }
}

#[test]
fn pongs_dropped_held_reordered_delayed_and_connection_killed() {
    if xov_testnet::skip_e2e("p2p proxy") {
        return;
    }
    let started = Instant::now();
    let btc = Bitcoind::start().unwrap_or_else(|e| panic!("{e}"));
    let proxy = P2pProxy::start(btc.p2p_addr()).expect("proxy starts");
    let mut c = Client::connect(proxy.local_addr());
    c.handshake();
    assert_eq!(proxy.seen(ToUpstream, "version"), 1);
    assert_eq!(proxy.seen(ToClient, "version"), 1);
    assert!(proxy.seen(ToClient, "verack") >= 1);

    // Unhindered.
    c.ping(1);
    assert_eq!(c.pong(WAIT), Some(1));
    assert_eq!(proxy.seen(ToClient, "pong"), 1);

    // Dropped: bitcoind answers (the proxy counts the pong) but it never reaches the client. After the
    // rule is cleared the next pong is the next ping's: the dropped one is gone for good.
    proxy.drop(ToClient, "pong");
    c.ping(2);
    assert!(
        proxy.wait_seen(ToClient, "pong", 2, WAIT),
        "bitcoind answered"
    );
    assert_eq!(c.pong(QUIET), None, "a dropped pong arrived");
    proxy.clear();
    c.ping(3);
    assert_eq!(c.pong(WAIT), Some(3));

    // Held, then released in order.
    proxy.hold(ToClient, "pong");
    c.ping(4);
    c.ping(5);
    assert!(proxy.wait_seen(ToClient, "pong", 5, WAIT));
    assert_eq!(c.pong(QUIET), None, "a held pong arrived");
    proxy.release(ToClient, "pong");
    assert_eq!(c.pong(WAIT), Some(4));
    assert_eq!(c.pong(WAIT), Some(5));

    // Reordered: each pair swapped.
    proxy.reorder(ToClient, "pong");
    for n in 6..=9 {
        c.ping(n);
    }
    let got: Vec<_> = (0..4).map(|_| c.pong(WAIT)).collect();
    assert_eq!(got, [Some(7), Some(6), Some(9), Some(8)]);

    // Delayed: pings still go through at once, the pong comes late.
    proxy.clear();
    let by = Duration::from_millis(300);
    proxy.delay(ToClient, "pong", by);
    let t = Instant::now();
    c.ping(10);
    assert_eq!(c.pong(WAIT), Some(10));
    assert!(t.elapsed() >= by, "pong came after {:?}", t.elapsed());
    proxy.clear();
    assert_eq!(proxy.seen(ToUpstream, "ping"), 10);

    // Killed: the client's next read ends (EOF or error), not with a timeout.
    assert_eq!(proxy.connections(), 1);
    proxy.kill_connections();
    let deadline = Instant::now() + WAIT;
    loop {
        match c.recv(deadline) {
            Got::Frame(_) => continue, // anything bitcoind sent before the cut
            Got::Closed => break,
            Got::Timeout => panic!("the killed connection is still open"),
        }
    }
    drop(proxy);
    eprintln!(
        "p2p proxy ping/pong test: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

mod wallet {
    use super::*;
    use tokio::sync::broadcast::Receiver;
    use xov_wallet::*;

    async fn open(dir: &std::path::Path, name: &str, peer: SocketAddr) -> XovWallet {
        let cfg = WalletConfig {
            network: Network::Regtest,
            mnemonic_path: dir.join(format!("{name}.mnemonic")),
            passphrase: String::new(),
            file_passphrase: None,
            chain: ChainSource::CompactFilters { peers: vec![peer] },
            lookahead: 50,
        };
        XovWallet::open(cfg, Box::new(FileStore::new(dir.join(name)).unwrap()))
            .await
            .expect("wallet opens")
    }

    /// Whether the wallet's tip reaches `height` within `wait`, re-checking on every wallet event.
    async fn reaches(
        w: &XovWallet,
        rx: &mut Receiver<WalletEvent>,
        height: u32,
        wait: Duration,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        while w.tip_height() < height {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("wallet event stream broke: {e}"),
                Err(_) => return false,
            }
        }
        true
    }

    /// The first deterministic reproduction of a light-client stall: with every `cfilter` swallowed, the
    /// wallet does not reach bitcoind's tip (watched for 10 s; a 75 s run saw the light client time out
    /// and reconnect about every 15 s, asking again each time, so this stall is not yet a lost timer).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn light_client_syncs_through_proxy_and_stalls_without_cfilters() {
        if xov_testnet::skip_e2e("p2p proxy light client") {
            return;
        }
        let started = Instant::now();
        let btc = tokio::task::block_in_place(Bitcoind::start).unwrap_or_else(|e| panic!("{e}"));
        tokio::task::block_in_place(|| btc.mine(20)).expect("mine");
        let height = 20;
        let dir = tempfile::tempdir().unwrap();

        // Through an unhindered proxy the light client syncs to the tip.
        let proxy = P2pProxy::start(btc.p2p_addr()).expect("proxy starts");
        let w = open(dir.path(), "through", proxy.local_addr()).await;
        let mut rx = w.subscribe();
        assert!(
            reaches(&w, &mut rx, height, Duration::from_secs(90)).await,
            "the wallet did not sync through the proxy (tip {})",
            w.tip_height()
        );
        assert!(proxy.seen(ToClient, "cfilter") > 0, "synced by filters");
        assert!(proxy.seen(ToClient, "cfheaders") > 0);
        drop(w);
        tokio::task::block_in_place(|| drop(proxy));

        // With every cfilter swallowed it does not.
        let proxy = P2pProxy::start(btc.p2p_addr()).expect("proxy starts");
        proxy.drop(ToClient, "cfilter");
        let w = open(dir.path(), "stalled", proxy.local_addr()).await;
        let mut rx = w.subscribe();
        // bitcoind did answer the filter requests: the stall is the client's.
        let answered = tokio::task::block_in_place(|| {
            proxy.wait_seen(
                ToClient,
                "cfilter",
                height as usize,
                Duration::from_secs(90),
            )
        });
        assert!(
            answered,
            "bitcoind sent {} cfilters",
            proxy.seen(ToClient, "cfilter")
        );
        assert!(
            !reaches(&w, &mut rx, height, Duration::from_secs(10)).await,
            "the wallet reached the tip without filters"
        );
        eprintln!(
            "stalled at tip {} of {height}; getcfilters sent {}, cfilters swallowed {}, versions {}, conns {}",
            w.tip_height(),
            proxy.seen(ToUpstream, "getcfilters"),
            proxy.seen(ToClient, "cfilter"),
            proxy.seen(ToUpstream, "version"),
            proxy.connections()
        );
        drop(w);
        tokio::task::block_in_place(|| drop(proxy));
        eprintln!(
            "p2p proxy light-client test: {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
}
