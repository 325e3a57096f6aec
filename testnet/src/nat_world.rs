//! A small internet with NAT, in network namespaces the world makes and removes itself (issue 18).
//!
//! ```text
//!                     <prefix>-net: bridge br0, 198.18.20.0/24 ("the internet")
//!      seed .2    public .3    nat-a .11          nat-b .12          nat-s .13
//!                               | 10.11.0.1        | 10.12.0.1        | 10.13.0.1
//!                              host-a 10.11.0.2   host-b 10.12.0.2   host-s 10.13.0.2
//! ```
//!
//! Invariants:
//! - Only addresses inside these namespaces (and 127.0.0.1) are used; nothing routes out of them: the
//!   internet bridge has no uplink and no host has a route beyond its own networks.
//! - `nat-a` and `nat-b` masquerade as a home router does (Linux keeps the source port where it can, so one
//!   local port maps to one public port whatever the destination: endpoint-independent mapping, where hole
//!   punching works). `nat-s` masquerades with `random` ports (a new public port per connection: a symmetric
//!   NAT, where hole punching fails). All three drop unsolicited inbound traffic silently (`ct state`
//!   filters on forward and input), as home routers do: a router that answered a stray SYN with a reset
//!   would kill the other side's hole-punching dial before its own SYN opened the mapping.
//! - Inside each host behind NAT, 127.0.0.1:<port> of every forwarded port reaches the root namespace's
//!   127.0.0.1:<port> (bitcoind, the OpenStack lab), through a listener bound inside the namespace and
//!   connected outside by this process (see [`Forwarder`]); the internet hosts get none.
//! - Dropping the world stops the forwarders and deletes every namespace it made (their veths go with them).

use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::HarnessError;

/// A host of the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// On the internet: 198.18.20.2.
    Seed,
    /// On the internet: 198.18.20.3.
    Public,
    /// Behind `nat-a` (endpoint-independent mapping): 10.11.0.2.
    BehindConeA,
    /// Behind `nat-b` (endpoint-independent mapping): 10.12.0.2.
    BehindConeB,
    /// Behind `nat-s` (symmetric: random port per connection): 10.13.0.2.
    BehindSymmetric,
}

impl Host {
    fn name(self) -> &'static str {
        match self {
            Host::Seed => "seed",
            Host::Public => "public",
            Host::BehindConeA => "host-a",
            Host::BehindConeB => "host-b",
            Host::BehindSymmetric => "host-s",
        }
    }

    /// The host's own address.
    pub fn ip(self) -> &'static str {
        match self {
            Host::Seed => "198.18.20.2",
            Host::Public => "198.18.20.3",
            Host::BehindConeA => "10.11.0.2",
            Host::BehindConeB => "10.12.0.2",
            Host::BehindSymmetric => "10.13.0.2",
        }
    }

    /// The public address its traffic leaves with (its NAT's, or its own).
    pub fn public_ip(self) -> &'static str {
        match self {
            Host::Seed | Host::Public => self.ip(),
            Host::BehindConeA => "198.18.20.11",
            Host::BehindConeB => "198.18.20.12",
            Host::BehindSymmetric => "198.18.20.13",
        }
    }
}

/// The NAT routers: (name, internet address, LAN prefix, host behind it, symmetric).
const ROUTERS: [(&str, &str, &str, Host, bool); 3] = [
    ("nat-a", "198.18.20.11", "10.11.0", Host::BehindConeA, false),
    ("nat-b", "198.18.20.12", "10.12.0", Host::BehindConeB, false),
    (
        "nat-s",
        "198.18.20.13",
        "10.13.0",
        Host::BehindSymmetric,
        true,
    ),
];

pub struct NatWorld {
    prefix: String,
    namespaces: Vec<String>,
    forwarders: Vec<Forwarder>,
}

fn run(args: &[&str]) -> Result<(), HarnessError> {
    run_input(args, None)
}

