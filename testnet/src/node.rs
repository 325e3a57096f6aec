//! Real `xov` daemon processes on temp data dirs, driven through the CLI and the local API, and waits on
//! observable conditions with timeouts. Used by the node's integration tests and the testnet scenarios.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `xov` binary: `$XOV_BIN`, or `xov` in the cargo target directory the running test was built into
/// (`target/debug/deps/<test>` → `target/debug/xov`). `cargo test --workspace` builds it; on its own,
/// `cargo build -p xov-node` does.
pub fn xov_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("XOV_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().expect("deps dir");
    let dir = if dir.ends_with("deps") {
        dir.parent().expect("profile dir")
    } else {
        dir
    };
    let bin = dir.join("xov");
    assert!(
        bin.exists(),
        "the xov binary is not built at {}: run `cargo build -p xov-node` (or set XOV_BIN)",
        bin.display()
    );
    bin
}
const READY_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Daemon {
    pub child: Option<Child>,
    pub log: PathBuf,
    pub node_id: String,
    pub api: String,
    pub datadir: PathBuf,
    /// libp2p listen addresses, each ending in /p2p/<peer id>.
    pub p2p: Vec<String>,
    /// A command prefix the CLI runs through (`ip netns exec NS` for a node inside a namespace, whose
    /// API listens on that namespace's loopback); empty: run directly.
    pub cli_wrapper: Vec<String>,
}

/// A started daemon process and the file its stderr (the log) goes to. Stderr goes to a file, not a pipe,
/// so a chatty node can never block on a full pipe.
pub struct Spawned {
    pub child: Child,
    pub log: PathBuf,
}

pub fn spawn_daemon(datadir: &Path) -> Spawned {
    spawn_daemon_with(datadir, &[])
}

static SPAWNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Starts `xov node run` with extra environment (XOV_NETWORK_BOOTSTRAP, …).
pub fn spawn_daemon_with(datadir: &Path, env: &[(&str, String)]) -> Spawned {
    spawn_daemon_via(&[], datadir, env)
}

/// As [`spawn_daemon_with`], run through `wrapper` (a command that ends by running its arguments, e.g.
/// one that gives the node its own view of `/etc/resolv.conf`); empty: the binary itself.
pub fn spawn_daemon_via(wrapper: &[&str], datadir: &Path, env: &[(&str, String)]) -> Spawned {
    std::fs::create_dir_all(datadir).unwrap();
    let n = SPAWNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let log = datadir.join(format!("test-stderr-{}-{n}.log", std::process::id()));
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(xov_bin());
            c
        }
        None => Command::new(xov_bin()),
    };
    let child = cmd
        .args(["--datadir", datadir.to_str().unwrap(), "node", "run"])
        .env("XOV_API_LISTEN", "127.0.0.1:0")
        .env(
            "XOV_NETWORK_LISTEN",
            "/ip4/127.0.0.1/tcp/0,/ip4/127.0.0.1/udp/0/quic-v1",
        )
        .env("XOV_LOG_LEVEL", "info")
        .envs(env.iter().map(|(k, v)| (k.to_string(), v.clone())))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn xov node run");
    Spawned { child, log }
}

