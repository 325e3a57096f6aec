//! A fault-injecting TCP proxy for the Bitcoin P2P protocol, in front of a real bitcoind: it listens on
//! 127.0.0.1:0, connects every accepted client to the upstream node, and parses the v1 frames in both
//! directions, so a test can drop, hold (until released), delay or reorder messages by command, count what
//! went past, and cut every connection. Rules are set at run time from the test thread; each connection
//! runs on plain threads (a reader and a writer per direction), all stopped and joined when the proxy is
//! dropped.
//!
//! A v1 frame is a 24-byte header — 4-byte network magic, 12-byte NUL-padded command, u32 LE payload
//! length, the first 4 bytes of the payload's double SHA-256 — then the payload. The proxy forwards frames
//! byte for byte (it does not check checksums); a frame announcing more than [`MAX_PAYLOAD`] bytes closes
//! the connection. BIP324 (v2, encrypted) transport cannot be parsed; peers must speak v1 to the proxy.

use std::collections::{BinaryHeap, HashMap};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The largest payload the proxy forwards (Bitcoin Core's own limit is 4 MB; this is generous).
pub const MAX_PAYLOAD: usize = 32 << 20;
/// Header size of a v1 frame.
pub const HEADER_LEN: usize = 24;
/// Regtest's network magic.
pub const REGTEST_MAGIC: [u8; 4] = [0xfa, 0xbf, 0xb5, 0xda];

/// One v1 P2P message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub magic: [u8; 4],
    /// The command, without its NUL padding.
    pub command: String,
    pub checksum: [u8; 4],
    pub payload: Vec<u8>,
}

impl Frame {
    /// A frame with the right checksum for `payload`.
    pub fn new(magic: [u8; 4], command: &str, payload: Vec<u8>) -> Frame {
        assert!(command.len() <= 12, "a command has at most 12 bytes");
        Frame {
            magic,
            command: command.to_string(),
            checksum: checksum(&payload),
            payload,
        }
    }

    /// The frame on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len());
        out.extend_from_slice(&self.magic);
        let mut cmd = [0u8; 12];
        cmd[..self.command.len()].copy_from_slice(self.command.as_bytes());
        out.extend_from_slice(&cmd);
        out.extend_from_slice(&(self.payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.checksum);
        out.extend_from_slice(&self.payload);
        out
    }

    /// Whether the checksum matches the payload.
    pub fn checksum_ok(&self) -> bool {
        self.checksum == checksum(&self.payload)
    }
}

/// Why a byte stream is not a sequence of v1 frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    TooLarge(usize),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooLarge(n) => write!(f, "payload of {n} bytes is over {MAX_PAYLOAD}"),
        }
    }
}

/// Cuts a byte stream, fed in arbitrary pieces, into frames.
#[derive(Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, `None` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_le_bytes(self.buf[16..20].try_into().unwrap()) as usize;
        if len > MAX_PAYLOAD {
            return Err(FrameError::TooLarge(len));
        }
        if self.buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let cmd = &self.buf[4..16];
        let end = cmd.iter().position(|&b| b == 0).unwrap_or(12);
        let frame = Frame {
            magic: self.buf[0..4].try_into().unwrap(),
            command: String::from_utf8_lossy(&cmd[..end]).into_owned(),
            checksum: self.buf[20..24].try_into().unwrap(),
            payload: self.buf[HEADER_LEN..HEADER_LEN + len].to_vec(),
        };
        self.buf.drain(..HEADER_LEN + len);
        Ok(Some(frame))
    }
}

/// Reads one whole frame from a blocking stream (for hand-written test clients).
pub fn read_frame(r: &mut impl Read) -> io::Result<Frame> {
    let mut header = [0u8; HEADER_LEN];
    r.read_exact(&mut header)?;
    let len = u32::from_le_bytes(header[16..20].try_into().unwrap()) as usize;
    if len > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            FrameError::TooLarge(len).to_string(),
        ));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    let mut d = FrameDecoder::new();
    d.push(&header);
    d.push(&payload);
    Ok(d.next_frame().unwrap().expect("a whole frame"))
}

/// The first 4 bytes of the double SHA-256 of `payload`.
pub fn checksum(payload: &[u8]) -> [u8; 4] {
    let h = sha256(&sha256(payload));
    [h[0], h[1], h[2], h[3]]
}

/// Plain SHA-256 (FIPS 180-4), enough for frame checksums without a crypto dependency.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 64];
        for i in 0..16 {
            w[i] = u32::from_be_bytes(block[4 * i..4 * i + 4].try_into().unwrap());
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 32];
    for (i, x) in h.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}

