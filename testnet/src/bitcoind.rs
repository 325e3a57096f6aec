//! A real Bitcoin Core `bitcoind` in regtest mode for tests: own data dir, free ports on 127.0.0.1, compact
//! block filters served (`-blockfilterindex=1 -peerblockfilters=1`) so both the light client and RPC work;
//! stopped when dropped. Driven through `bitcoin-cli`, so the harness needs no RPC client of its own.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::HarnessError;

/// Where `testnet/bitcoind/build.sh` installs by default (its crate version is part of the path).
const DEFAULT_VERSION_DIR: &str = "bitcoind-0.4.1";

/// Finds the directory holding `bitcoind` and `bitcoin-cli`: `$XOV_BITCOIND_DIR`, the build script's cache,
/// or `PATH`.
pub fn bin_dir() -> Result<PathBuf, HarnessError> {
    if let Some(d) = std::env::var_os("XOV_BITCOIND_DIR") {
        let d = PathBuf::from(d);
        if d.join("bitcoind").exists() {
            return Ok(d);
        }
    }
    let cache = std::env::var_os("XOV_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/xov")))
        .map(|c| c.join(DEFAULT_VERSION_DIR).join("bin"));
    if let Some(c) = cache.filter(|c| c.join("bitcoind").exists()) {
        return Ok(c);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for p in std::env::split_paths(&path) {
            if p.join("bitcoind").exists() && p.join("bitcoin-cli").exists() {
                return Ok(p);
            }
        }
    }
    Err(HarnessError::Missing {
        what: "bitcoind",
        how: "run `bash testnet/bitcoind/build.sh` (builds Bitcoin Core once, ~5 min) or set XOV_BITCOIND_DIR",
    })
}

/// A TCP port on 127.0.0.1 for a server a test starts (bitcoind's RPC and P2P ports), that no other test
/// process on the machine is handed until this one exits.
///
/// Why not simply bind port 0 and close: that port is in the kernel's ephemeral range, which the kernel
/// hands out to every listener bound to port 0 and every outgoing connection, so while bitcoind starts, a
/// node or proxy of a test running beside it can take the port first (a light client then talks to the
/// wrong server). So ports come from below the ephemeral range (20000 up to its start), where nothing is
/// handed out unasked; test processes claim one by an advisory lock on `$TMPDIR/xov-test-ports/<port>`,
/// held for the rest of the process, and a port something already listens on is skipped.
pub fn free_port() -> u16 {
    static HELD: std::sync::Mutex<Vec<std::fs::File>> = std::sync::Mutex::new(Vec::new());
    const LOW: u32 = 20_000;
    let high = ephemeral_start().max(LOW + 1_000);
    let span = high - LOW;
    let dir = std::env::temp_dir().join("xov-test-ports");
    std::fs::create_dir_all(&dir).expect("the test ports' lock directory");
    let mut held = HELD.lock().unwrap_or_else(|p| p.into_inner());
    // Processes start their search at different places, so they rarely meet on one lock.
    let start = std::process::id()
        .wrapping_mul(7_919)
        .wrapping_add(held.len() as u32)
        % span;
    for i in 0..span {
        let port = (LOW + (start + i) % span) as u16;
        let Ok(lock) = std::fs::File::create(dir.join(port.to_string())) else {
            continue;
        };
        if lock.try_lock().is_err() || TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        held.push(lock);
        return port;
    }
    panic!(
        "no free port on 127.0.0.1 between {LOW} and {high} (locks in {})",
        dir.display()
    )
}

/// The first port of the kernel's ephemeral range (`/proc/sys/net/ipv4/ip_local_port_range`), 32768 when
/// unknown.
fn ephemeral_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A running regtest node.
pub struct Bitcoind {
    child: Option<Child>,
    bin: PathBuf,
    _dir: tempfile::TempDir,
    datadir: PathBuf,
    pub rpc_port: u16,
    pub p2p_port: u16,
}

