//! Human-readable tables and JSON output for the CLI.

use serde::Serialize;

use crate::api::leases::LeaseView;
use crate::api::{OfferView, PoolView, Status};
use crate::lease::record::{LeaseRecord, Role};
use xov_protocol::LeaseState;

/// Renders Unix times for people: the local date and time in the system's time zone (`/etc/localtime`, or
/// `TZ`), and how far from now ("in 59 min", "3 min ago"). `--json` output keeps the Unix seconds.
pub struct When {
    now: u64,
    tz: jiff::tz::TimeZone,
}

impl When {
    /// Now, in the system's time zone (UTC when it cannot be read).
    pub fn system() -> When {
        When {
            now: crate::clock::unix_now(),
            tz: jiff::tz::TimeZone::try_system().unwrap_or(jiff::tz::TimeZone::UTC),
        }
    }

    /// A fixed moment and zone (tests).
    pub fn fixed(now: u64, tz: jiff::tz::TimeZone) -> When {
        When { now, tz }
    }

    /// `2026-12-03 09:14 CET (in 59 min)`.
    pub fn at(&self, unix: u64) -> String {
        format!(
            "{} ({})",
            self.local(unix, "%Y-%m-%d %H:%M %Z"),
            self.relative(unix)
        )
    }

    /// For tables: `12-03 09:14 (in 59 min)`.
    pub fn short(&self, unix: u64) -> String {
        format!(
            "{} ({})",
            self.local(unix, "%m-%d %H:%M"),
            self.relative(unix)
        )
    }

    /// The local time of day, `09:14:05` (a lease's history as it is followed).
    pub fn clock(&self, unix: u64) -> String {
        self.local(unix, "%H:%M:%S")
    }

    fn local(&self, unix: u64, format: &str) -> String {
        match i64::try_from(unix)
            .ok()
            .and_then(|s| jiff::Timestamp::from_second(s).ok())
        {
            Some(t) => t.to_zoned(self.tz.clone()).strftime(format).to_string(),
            None => unix.to_string(),
        }
    }

    /// "in 59 min", "3 h 5 min ago", "now".
    pub fn relative(&self, unix: u64) -> String {
        let ahead = unix >= self.now;
        let d = unix.abs_diff(self.now);
        let span = match d {
            0 => return "now".into(),
            1..=59 => format!("{d} s"),
            60..=3599 => format!("{} min", d / 60),
            3600..=172_799 if d % 3600 < 60 => format!("{} h", d / 3600),
            3600..=172_799 => format!("{} h {} min", d / 3600, d % 3600 / 60),
            _ => format!("{} days", d / 86_400),
        };
        if ahead {
            format!("in {span}")
        } else {
            format!("{span} ago")
        }
    }
}

/// `s` as one word for a POSIX shell: unchanged when it has only safe characters, else single-quoted.
pub fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "@%+=:,./-_".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Prints `value` as JSON when asked, otherwise the human rendering.
pub fn print<T: Serialize>(json: bool, value: &T, human: impl FnOnce() -> String) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value)
                .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
        );
    } else {
        println!("{}", human());
    }
}

/// `public`, `private (2 relays hold a slot)`, `unknown (not tested yet)`.
fn reach(n: &crate::network::NetworkStatus) -> String {
    use crate::network::reachability::Reach;
    match n.reachability {
        Reach::Public => "public: others dial this node directly".into(),
        Reach::Private => format!(
            "private (behind NAT): reached through {} relay{}",
            n.relays.len(),
            if n.relays.len() == 1 { "" } else { "s" }
        ),
        Reach::Unknown => "unknown: not tested yet".into(),
    }
}