/// Which way a frame travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the client (e.g. the light client) to bitcoind.
    ToUpstream,
    /// From bitcoind to the client.
    ToClient,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Direction::ToUpstream => 0,
            Direction::ToClient => 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Drop,
    /// Lets this many more frames pass, swallows the next one, then the rule ends.
    DropOne {
        skip: usize,
    },
    Hold,
    Delay(Duration),
    Reorder,
}

type Key = (Direction, String);

/// A frame waiting in a writer's queue: sent at `at`, ties in arrival order.
struct Scheduled {
    at: Instant,
    seq: u64,
    bytes: Vec<u8>,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    // Reversed: BinaryHeap is a max-heap and the earliest frame must come out first.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// One direction of one connection: the writer's queue, and the frames held back or waiting for a partner
/// to swap with.
#[derive(Default)]
struct Lane {
    queue: BinaryHeap<Scheduled>,
    held: HashMap<String, Vec<Vec<u8>>>,
    reorder: HashMap<String, Vec<u8>>,
    closed: bool,
}

struct Conn {
    client: TcpStream,
    upstream: TcpStream,
    lanes: [(Mutex<Lane>, Condvar); 2],
    seq: AtomicU64,
}

impl Conn {
    fn lane(&self, dir: Direction) -> MutexGuard<'_, Lane> {
        lock(&self.lanes[dir.index()].0)
    }

    /// Queues bytes for sending at `at`.
    fn send_at(&self, dir: Direction, lane: &mut Lane, at: Instant, bytes: Vec<u8>) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        lane.queue.push(Scheduled { at, seq, bytes });
        self.lanes[dir.index()].1.notify_all();
    }

    fn close(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.upstream.shutdown(Shutdown::Both);
        for (m, cv) in &self.lanes {
            lock(m).closed = true;
            cv.notify_all();
        }
    }
}

struct Shared {
    upstream: SocketAddr,
    stop: AtomicBool,
    rules: Mutex<HashMap<Key, Action>>,
    seen: Mutex<HashMap<Key, usize>>,
    seen_cv: Condvar,
    conns: Mutex<Vec<Arc<Conn>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The proxy; everything it started stops when it is dropped.
pub struct P2pProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl P2pProxy {
    /// Listens on 127.0.0.1:0 and forwards every connection to `upstream`.
    pub fn start(upstream: SocketAddr) -> io::Result<P2pProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            stop: AtomicBool::new(false),
            rules: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
            seen_cv: Condvar::new(),
            conns: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name("p2p-proxy-accept".into())
            .spawn(move || accept_loop(listener, s))?;
        Ok(P2pProxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// Where clients connect.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    fn set(&self, dir: Direction, cmd: &str, action: Action) {
        lock(&self.shared.rules).insert((dir, cmd.to_string()), action);
    }

    /// Swallows every frame with this command going this way.
    pub fn drop(&self, dir: Direction, cmd: &str) {
        self.set(dir, cmd, Action::Drop);
    }

    /// Lets `skip` frames with this command going this way pass, swallows the next one, and ends the rule:
    /// one reply lost in the middle of a batch.
    pub fn drop_one(&self, dir: Direction, cmd: &str, skip: usize) {
        self.set(dir, cmd, Action::DropOne { skip });
    }

    /// Holds back every frame with this command going this way, until [`P2pProxy::release`].
    pub fn hold(&self, dir: Direction, cmd: &str) {
        self.set(dir, cmd, Action::Hold);
    }

    /// Sends each frame with this command going this way `by` later than it arrived; other frames pass it.
    pub fn delay(&self, dir: Direction, cmd: &str, by: Duration) {
        self.set(dir, cmd, Action::Delay(by));
    }

    /// Swaps each pair of consecutive frames with this command going this way (the first waits for the
    /// second; other frames pass it).
    pub fn reorder(&self, dir: Direction, cmd: &str) {
        self.set(dir, cmd, Action::Reorder);
    }

    /// Ends the rule for this command and direction, and forwards, in order, what it held back (also a
    /// reorder's frame still waiting for its partner).
    pub fn release(&self, dir: Direction, cmd: &str) {
        let mut rules = lock(&self.shared.rules);
        rules.remove(&(dir, cmd.to_string()));
        for c in lock(&self.shared.conns).iter() {
            flush(c, dir, Some(cmd));
        }
    }