fn run_input(args: &[&str], input: Option<&str>) -> Result<(), HarnessError> {
    use std::io::Write;
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| HarnessError::Unavailable {
            what: "the NAT world",
            why: format!(
                "cannot run {}: {e} (iproute2 and nftables are needed)",
                args[0]
            ),
        })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(HarnessError::io("writing to nft"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(HarnessError::io("waiting for ip/nft"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(HarnessError::Unavailable {
            what: "the NAT world",
            why: format!(
                "`{}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

impl NatWorld {
    /// Makes the world; `forward` are the root namespace's loopback ports the hosts behind NAT reach.
    pub fn create(forward: &[u16]) -> Result<NatWorld, HarnessError> {
        // Short and unique per process, so parallel test processes never share a namespace.
        let prefix = format!("xw{}", std::process::id());
        let mut world = NatWorld {
            prefix,
            namespaces: Vec::new(),
            forwarders: Vec::new(),
        };
        world.build(forward)?;
        Ok(world)
    }

    /// The namespace a host runs in.
    pub fn netns(&self, host: Host) -> String {
        format!("{}-{}", self.prefix, host.name())
    }

    /// A command prefix that runs a program inside the host (`ip netns exec <ns>`).
    pub fn wrapper(&self, host: Host) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.netns(host)]
    }

    fn add_ns(&mut self, name: &str) -> Result<String, HarnessError> {
        let ns = format!("{}-{name}", self.prefix);
        // A namespace of an earlier process with the same id (the id was reused) is stale.
        let _ = run(&["ip", "netns", "del", &ns]);
        run(&["ip", "netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn build(&mut self, forward: &[u16]) -> Result<(), HarnessError> {
        let net = self.add_ns("net")?;
        run(&["ip", "-n", &net, "link", "add", "br0", "type", "bridge"])?;
        run(&["ip", "-n", &net, "link", "set", "br0", "up"])?;
        let mut on_internet: Vec<(String, &str)> = vec![
            (self.add_ns(Host::Seed.name())?, Host::Seed.ip()),
            (self.add_ns(Host::Public.name())?, Host::Public.ip()),
        ];
        for (router, wan_ip, _, _, _) in ROUTERS {
            on_internet.push((self.add_ns(router)?, wan_ip));
        }
        for (i, (ns, ip)) in on_internet.iter().enumerate() {
            let port = format!("p{i}");
            run(&[
                "ip", "link", "add", "wan", "netns", ns, "type", "veth", "peer", "name", &port,
                "netns", &net,
            ])?;
            run(&[
                "ip", "-n", &net, "link", "set", &port, "master", "br0", "up",
            ])?;
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                "wan",
            ])?;
            run(&["ip", "-n", ns, "link", "set", "wan", "up"])?;
        }
        for (router, _, lan, host, symmetric) in ROUTERS {
            let r = format!("{}-{router}", self.prefix);
            let h = self.add_ns(host.name())?;
            run(&[
                "ip", "link", "add", "lan", "netns", &r, "type", "veth", "peer", "name", "eth0",
                "netns", &h,
            ])?;
            run(&[
                "ip",
                "-n",
                &r,
                "addr",
                "add",
                &format!("{lan}.1/24"),
                "dev",
                "lan",
            ])?;
            run(&["ip", "-n", &r, "link", "set", "lan", "up"])?;
            run(&[
                "ip",
                "-n",
                &h,
                "addr",
                "add",
                &format!("{lan}.2/24"),
                "dev",
                "eth0",
            ])?;
            run(&["ip", "-n", &h, "link", "set", "eth0", "up"])?;
            run(&[
                "ip",
                "-n",
                &h,
                "route",
                "add",
                "default",
                "via",
                &format!("{lan}.1"),
            ])?;
            run(&[
                "ip",
                "netns",
                "exec",
                &r,
                "sysctl",
                "-q",
                "-w",
                "net.ipv4.ip_forward=1",
            ])?;
            let masquerade = if symmetric {
                "masquerade random"
            } else {
                "masquerade"
            };
            let rules = format!(
                "table ip xov_nat {{\n\
                 \tchain post {{\n\
                 \t\ttype nat hook postrouting priority 100; policy accept;\n\
                 \t\toifname \"wan\" {masquerade}\n\
                 \t}}\n\
                 \tchain through {{\n\
                 \t\ttype filter hook forward priority 0; policy drop;\n\
                 \t\tct state established,related accept\n\
                 \t\tiifname \"lan\" oifname \"wan\" accept\n\
                 \t}}\n\
                 \tchain to_router {{\n\
                 \t\ttype filter hook input priority 0; policy drop;\n\
                 \t\tct state established,related accept\n\
                 \t\tiifname {{ \"lan\", \"lo\" }} accept\n\
                 \t}}\n\
                 }}\n"
            );
            run_input(&["ip", "netns", "exec", &r, "nft", "-f", "-"], Some(&rules))?;
            for port in forward {
                self.forwarders.push(Forwarder::start(&h, *port)?);
            }
        }
        Ok(())
    }
}

impl Drop for NatWorld {
    fn drop(&mut self) {
        for f in self.forwarders.drain(..) {
            drop(f);
        }
        for ns in self.namespaces.drain(..).rev() {
            // Processes still inside (a node the test leaked) are killed first, so the namespace goes.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", &ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = run(&["ip", "netns", "del", &ns]);
        }
    }
}

/// 127.0.0.1:`port` inside a namespace, joined to 127.0.0.1:`port` of the root namespace. The listening
/// socket is made inside the namespace (one thread enters it with setns(2), binds, and returns); the
/// connections out are made from the root namespace. Dropping it shuts the listener, which ends its thread.
pub struct Forwarder {
    listener: Arc<TcpListener>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn enter_netns(path: &str) -> io::Result<()> {
    let f = std::fs::File::open(path)?;
    // SAFETY: setns with a valid namespace fd; it changes only the calling thread's network namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn bind_inside(ns: &str, port: u16) -> io::Result<TcpListener> {
    // On a thread of its own, so that no other work of this process ever runs inside the namespace.
    let ns = ns.to_string();
    std::thread::spawn(move || -> io::Result<TcpListener> {
        let home = std::fs::File::open("/proc/thread-self/ns/net")?;
        enter_netns(&format!("/run/netns/{ns}"))?;
        let bound = TcpListener::bind(("127.0.0.1", port));
        // SAFETY: as above, back to the namespace this thread started in.
        let back = unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) };
        if back != 0 {
            return Err(io::Error::last_os_error());
        }
        bound
    })
    .join()
    .map_err(|_| io::Error::other("the binding thread panicked"))?
}

impl Forwarder {
    pub fn start(ns: &str, port: u16) -> Result<Forwarder, HarnessError> {
        let listener = Arc::new(
            bind_inside(ns, port)
                .map_err(HarnessError::io("binding a forwarder inside a namespace"))?,
        );
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s) = (listener.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in l.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(inside) = conn else { continue };
                std::thread::spawn(move || {
                    let Ok(outside) = TcpStream::connect(("127.0.0.1", port)) else {
                        return;
                    };
                    let (mut a, mut b) = match (inside.try_clone(), outside.try_clone()) {
                        (Ok(a), Ok(b)) => (a, b),
                        _ => return,
                    };
                    let up = std::thread::spawn(move || {
                        let _ = io::copy(&mut a, &mut b);
                        let _ = b.shutdown(Shutdown::Write);
                    });
                    let (mut inside, mut outside) = (inside, outside);
                    let _ = io::copy(&mut outside, &mut inside);
                    let _ = inside.shutdown(Shutdown::Write);
                    let _ = up.join();
                });
            }
        });
        Ok(Forwarder {
            listener,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // shutdown(2) on a listening socket wakes a blocked accept with an error (Linux).
        // SAFETY: the fd is owned by the listener, alive for this call.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