pub fn status(s: &Status) -> String {
    let n = &s.network;
    format!(
        "node id   {}\nversion   {}\nchain     {}\ndata dir  {}\nuptime    {} s\noffers    {}\npools     {}\npeers     {}\nreach     {}\nlisten    {}\ngossip    {} accepted, {} rejected, {} ignored, {} rate-limited, {} synced, {} of another chain, {} of another version\nabuse     {} peers banned, {} unreadable frames, {} bad sync answers, {} sync requests refused",
        s.node_id, s.version, s.chain, s.datadir, s.uptime_secs, s.offers, s.pools, n.connected_peers,
        reach(n),
        n.listen_addrs.join("\n          "),
        n.gossip.accepted, n.gossip.rejected, n.gossip.ignored, n.gossip.rate_limited, n.gossip.synced,
        n.gossip.other_chain, n.gossip.other_version, n.gossip.bans, n.gossip.invalid_frames, n.gossip.sync_faults, n.gossip.sync_refused
    )
}

pub fn peers(peers: &[crate::network::PeerView]) -> String {
    if peers.is_empty() {
        return "no peers; give a bootstrap address (network.bootstrap in xov.toml or XOV_NETWORK_BOOTSTRAP)".into();
    }
    let rows = peers
        .iter()
        .map(|p| {
            vec![
                short(&p.peer_id, 20),
                if p.connected {
                    "yes".into()
                } else {
                    "no".into()
                },
                p.gossip_score.map_or("-".into(), |s| format!("{s:.1}")),
                p.penalty.to_string(),
                if p.banned { "yes".into() } else { "no".into() },
                p.pools.len().to_string(),
            ]
        })
        .collect();
    table(
        &["PEER", "CONNECTED", "SCORE", "PENALTY", "BANNED", "POOLS"],
        rows,
    )
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(n.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// Lays out rows under a header, each column as wide as its widest cell.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(header.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.into_iter().map(line));
    out.join("\n")
}

pub fn offers(offers: &[OfferView]) -> String {
    if offers.is_empty() {
        return "no offers match; loosen the filters or try another --pool".into();
    }
    let rows = offers
        .iter()
        .map(|o| {
            vec![
                o.price_sats_per_hour.to_string(),
                o.vcpus.to_string(),
                o.ram_mib.to_string(),
                o.disk_gib.to_string(),
                match &o.gpu_model {
                    Some(m) => format!("{}x{}", o.gpu_count, m),
                    None => "-".into(),
                },
                o.arch.clone(),
                short(&o.images.join(","), 30),
                if o.extra_ports.is_empty() {
                    "ssh".into()
                } else {
                    let p: Vec<String> = o.extra_ports.iter().map(u16::to_string).collect();
                    short(&format!("ssh+{}", p.join(",")), 20)
                },
                format!(
                    "{}{}{}",
                    o.country,
                    if o.region.is_empty() { "" } else { "/" },
                    short(&o.region, 16)
                ),
                o.capacity.to_string(),
                short(&o.provider, 12),
                o.offer_id.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "SATS/H", "VCPU", "RAM_MIB", "DISK_GIB", "GPU", "ARCH", "IMAGES", "PORTS", "LOCATION",
            "CAP", "PROVIDER", "OFFER",
        ],
        rows,
    )
}

pub fn pools(pools: &[PoolView]) -> String {
    let rows = pools
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                short(&p.id, 16),
                p.offers.to_string(),
                if p.publish == ["anyone"] {
                    "anyone".into()
                } else {
                    format!("{} providers", p.publish.len())
                },
                format!("{}..{} s", p.min_ttl_secs, p.max_ttl_secs),
                p.min_price_step_sats.to_string(),
            ]
        })
        .collect();
    table(
        &["NAME", "ID", "OFFERS", "PUBLISH", "TTL", "PRICE_STEP"],
        rows,
    )
}

pub fn leases(l: &[LeaseView], when: &When) -> String {
    if l.is_empty() {
        return "no leases yet; `xov order --help` shows how to lease a machine".into();
    }
    table(
        &[
            "LEASE",
            "ROLE",
            "STATE",
            "SATS/H",
            "PAID",
            "AT_RISK",
            "BUDGET",
            "RUNS_UNTIL",
            "ADDRESS",
        ],
        l.iter()
            .map(|v| {
                let x = &v.lease;
                let e = v.exposure.as_ref();
                vec![
                    x.id[..12].to_string(),
                    format!("{:?}", x.role).to_lowercase(),
                    format!("{:?}", x.state),
                    x.price_sats_per_hour.to_string(),
                    x.paid_sat.to_string(),
                    e.map_or("-".into(), |e| e.at_risk_sat.to_string()),
                    e.and_then(|e| e.budget.as_ref())
                        .map_or("-".into(), |b| format!("{}/{}", b.spent_sat, b.total_sat)),
                    x.runs_until.map_or("-".into(), |u| when.short(u)),
                    x.instance
                        .as_ref()
                        .map_or("-".into(), |i| i.addresses.join(",")),
                ]
            })
            .collect(),
    )
}