    /// Ends every rule and forwards everything held back.
    pub fn clear(&self) {
        let mut rules = lock(&self.shared.rules);
        rules.clear();
        for c in lock(&self.shared.conns).iter() {
            flush(c, Direction::ToUpstream, None);
            flush(c, Direction::ToClient, None);
        }
    }

    /// How many frames with this command went this way (counted before any rule).
    pub fn seen(&self, dir: Direction, cmd: &str) -> usize {
        lock(&self.shared.seen)
            .get(&(dir, cmd.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Waits until [`P2pProxy::seen`] reaches `n`, at most `timeout`; returns whether it did.
    pub fn wait_seen(&self, dir: Direction, cmd: &str, n: usize, timeout: Duration) -> bool {
        let key = (dir, cmd.to_string());
        let deadline = Instant::now() + timeout;
        let mut seen = lock(&self.shared.seen);
        loop {
            if seen.get(&key).copied().unwrap_or(0) >= n {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            seen = self
                .shared
                .seen_cv
                .wait_timeout(seen, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Cuts every live connection (both sockets shut down both ways); frames held for them are lost.
    pub fn kill_connections(&self) {
        for c in lock(&self.shared.conns).drain(..) {
            c.close();
        }
    }

    /// How many connections are live (neither side has closed its socket).
    pub fn connections(&self) -> usize {
        lock(&self.shared.conns)
            .iter()
            .filter(|c| !lock(&c.lanes[0].0).closed)
            .count()
    }

    /// Waits until [`P2pProxy::connections`] is `n`, at most `timeout`; returns whether it was.
    pub fn wait_connections(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.connections() == n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            // Connections end on socket events the proxy's threads see; poll them at a fine grain.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for P2pProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor out of accept().
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        self.kill_connections();
        let threads: Vec<_> = lock(&self.shared.threads).drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

/// Sends what a lane holds back for `cmd` (every command if `None`), in arrival order.
fn flush(c: &Conn, dir: Direction, cmd: Option<&str>) {
    let mut lane = c.lane(dir);
    let mut frames = Vec::new();
    let held: Vec<String> = lane
        .held
        .keys()
        .filter(|k| cmd.is_none_or(|c| c == k.as_str()))
        .cloned()
        .collect();
    for k in held {
        frames.extend(lane.held.remove(&k).unwrap_or_default());
    }
    let waiting: Vec<String> = lane
        .reorder
        .keys()
        .filter(|k| cmd.is_none_or(|c| c == k.as_str()))
        .cloned()
        .collect();
    for k in waiting {
        frames.extend(lane.reorder.remove(&k));
    }
    let now = Instant::now();
    for f in frames {
        c.send_at(dir, &mut lane, now, f);
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = stream else { continue };
        let Ok(upstream) = TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(10))
        else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        if let Err(e) = spawn_conn(&shared, client, upstream) {
            eprintln!("p2p proxy: cannot start a connection: {e}");
        }
        // Forget connections that ended by themselves.
        lock(&shared.conns).retain(|c| !lock(&c.lanes[0].0).closed);
    }
}

fn spawn_conn(shared: &Arc<Shared>, client: TcpStream, upstream: TcpStream) -> io::Result<()> {
    let conn = Arc::new(Conn {
        client: client.try_clone()?,
        upstream: upstream.try_clone()?,
        lanes: Default::default(),
        seq: AtomicU64::new(0),
    });
    lock(&shared.conns).push(conn.clone());
    let mut threads = lock(&shared.threads);
    threads.retain(|t| !t.is_finished());
    for (dir, from, to) in [
        (
            Direction::ToUpstream,
            client.try_clone()?,
            upstream.try_clone()?,
        ),
        (
            Direction::ToClient,
            upstream.try_clone()?,
            client.try_clone()?,
        ),
    ] {
        let (s, c) = (shared.clone(), conn.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("p2p-proxy-read-{dir:?}"))
                .spawn(move || read_loop(&s, &c, dir, from))?,
        );
        let c = conn.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("p2p-proxy-write-{dir:?}"))
                .spawn(move || write_loop(&c, dir, to))?,
        );
    }
    Ok(())
}

/// Reads frames coming one way, counts them, and applies the rules.
fn read_loop(shared: &Shared, conn: &Conn, dir: Direction, mut from: TcpStream) {
    let mut decoder = FrameDecoder::new();
    let mut buf = vec![0u8; 64 << 10];
    'read: loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        decoder.push(&buf[..n]);
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    eprintln!("p2p proxy: {dir:?}: {e}; closing the connection");
                    break 'read;
                }
            };
            let key = (dir, frame.command.clone());
            *lock(&shared.seen).entry(key.clone()).or_insert(0) += 1;
            shared.seen_cv.notify_all();
            // The rule is read and applied under the rules lock, so a release cannot slip in between.
            let mut rules = lock(&shared.rules);
            let bytes = frame.encode();
            let now = Instant::now();
            let mut lane = conn.lane(dir);
            match rules.get_mut(&key) {
                None => conn.send_at(dir, &mut lane, now, bytes),
                Some(Action::Drop) => {}
                Some(Action::DropOne { skip }) if *skip > 0 => {
                    *skip -= 1;
                    conn.send_at(dir, &mut lane, now, bytes);
                }
                Some(Action::DropOne { .. }) => {
                    rules.remove(&key);
                }
                Some(Action::Hold) => lane.held.entry(key.1).or_default().push(bytes),
                Some(Action::Delay(by)) => conn.send_at(dir, &mut lane, now + *by, bytes),
                Some(Action::Reorder) => match lane.reorder.remove(&key.1) {
                    None => {
                        lane.reorder.insert(key.1, bytes);
                    }
                    Some(first) => {
                        conn.send_at(dir, &mut lane, now, bytes);
                        conn.send_at(dir, &mut lane, now, first);
                    }
                },
            }
        }
    }
    conn.close();
}

/// Sends a lane's frames when they are due.
fn write_loop(conn: &Conn, dir: Direction, mut to: TcpStream) {
    let (m, cv) = &conn.lanes[dir.index()];
    let mut lane = lock(m);
    loop {
        if lane.closed {
            return;
        }
        let now = Instant::now();
        match lane.queue.peek().map(|s| s.at) {
            Some(at) if at <= now => {
                let s = lane.queue.pop().unwrap();
                drop(lane);
                if to.write_all(&s.bytes).is_err() {
                    conn.close();
                    return;
                }
                lane = lock(m);
            }
            Some(at) => {
                lane = cv
                    .wait_timeout(lane, at - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
            None => lane = cv.wait(lane).unwrap_or_else(|p| p.into_inner()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn sha256_and_checksum_match_known_values() {
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // The checksum of an empty payload (verack's).
        assert_eq!(checksum(&[]), [0x5d, 0xf6, 0xe0, 0xe2]);
        // Two blocks.
        assert_eq!(
            hex(&sha256(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
    }

    #[test]
    fn frame_round_trip() {
        let f = Frame::new(REGTEST_MAGIC, "ping", 42u64.to_le_bytes().to_vec());
        let bytes = f.encode();
        assert_eq!(bytes.len(), HEADER_LEN + 8);
        assert_eq!(&bytes[4..16], b"ping\0\0\0\0\0\0\0\0");
        let mut d = FrameDecoder::new();
        d.push(&bytes);
        let back = d.next_frame().unwrap().unwrap();
        assert_eq!(back, f);
        assert!(back.checksum_ok());
        assert_eq!(d.next_frame().unwrap(), None);
        // A full 12-byte command has no NUL at all.
        let long = Frame::new(REGTEST_MAGIC, "sendaddrv2xx", vec![]);
        d.push(&long.encode());
        assert_eq!(d.next_frame().unwrap().unwrap(), long);
        assert_eq!(
            read_frame(&mut io::Cursor::new(f.encode())).unwrap(),
            f,
            "the blocking reader agrees"
        );
    }

    #[test]
    fn frames_split_across_reads() {
        let frames = [
            Frame::new(REGTEST_MAGIC, "version", (0..=255u8).collect()),
            Frame::new(REGTEST_MAGIC, "verack", vec![]),
            Frame::new(REGTEST_MAGIC, "cfilter", vec![7; 1000]),
        ];
        let stream: Vec<u8> = frames.iter().flat_map(|f| f.encode()).collect();
        for piece in [1, 3, 23, 24, 25, 100, 4096] {
            let mut d = FrameDecoder::new();
            let mut out = Vec::new();
            for chunk in stream.chunks(piece) {
                d.push(chunk);
                while let Some(f) = d.next_frame().unwrap() {
                    out.push(f);
                }
            }
            assert_eq!(out, frames, "pieces of {piece} bytes");
        }
    }

    #[test]
    fn oversized_payload_is_refused() {
        let mut header = Frame::new(REGTEST_MAGIC, "block", vec![]).encode();
        header[16..20].copy_from_slice(&((MAX_PAYLOAD as u32) + 1).to_le_bytes());
        let mut d = FrameDecoder::new();
        d.push(&header);
        assert_eq!(d.next_frame(), Err(FrameError::TooLarge(MAX_PAYLOAD + 1)));
    }
}