/// A log line without its colour: the escape sequences (ESC `[` … `m`) a node's log may carry dropped.
pub fn strip_ansi(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for e in chars.by_ref() {
                if e == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

/// Waits for a process to exit, up to a timeout, without polling: a thread blocks in wait() and reports
/// back. Returns the exit status and what the process logged.
pub fn wait_exit(s: Spawned, timeout: Duration) -> (ExitStatus, String) {
    let (tx, rx) = mpsc::channel();
    let Spawned { mut child, log } = s;
    std::thread::spawn(move || {
        let status = child.wait().unwrap();
        tx.send(status).ok();
    });
    let status = rx
        .recv_timeout(timeout)
        .expect("process did not exit in time");
    (status, std::fs::read_to_string(log).unwrap_or_default())
}

impl Daemon {
    pub fn start(datadir: &Path) -> Daemon {
        Self::start_with(datadir, &[])
    }

    pub fn start_with(datadir: &Path, env: &[(&str, String)]) -> Daemon {
        Self::start_via(&[], datadir, env)
    }

    /// A daemon started through `wrapper` (see [`spawn_daemon_via`]).
    pub fn start_via(wrapper: &[&str], datadir: &Path, env: &[(&str, String)]) -> Daemon {
        let Spawned { mut child, log } = spawn_daemon_via(wrapper, datadir, env);
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let line = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let (status, err) = wait_exit(Spawned { child, log }, Duration::from_secs(10));
                panic!("daemon never became ready ({status}); log:\n{err}");
            }
        };
        assert!(
            line.starts_with("xov node ready:"),
            "unexpected first line {line}"
        );
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name} in {line}"))
                .to_string()
        };
        let p2p = field("p2p")
            .split(',')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        Daemon {
            log,
            p2p,
            node_id: field("node_id"),
            api: field("api"),
            child: Some(child),
            datadir: datadir.to_path_buf(),
            cli_wrapper: Vec::new(),
        }
    }

    /// A daemon inside a network namespace: started and asked through `wrapper` (`ip netns exec NS`).
    pub fn start_inside(wrapper: &[String], datadir: &Path, env: &[(&str, String)]) -> Daemon {
        let w: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        let mut d = Self::start_via(&w, datadir, env);
        d.cli_wrapper = wrapper.to_vec();
        d
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Waits for the daemon to exit by itself (after `node stop`, say).
    pub fn wait(mut self) -> ExitStatus {
        let s = Spawned {
            child: self.child.take().unwrap(),
            log: self.log.clone(),
        };
        wait_exit(s, Duration::from_secs(30)).0
    }

    /// What the daemon logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(self) -> ExitStatus {
        let st = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        self.wait()
    }

    pub fn cookie(&self) -> String {
        std::fs::read_to_string(self.datadir.join(".cookie"))
            .unwrap()
            .trim()
            .to_string()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.api, path)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn xov(datadir: &Path, args: &[&str]) -> Output {
    Command::new(xov_bin())
        .arg("--datadir")
        .arg(datadir)
        .args(args)
        .output()
        .expect("run xov")
}

pub fn ok_json(datadir: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    json_of(args, xov(datadir, &all))
}

/// The JSON `xov --json ARGS` printed; panics with its output when it failed.
fn json_of(args: &[&str], out: Output) -> Value {
    assert!(
        out.status.success(),
        "xov {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

pub fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

impl Daemon {
    /// Kills the process outright (SIGKILL): a crash, not a shutdown.
    pub fn kill(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `xov --json ARGS` against this daemon.
    pub fn json(&self, args: &[&str]) -> Value {
        json_of(args, self.cli(&[&["--json"], args].concat()))
    }

    /// `xov ARGS` against this daemon, through its CLI wrapper.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = match self.cli_wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(xov_bin());
                c
            }
            None => Command::new(xov_bin()),
        };
        cmd.arg("--datadir")
            .arg(&self.datadir)
            .args(args)
            .output()
            .expect("run xov")
    }

    /// `xov ssh LEASE -- COMMAND` as this node's user runs it, with `ssh_program` in place of OpenSSH's
    /// `ssh` (`XOV_SSH`: a wrapper into a namespace, or a stand-in that records its arguments).
    pub fn xov_ssh(
        &self,
        ssh_program: &Path,
        lease: &str,
        command: &[&str],
    ) -> std::io::Result<Output> {
        Command::new(xov_bin())
            .arg("--datadir")
            .arg(&self.datadir)
            .args(["ssh", lease, "--"])
            .args(command)
            .env("XOV_SSH", ssh_program)
            .output()
    }

    /// This node's libp2p peer id, as its status reports it.
    pub fn peer_id(&self) -> String {
        self.json(&["status"])["network"]["peer_id"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Whether this node has a connection to the libp2p peer `peer`.
    pub fn is_connected_to(&self, peer: &str) -> bool {
        self.json(&["peers"])
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["peer_id"] == peer && p["connected"] == true)
    }

    /// The TCP bootstrap address of this node.
    pub fn bootstrap(&self) -> String {
        self.p2p
            .iter()
            .find(|a| a.contains("/tcp/"))
            .cloned()
            .expect("a TCP listen address")
    }
}

/// Polls `check` until it returns Some, or fails after `timeout` with `what` and the last observation.
/// This waits on a condition in another process (there is no event to block on across the API); the
/// interval only spaces out the checks.
pub fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < timeout {
        match check() {
            Ok(v) => return v,
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out after {timeout:?} waiting for {what}; last: {last}");
}