/// What a lease that is not running yet waits for, in words for its owner; `None` once its machine runs or
/// it has ended (nothing more to wait for).
pub fn waiting_for(l: &LeaseRecord) -> Option<String> {
    let buyer = l.role == Role::Buyer;
    Some(match l.state {
        LeaseState::Ordered if buyer => "the provider's answer to the order".to_string(),
        LeaseState::Ordered => "this node's answer to the order".to_string(),
        LeaseState::Invoiced if buyer => match (&l.pay_address, &l.pay_uri) {
            (Some(a), Some(uri)) => format!(
                "your payment of {} sat to {a} (`xov wallet pay '{uri}'`)",
                l.amount_sat.saturating_sub(l.paid_sat)
            ),
            _ => "the provider's invoice".to_string(),
        },
        LeaseState::Invoiced => "the buyer's payment".to_string(),
        LeaseState::PaymentSeen => {
            "the payment's confirmation in a block (the machine starts after that)".to_string()
        }
        LeaseState::Funded | LeaseState::Provisioning if buyer => {
            "the provider to start the machine".to_string()
        }
        LeaseState::Funded | LeaseState::Provisioning => {
            "the cloud to start the machine".to_string()
        }
        LeaseState::Running
        | LeaseState::Warned
        | LeaseState::Grace
        | LeaseState::Halted
        | LeaseState::Closed
        | LeaseState::Refused
        | LeaseState::Expired
        | LeaseState::Failed => return None,
    })
}

pub fn lease(v: &LeaseView, when: &When) -> String {
    let x = &v.lease;
    let mut out = format!(
        "lease      {}\nrole       {:?}\nstate      {:?}\nprovider   {}\nmachine    {} vCPU, {} MiB, {} GiB, {}\nprice      {} sats/h for {} h = {} sat\npaid       {} sat\n",
        x.id, x.role, x.state, x.counterparty, x.vcpus, x.ram_mib, x.disk_gib, x.image,
        x.price_sats_per_hour, x.hours, x.amount_sat, x.paid_sat
    );
    if let Some(e) = &v.exposure {
        out.push_str(&format!(
            "at risk    {} sat (prepaid time not yet run {} + paid, not yet counted by the provider {})\n",
            e.at_risk_sat, e.prepaid_left_sat, e.uncounted_sat
        ));
        if let Some(b) = &e.budget {
            out.push_str(&format!(
                "budget     {} of {} sat spent in {} slices of {} sat ({} s; fees {} sat on top)\n",
                b.spent_sat, b.total_sat, b.slices_paid, b.slice_sat, b.slice_secs, b.fees_sat
            ));
            let next = match (&b.withheld, b.done, b.next_slice_at) {
                (Some(w), _, _) => format!("withheld: {w}"),
                (None, true, _) => "none: slicing is over".to_string(),
                (None, false, Some(at)) => {
                    format!("due at {} (if the provider delivers)", when.at(at))
                }
                (None, false, None) => "when the machine runs".to_string(),
            };
            out.push_str(&format!("next slice {next}\n"));
        }
    }
    if let Some(uri) = &x.pay_uri {
        out.push_str(&format!("pay to     {uri}\n"));
    }
    if let Some(u) = x.runs_until {
        out.push_str(&format!("runs until {}\n", when.at(u)));
    }
    if let Some(i) = &x.instance {
        match i.addresses.first() {
            Some(a) => {
                let port = if i.ssh_port == 22 {
                    String::new()
                } else {
                    format!(" -p {}", i.ssh_port)
                };
                out.push_str(&format!(
                    "ssh        ssh{port} {}@{a}   (or: xov ssh {})\n",
                    i.user, x.id
                ));
                if i.open_ports.iter().any(|p| *p != i.ssh_port) {
                    let ports: Vec<String> = i.open_ports.iter().map(u16::to_string).collect();
                    out.push_str(&format!("open ports {}\n", ports.join(", ")));
                }
            }
            None => out.push_str(&format!(
                "server     {} (no network address: the cloud attached none)\n",
                i.server_id
            )),
        }
    }
    out.trim_end().to_string()
}