impl Bitcoind {
    /// Starts bitcoind and returns once its RPC answers.
    pub fn start() -> Result<Bitcoind, HarnessError> {
        let bin = bin_dir()?;
        let dir = tempfile::tempdir().map_err(HarnessError::io("temp dir"))?;
        let datadir = dir.path().to_path_buf();
        let (rpc_port, p2p_port) = (free_port(), free_port());
        let child = Command::new(bin.join("bitcoind"))
            .args([
                "-regtest",
                &format!("-datadir={}", datadir.display()),
                &format!("-rpcport={rpc_port}"),
                &format!("-port={p2p_port}"),
                "-bind=127.0.0.1",
                "-rpcbind=127.0.0.1",
                "-rpcallowip=127.0.0.1",
                "-listen=1",
                "-blockfilterindex=1",
                "-peerblockfilters=1",
                "-fallbackfee=0.0001",
                "-txindex=1",
                "-dnsseed=0",
                "-fixedseeds=0",
                "-printtoconsole=0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(HarnessError::io("start bitcoind"))?;
        let node = Bitcoind {
            child: Some(child),
            bin,
            _dir: dir,
            datadir,
            rpc_port,
            p2p_port,
        };
        // -rpcwait blocks until the RPC server is up: an event, not a guess.
        node.cli(&["-rpcwait", "-rpcwaittimeout=60", "getblockchaininfo"])?;
        Ok(node)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn datadir(&self) -> &Path {
        &self.datadir
    }

    /// The RPC cookie file (for clients that authenticate with it).
    pub fn cookie_file(&self) -> PathBuf {
        self.datadir.join("regtest").join(".cookie")
    }

    pub fn rpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.rpc_port)
    }

    /// The environment that points a node's wallet at this bitcoind over RPC (regtest, cookie auth).
    pub fn wallet_rpc_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("XOV_WALLET_ENABLED", "true".to_string()),
            ("XOV_WALLET_NETWORK", "regtest".to_string()),
            ("XOV_WALLET_CHAIN", "rpc".to_string()),
            ("XOV_WALLET_RPC_URL", self.rpc_url()),
            (
                "XOV_WALLET_RPC_COOKIE",
                self.cookie_file().display().to_string(),
            ),
        ]
    }

    pub fn p2p_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.p2p_port))
    }

    /// Runs `bitcoin-cli` against this node; returns its stdout as JSON (or as a JSON string when it is not
    /// JSON, as for `getnewaddress`-style answers).
    pub fn cli(&self, args: &[&str]) -> Result<Value, HarnessError> {
        let out = Command::new(self.bin.join("bitcoin-cli"))
            .arg("-regtest")
            .arg(format!("-datadir={}", self.datadir.display()))
            .arg(format!("-rpcport={}", self.rpc_port))
            .args(args)
            .output()
            .map_err(HarnessError::io("run bitcoin-cli"))?;
        if !out.status.success() {
            return Err(HarnessError::Rpc(format!(
                "bitcoin-cli {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Mines `n` blocks paying `address`; returns the block hashes.
    pub fn mine_to(&self, n: u32, address: &str) -> Result<Vec<String>, HarnessError> {
        let v = self.cli(&["generatetoaddress", &n.to_string(), address])?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|h| h.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Mines `n` blocks to a throwaway address (Core is built without its wallet, so use a fixed one).
    pub fn mine(&self, n: u32) -> Result<Vec<String>, HarnessError> {
        self.mine_to(n, BURN_ADDRESS)
    }

    /// Mines one block once `txid` has reached the mempool (a light client broadcasts over P2P, so a block
    /// mined at once may miss it). Fails after `timeout` without it.
    pub fn mine_tx(
        &self,
        txid: &str,
        timeout: std::time::Duration,
    ) -> Result<Vec<String>, HarnessError> {
        let until = std::time::Instant::now() + timeout;
        while self.cli(&["getmempoolentry", txid]).is_err() {
            if std::time::Instant::now() > until {
                return Err(HarnessError::Rpc(format!(
                    "{txid} did not reach the mempool within {timeout:?}"
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        self.mine(1)
    }

    /// Mines one block once the mempool holds at least one transaction (for a payment whose txid the
    /// test does not see). Fails after `timeout` with the mempool still empty.
    pub fn mine_pending(&self, timeout: std::time::Duration) -> Result<Vec<String>, HarnessError> {
        let until = std::time::Instant::now() + timeout;
        while self.cli(&["getmempoolinfo"])?["size"].as_u64().unwrap_or(0) == 0 {
            if std::time::Instant::now() > until {
                return Err(HarnessError::Rpc(format!(
                    "no transaction reached the mempool within {timeout:?}"
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        self.mine(1)
    }

    pub fn height(&self) -> Result<u64, HarnessError> {
        self.cli(&["getblockcount"])?
            .as_u64()
            .ok_or_else(|| HarnessError::Rpc("getblockcount gave no number".into()))
    }

    /// Stops the node and waits for it to exit.
    pub fn stop(mut self) -> Result<(), HarnessError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), HarnessError> {
        if let Some(mut child) = self.child.take() {
            if self.cli(&["stop"]).is_err() {
                let _ = child.kill();
            }
            child
                .wait()
                .map_err(HarnessError::io("wait for bitcoind"))?;
        }
        Ok(())
    }
}

impl Drop for Bitcoind {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// A regtest P2WPKH address whose key nobody uses: a sink for blocks mined only to move the chain.
pub const BURN_ADDRESS: &str = "bcrt1qs758ursh4q9z627kt3pp5yysm78ddny6txaqgw";

#[cfg(test)]
mod tests {
    use super::*;

    /// The ports handed to bitcoind are never ones the kernel gives a listener on port 0 (what every node and
    /// proxy of the other tests binds) and never the same twice.
    #[test]
    fn free_ports_stay_out_of_the_kernels_way_and_are_not_handed_out_twice() {
        let ours: Vec<u16> = (0..16).map(|_| free_port()).collect();
        let distinct: std::collections::HashSet<u16> = ours.iter().copied().collect();
        assert_eq!(distinct.len(), ours.len(), "{ours:?}");
        let kernels: Vec<TcpListener> = (0..200)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("a port from the kernel"))
            .collect();
        for l in &kernels {
            let p = l.local_addr().expect("its address").port();
            assert!(
                !distinct.contains(&p),
                "the kernel handed out {p}, one of ours"
            );
        }
        for p in ours {
            assert!(
                u32::from(p) < ephemeral_start(),
                "{p} is in the ephemeral range"
            );
            TcpListener::bind(("127.0.0.1", p)).expect("ours is free to bind");
        }
    }
}