/// `xov trust show`: the score explained, then the limits it gives here.
pub fn trust(v: &crate::api::trust::TrustView) -> String {
    let l = &v.limits;
    let mut out = format!(
        "{}\nlimits here: {} leases at once, {} sats/h in all{}",
        v.explanation.trim_end(),
        l.max_concurrent_leases,
        l.max_sats_per_hour,
        if l.reduced_by_pool_load {
            format!(
                " (reduced: the pool runs {} sats/h)",
                l.pool_global_sats_per_hour
            )
        } else {
            String::new()
        }
    );
    if let Some(n) = &v.next_tier_limits {
        out.push_str(&format!(
            "\nat tier {}: {} leases, {} sats/h",
            n.tier, n.max_concurrent_leases, n.max_sats_per_hour
        ));
    }
    out
}

/// `xov bond list`.
pub fn bonds(b: &[serde_json::Value]) -> String {
    if b.is_empty() {
        return "no bonds; `xov bond create --amount SATS --lock-blocks N` makes one".into();
    }
    let mut out = format!(
        "{:<68} {:>12} {:>9} {:>9}  state\n",
        "OUTPOINT", "SATS", "UNLOCK", "HEIGHT"
    );
    for x in b {
        let state = if x["unlock_txid"].is_string() {
            "unlocked"
        } else if x["height"].is_u64() {
            "confirmed"
        } else {
            "unconfirmed"
        };
        out.push_str(&format!(
            "{:<68} {:>12} {:>9} {:>9}  {state}\n",
            x["outpoint"].as_str().unwrap_or(""),
            x["amount_sat"],
            x["locktime"],
            x["height"],
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--wait` says what a lease waits for, by state and role, and stops waiting once the machine runs or
    /// the lease ended.
    #[test]
    fn waiting_for_names_what_is_missing() {
        let lease = |state, role, pay: bool| LeaseRecord {
            id: "ab".repeat(32),
            state,
            role,
            amount_sat: 36_000,
            paid_sat: 400,
            pay_address: pay.then(|| "bcrt1qpay".to_string()),
            pay_uri: pay.then(|| "bitcoin:bcrt1qpay?amount=0.00036".to_string()),
            ..Default::default()
        };
        let cases: [(&str, LeaseRecord, Option<&str>); 9] = [
            ("ordered buyer", lease(LeaseState::Ordered, Role::Buyer, false), Some("the provider's answer to the order")),
            (
                "invoiced buyer: how much, where, and how",
                lease(LeaseState::Invoiced, Role::Buyer, true),
                Some("your payment of 35600 sat to bcrt1qpay (`xov wallet pay 'bitcoin:bcrt1qpay?amount=0.00036'`)"),
            ),
            ("invoiced provider", lease(LeaseState::Invoiced, Role::Provider, true), Some("the buyer's payment")),
            (
                "payment seen",
                lease(LeaseState::PaymentSeen, Role::Buyer, true),
                Some("the payment's confirmation in a block (the machine starts after that)"),
            ),
            ("provisioning buyer", lease(LeaseState::Provisioning, Role::Buyer, true), Some("the provider to start the machine")),
            ("funded provider", lease(LeaseState::Funded, Role::Provider, true), Some("the cloud to start the machine")),
            ("running: done", lease(LeaseState::Running, Role::Buyer, true), None),
            ("warned: runs", lease(LeaseState::Warned, Role::Buyer, true), None),
            ("expired: ended", lease(LeaseState::Expired, Role::Buyer, true), None),
        ];
        for (name, l, want) in cases {
            assert_eq!(waiting_for(&l).as_deref(), want, "{name}");
        }
    }

    #[test]
    fn times_read_as_local_times_and_distances() {
        let now = 1_796_087_290; // 2026-12-01 01:08:10 UTC
        let utc = When::fixed(now, jiff::tz::TimeZone::UTC);
        // Central European time as a POSIX rule: no tzdata needed.
        let paris = When::fixed(
            now,
            jiff::tz::TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap(),
        );
        let cases: [(&str, &When, u64, &str); 8] = [
            (
                "in an hour, UTC",
                &utc,
                now + 3540,
                "2026-12-01 02:07 UTC (in 59 min)",
            ),
            (
                "the same moment in Paris",
                &paris,
                now + 3540,
                "2026-12-01 03:07 CET (in 59 min)",
            ),
            ("seconds", &utc, now + 42, "2026-12-01 01:08 UTC (in 42 s)"),
            ("past", &utc, now - 180, "2026-12-01 01:05 UTC (3 min ago)"),
            (
                "whole hours",
                &utc,
                now + 7200,
                "2026-12-01 03:08 UTC (in 2 h)",
            ),
            (
                "hours and minutes",
                &utc,
                now + 3900,
                "2026-12-01 02:13 UTC (in 1 h 5 min)",
            ),
            (
                "days",
                &utc,
                now + 3 * 86_400,
                "2026-12-04 01:08 UTC (in 3 days)",
            ),
            ("now", &utc, now, "2026-12-01 01:08 UTC (now)"),
        ];
        for (name, when, t, want) in cases {
            assert_eq!(when.at(t), want, "{name}");
        }
        assert_eq!(utc.short(now + 3540), "12-01 02:07 (in 59 min)");
    }

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["A", "BB"],
            vec![
                vec!["xxx".into(), "y".into()],
                vec!["z".into(), "wwww".into()],
            ],
        );
        assert_eq!(t, "A    BB\nxxx  y\nz    wwww");
    }

    #[test]
    fn a_budgeted_lease_says_what_is_at_risk_and_how_far_the_budget_went() {
        use crate::lease::machine::{BudgetView, Exposure};
        use crate::lease::record::{LeaseRecord, NotDelivering, Role};
        let record = LeaseRecord {
            id: "ab".repeat(32),
            role: Role::Buyer,
            price_sats_per_hour: 36_000,
            ..LeaseRecord::default()
        };
        let mut v = LeaseView {
            lease: record,
            exposure: Some(Exposure {
                at_risk_sat: 1310,
                prepaid_left_sat: 590,
                uncounted_sat: 720,
                sent_sat: 2160,
                budget: Some(BudgetView {
                    total_sat: 3600,
                    spent_sat: 2160,
                    left_sat: 1440,
                    slice_sat: 720,
                    slice_secs: 72,
                    slices_paid: 3,
                    fees_sat: 843,
                    next_slice_at: Some(1_767_225_600),
                    withheld: None,
                    done: false,
                }),
            }),
        };
        let utc = When::fixed(1_767_225_600 - 59 * 60, jiff::tz::TimeZone::UTC);
        let text = lease(&v, &utc);
        assert!(text.contains("at risk    1310 sat (prepaid time not yet run 590 + paid, not yet counted by the provider 720)"), "{text}");
        assert!(text.contains("budget     2160 of 3600 sat spent in 3 slices of 720 sat (72 s; fees 843 sat on top)"), "{text}");
        assert!(
            text.contains("next slice due at 2026-01-01 00:00 UTC (in 59 min)"),
            "{text}"
        );
        if let Some(b) = v.exposure.as_mut().and_then(|e| e.budget.as_mut()) {
            b.withheld = Some(NotDelivering::StatusStale { age_secs: 40 });
        }
        assert!(
            lease(&v, &utc).contains("next slice withheld: the provider has not answered for 40 s")
        );
        let row = leases(std::slice::from_ref(&v), &utc);
        assert!(
            row.contains("AT_RISK") && row.contains("1310") && row.contains("2160/3600"),
            "{row}"
        );
    }
}
