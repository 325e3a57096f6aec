//! `xov`: the node daemon and its command-line client.

use std::process::ExitCode;

use anyhow::{anyhow, Context};
use clap::Parser;
use reqwest::Method;
use serde_json::Value;
use xov_node::api::leases::LeaseView;
use xov_node::cli::output;
use xov_node::{api, daemon, market};

use xov_node::cli::client::Client;
use xov_node::cli::{
    BackupCommand, BondCommand, Cli, Command, LeaseCommand, LeasesCommand, NodeCommand,
    OfferCommand, OffersCommand, OrderArgs, PoolCommand, PublishArgs, SshArgs, TrustCommand,
    WalletCommand,
};
use xov_node::config::{Config, CONFIG_FILE};
use xov_node::store::backup;
use xov_node::store::datadir::DataDir;

/// Exit status of a command line `xov` cannot read (an unknown command or flag, a missing or bad value):
/// sysexits' EX_USAGE, apart from a failed `xov doctor` (2) and other errors (1).
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version end here too, successfully.
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let json = cli.json;
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if json {
                println!("{}", serde_json::json!({ "error": format!("{e:#}") }));
            } else {
                eprintln!("error: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let dd = DataDir::new(cli.datadir.clone().unwrap_or_else(DataDir::default_root));
    let client = || Client::from_datadir(&dd, cli.api.as_deref());
    match cli.command {
        Command::Node(NodeCommand::Run {
            log_json,
            log_level,
        }) => {
            let mut cfg = Config::load(&dd.path(CONFIG_FILE), |k| std::env::var(k).ok())?;
            if log_json || cli.json {
                cfg.log.json = true;
            }
            if let Some(l) = log_level {
                cfg.log.level = l;
            }
            init_logging(&cfg)?;
            daemon::run(dd, cfg).await
        }
        Command::Node(NodeCommand::Stop) => {
            let v: Value = client()?
                .call::<(), Value>(Method::POST, "/v1/node/stop", None, None)
                .await?;
            output::print(cli.json, &v, || "stopping".to_string());
            Ok(())
        }
        Command::Status => {
            let s: api::Status = client()?.get("/v1/status", None).await?;
            output::print(cli.json, &s, || output::status(&s));
            Ok(())
        }
        Command::Offers(OffersCommand::List(f)) => {
            let mut q: Vec<(&str, String)> = vec![("limit", f.limit.to_string())];
            let opt = |q: &mut Vec<(&str, String)>, k: &'static str, v: Option<String>| {
                if let Some(v) = v {
                    q.push((k, v));
                }
            };
            opt(&mut q, "pool", f.pool);
            opt(&mut q, "min_vcpus", f.vcpus.map(|v| v.to_string()));
            opt(&mut q, "min_ram_mib", f.ram.map(|v| v.to_string()));
            opt(&mut q, "min_disk_gib", f.disk.map(|v| v.to_string()));
            opt(&mut q, "gpu", f.gpu);
            opt(&mut q, "image", f.image);
            opt(&mut q, "max_price", f.max_price.map(|v| v.to_string()));
            opt(&mut q, "country", f.country);
            opt(&mut q, "region", f.region);
            opt(&mut q, "arch", f.arch);
            if !f.ports.is_empty() {
                let p: Vec<String> = f.ports.iter().map(u16::to_string).collect();
                q.push(("ports", p.join(",")));
            }
            if f.mine {
                q.push(("mine", "true".into()));
            }
            let offers: Vec<api::OfferView> = client()?.get("/v1/offers", Some(&q)).await?;
            output::print(cli.json, &offers, || output::offers(&offers));
            Ok(())
        }
        Command::Offer(OfferCommand::Publish(args)) => {
            let spec = publish_spec(args)?;
            let v: api::OfferView = client()?
                .call(Method::POST, "/v1/offers", None, Some(&spec))
                .await?;
            output::print(cli.json, &v, || {
                format!(
                    "published offer {} (sequence {}) at {} sats/h, expires at {}",
                    v.offer_id, v.sequence, v.price_sats_per_hour, v.expires_at
                )
            });
            Ok(())
        }
        Command::Offer(OfferCommand::Withdraw { offer_id }) => {
            let v: api::Withdrawn = client()?
                .call::<(), _>(
                    Method::DELETE,
                    &format!("/v1/offers/{offer_id}"),
                    None,
                    None,
                )
                .await?;
            output::print(cli.json, &v, || format!("withdrew offer {}", v.offer_id));
            Ok(())
        }
        Command::Pool(PoolCommand::List) => {
            let pools: Vec<api::PoolView> = client()?.get("/v1/pools", None).await?;
            output::print(cli.json, &pools, || output::pools(&pools));
            Ok(())
        }
        Command::Pool(PoolCommand::Create {
            name,
            publishers,
            min_price_step,
            min_ttl_secs,
            max_ttl_secs,
            max_offers_per_provider,
        }) => {
            let req = api::CreatePool {
                name,
                publishers,
                min_price_step_sats: min_price_step,
                min_ttl_secs,
                max_ttl_secs,
                max_offers_per_provider,
            };
            let p: api::PoolView = client()?
                .call(Method::POST, "/v1/pools", None, Some(&req))
                .await?;
            output::print(cli.json, &p, || {
                format!("created pool {} ({}) and joined it", p.name, p.id)
            });
            Ok(())
        }
        Command::Pool(cmd @ (PoolCommand::Join { .. } | PoolCommand::Leave { .. })) => {
            let (joining, pool) = match cmd {
                PoolCommand::Join { pool } => (true, pool),
                PoolCommand::Leave { pool } => (false, pool),
                _ => unreachable!("matched above"),
            };
            let path = if joining {
                "/v1/pools/join"
            } else {
                "/v1/pools/leave"
            };
            let r: api::Membership = client()?
                .call(Method::POST, path, None, Some(&api::PoolRef { pool }))
                .await?;
            output::print(cli.json, &r, || match (joining, r.changed) {
                (true, true) => format!("joined pool {}; pulling its book from peers", r.pool),
                (true, false) => format!("already in pool {}", r.pool),
                (false, true) => format!("left pool {}", r.pool),
                (false, false) => format!("was not in pool {}", r.pool),
            });
            Ok(())
        }
        Command::Wallet(WalletCommand::RecoveryWords) => {
            let path = dd.path(xov_node::daemon::WALLET_MNEMONIC);
            if !path.exists() {
                anyhow::bail!(
                    "no wallet at {}; the node creates one at its first start with [wallet] enabled",
                    path.display()
                );
            }
            let pass = std::env::var("XOV_WALLET_PASSPHRASE")
                .ok()
                .filter(|p| !p.is_empty());
            let (words, _) =
                xov_wallet::keys::load_or_create_mnemonic_with(&path, pass.as_deref())?;
            let words = words.to_string();
            output::print(
                cli.json,
                &serde_json::json!({ "words": words.split_whitespace().collect::<Vec<_>>() }),
                || {
                    format!(
                        "{}\n(write them down and keep them offline: with them anyone can spend this wallet)",
                        words.trim()
                    )
                },
            );
            Ok(())
        }
        Command::Wallet(WalletCommand::Restore { words_file }) => {
            let words = read_words(words_file.as_deref())?;
            let pass = std::env::var("XOV_WALLET_PASSPHRASE")
                .ok()
                .filter(|p| !p.is_empty());
            let path = backup::restore_words(&dd, &words, pass.as_deref())?;
            output::print(
                cli.json,
                &serde_json::json!({ "mnemonic_file": path, "encrypted": pass.is_some() }),
                || {
                    format!(
                        "restored the recovery words into {} (mode 0600{}).\n\
                         Next: `xov backup import FILE` if you have a backup of this node, then `xov node run` \
                         with [wallet] enabled: the wallet scans the chain for its coins (from the backup's \
                         block, or from the genesis block without one).",
                        path.display(),
                        if pass.is_some() { ", encrypted" } else { "" }
                    )
                },
            );
            Ok(())
        }
        Command::Wallet(cmd) => wallet_command(cmd, &client()?, cli.json).await,
        Command::Backup(BackupCommand::Export { out }) => {
            let b = backup::export(&dd, xov_node::clock::unix_now())?;
            let size = b.write(&out)?;
            let s = b.summary();
            output::print(
                cli.json,
                &serde_json::json!({ "file": out, "bytes": size, "summary": s }),
                || {
                    format!(
                        "wrote the backup of node {} to {} ({size} bytes, mode 0600): {} lease records, {} \
                         wallet records, {} trust records, {} pool records.\n\
                         It holds the node's identity key: keep it as private as the recovery words, which \
                         it does not hold.",
                        s.node_id,
                        out.display(),
                        s.entries.get("leases").unwrap_or(&0),
                        s.entries.get("wallet").unwrap_or(&0),
                        s.entries.get("trust").unwrap_or(&0),
                        s.entries.get("pools").unwrap_or(&0),
                    )
                },
            );
            Ok(())
        }
        Command::Backup(BackupCommand::Import { file }) => {
            let b = backup::Backup::read(&file)?;
            let s = backup::import(&dd, &b)?;
            output::print(cli.json, &s, || {
                format!(
                    "imported the backup of node {} (made {}) into {}; leases begun after it are not in it.\n\
                     Next: `xov wallet restore` with the recovery words if this data dir has no wallet.mnemonic, \
                     then `xov node run`.",
                    s.node_id,
                    output::When::system().at(s.created_at),
                    dd.root().display()
                )
            });
            Ok(())
        }
        Command::Order(args) => order_command(args, &client()?, &dd, cli.json).await,
        Command::Ssh(args) => ssh_command(args, &client()?, &dd, cli.json).await,
        Command::Leases(LeasesCommand::List) => {
            let l: Vec<LeaseView> = client()?.get("/v1/leases", None).await?;
            output::print(cli.json, &l, || output::leases(&l, &output::When::system()));
            Ok(())
        }
        Command::Leases(LeasesCommand::Show {
            id,
            wait,
            wait_timeout,
        }) => {
            let c = client()?;
            if wait {
                follow(&c, &id, cli.json, wait_timeout).await
            } else {
                let l: LeaseView = c.get(&format!("/v1/leases/{id}"), None).await?;
                output::print(cli.json, &l, || output::lease(&l, &output::When::system()));
                Ok(())
            }
        }
        Command::Lease(LeaseCommand::Extend { id, hours, sats }) => {
            let r: serde_json::Value = client()?
                .call(
                    Method::POST,
                    &format!("/v1/leases/{id}/extend"),
                    None,
                    Some(&serde_json::json!({ "hours": hours.unwrap_or(0), "sats": sats })),
                )
                .await?;
            output::print(cli.json, &r, || {
                let what = match sats {
                    Some(s) => format!("{s} sats more"),
                    None => format!("{} more hours", hours.unwrap_or(0)),
                };
                format!(
                    "paid {what} to the lease's address: {}\nThe lease is extended once the payment confirms; `xov leases show {id}` shows the new end.",
                    r["txid"].as_str().unwrap_or("")
                )
            });
            Ok(())
        }
        Command::Lease(LeaseCommand::Cancel { id }) => {
            let l: LeaseView = client()?
                .call::<(), _>(Method::POST, &format!("/v1/leases/{id}/cancel"), None, None)
                .await?;
            output::print(cli.json, &l, || {
                format!("cancellation sent for lease {}", l.lease.id)
            });
            Ok(())
        }
        Command::Trust(TrustCommand::Show { node, pool }) => {
            let q: Vec<(&str, String)> = pool.into_iter().map(|p| ("pool", p)).collect();
            let v: xov_node::api::trust::TrustView = client()?
                .get(&format!("/v1/trust/{node}"), Some(&q))
                .await?;
            output::print(cli.json, &v, || output::trust(&v));
            Ok(())
        }
        Command::Trust(TrustCommand::Import { receipt_hex }) => {
            let r: serde_json::Value = client()?
                .call(
                    Method::POST,
                    "/v1/trust/receipts",
                    None,
                    Some(&serde_json::json!({ "receipt_hex": receipt_hex })),
                )
                .await?;
            output::print(cli.json, &r, || {
                format!(
                    "receipt for lease {} taken ({})",
                    r["lease_id"].as_str().unwrap_or(""),
                    r["added"].as_str().unwrap_or("")
                )
            });
            Ok(())
        }
        Command::Bond(BondCommand::Create {
            amount,
            lock_blocks,
            locktime,
        }) => {
            let b: serde_json::Value = client()?
                .call(
                    Method::POST,
                    "/v1/bonds",
                    None,
                    Some(&serde_json::json!({ "amount_sat": amount, "lock_blocks": lock_blocks, "locktime": locktime })),
                )
                .await?;
            output::print(cli.json, &b, || {
                format!(
                    "bond {} locks {} sats until block {}; it is announced to your pools once confirmed",
                    b["outpoint"].as_str().unwrap_or(""),
                    amount,
                    b["locktime"]
                )
            });
            Ok(())
        }
        Command::Bond(BondCommand::Unlock { outpoint }) => {
            let r: serde_json::Value = client()?
                .call(
                    Method::POST,
                    "/v1/bonds/unlock",
                    None,
                    Some(&serde_json::json!({ "outpoint": outpoint })),
                )
                .await?;
            output::print(cli.json, &r, || {
                format!("bond unlocked in {}", r["txid"].as_str().unwrap_or(""))
            });
            Ok(())
        }
        Command::Bond(BondCommand::List) => {
            let b: Vec<serde_json::Value> = client()?.get("/v1/bonds", None).await?;
            output::print(cli.json, &b, || output::bonds(&b));
            Ok(())
        }
        Command::Peers => {
            let peers: Vec<xov_node::network::PeerView> = client()?.get("/v1/peers", None).await?;
            output::print(cli.json, &peers, || output::peers(&peers));
            Ok(())
        }
        Command::Doctor => {
            if !xov_node::cli::ops::doctor(&client()?, cli.json).await? {
                std::process::exit(2);
            }
            Ok(())
        }
        Command::Events => Ok(xov_node::cli::ops::events(&client()?, cli.json).await?),
        Command::Dashboard { open } => {
            Ok(xov_node::cli::ops::dashboard(&client()?, open, cli.json).await?)
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "xov", &mut std::io::stdout());
            Ok(())
        }
    }
}

/// The recovery words from `file`, or from standard input: all of it when piped; typed at a terminal, lines
/// until 24 words (list numbers aside) or an empty line.
fn read_words(file: Option<&std::path::Path>) -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal, Read};
    if let Some(f) = file {
        return std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the words file {}", f.display()));
    }
    let stdin = std::io::stdin();
    let mut text = String::new();
    if !stdin.is_terminal() {
        stdin
            .lock()
            .read_to_string(&mut text)
            .context("cannot read the words from standard input")?;
        return Ok(text);
    }
    eprintln!(
        "Type or paste the {} recovery words (spaces or new lines between them), then Enter:",
        xov_wallet::keys::WORD_COUNT
    );
    let words = |t: &str| xov_wallet::keys::typed_words(t).len();
    for line in stdin.lock().lines() {
        let line = line.context("cannot read the words from the terminal")?;
        if line.trim().is_empty() && words(&text) > 0 {
            break;
        }
        text.push_str(&line);
        text.push('\n');
        if words(&text) >= xov_wallet::keys::WORD_COUNT {
            break;
        }
    }
    Ok(text)
}

/// Builds the offer from the optional TOML file, with flags taking precedence.
fn publish_spec(a: PublishArgs) -> anyhow::Result<market::OfferSpec> {
    let mut t: toml::Table = match &a.file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read offer file {}", path.display()))?;
            toml::from_str(&text)
                .with_context(|| format!("offer file {} is not valid TOML", path.display()))?
        }
        None => toml::Table::new(),
    };
    let mut set = |k: &str, v: Option<toml::Value>| {
        if let Some(v) = v {
            t.insert(k.to_string(), v);
        }
    };
    let int = |v: Option<u64>| v.map(|n| toml::Value::Integer(n as i64));
    set("pool", a.pool.map(toml::Value::String));
    set("offer_id", int(a.offer_id));
    set("vcpus", int(a.vcpus.map(u64::from)));
    set("ram_mib", int(a.ram.map(u64::from)));
    set("disk_gib", int(a.disk.map(u64::from)));
    set("gpu_model", a.gpu.map(toml::Value::String));
    set("gpu_count", int(a.gpu_count.map(u64::from)));
    set(
        "arch",
        a.arch.map(|s| toml::Value::String(s.to_lowercase())),
    );
    if !a.images.is_empty() {
        set(
            "images",
            Some(toml::Value::Array(
                a.images.into_iter().map(toml::Value::String).collect(),
            )),
        );
    }
    set("price_sats_per_hour", int(a.price));
    set("min_lease_secs", int(a.min_lease_secs.map(u64::from)));
    set("max_lease_secs", int(a.max_lease_secs.map(u64::from)));
    set(
        "country",
        a.country.map(|c| toml::Value::String(c.to_uppercase())),
    );
    set("region", a.region.map(toml::Value::String));
    set("capacity", int(a.capacity.map(u64::from)));
    set("ttl_secs", int(a.ttl_secs.map(u64::from)));
    t.try_into().map_err(|e: toml::de::Error| {
        anyhow!(
            "the offer is incomplete or wrong: {}. Required: --vcpus, --ram, --disk, --image, --price, --country (or the same fields in --file)",
            e.message()
        )
    })
}

fn init_logging(cfg: &Config) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.log.level))
        .with_context(|| format!("log level '{}' is not a valid filter", cfg.log.level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cfg.log.json {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

async fn wallet_command(cmd: WalletCommand, c: &Client, json: bool) -> anyhow::Result<()> {
    use xov_node::api::wallet::*;
    match cmd {
        WalletCommand::Address { qr } => {
            let a: NewAddress = c
                .call::<(), _>(Method::POST, "/v1/wallet/address", None, None)
                .await?;
            output::print(json, &a, || {
                if qr {
                    format!("{}\n{}", xov_wallet::bip21::qr(&a.uri), a.address)
                } else {
                    a.address.clone()
                }
            });
        }
        WalletCommand::RecoveryWords | WalletCommand::Restore { .. } => {
            unreachable!("read from the datadir without the API, above")
        }
        WalletCommand::Balance => {
            let b: BalanceView = c.get("/v1/wallet/balance", None).await?;
            output::print(json, &b, || {
                let ch = &b.chain;
                format!(
                    "confirmed  {} sat\npending    {} sat\nimmature   {} sat\ntip        {} ({})\nchain      {} {}, {} peer(s), peers' tip {}{}",
                    b.confirmed_sat,
                    b.pending_sat,
                    b.immature_sat,
                    b.tip_height,
                    b.network,
                    ch.source,
                    ch.state,
                    ch.peers,
                    ch.peer_tip.map_or("?".into(), |t| t.to_string()),
                    if ch.restarts > 0 {
                        format!(", {} restarts", ch.restarts)
                    } else {
                        String::new()
                    }
                )
            });
        }
        WalletCommand::History => {
            let h: Vec<HistoryView> = c.get("/v1/wallet/history", None).await?;
            output::print(json, &h, || {
                output::table(
                    &["TXID", "RECEIVED", "SENT", "FEE", "CONFS"],
                    h.iter()
                        .map(|t| {
                            vec![
                                t.txid.clone(),
                                t.received_sat.to_string(),
                                t.sent_sat.to_string(),
                                t.fee_sat.map_or("-".into(), |f| f.to_string()),
                                t.confirmations.to_string(),
                            ]
                        })
                        .collect(),
                )
            });
        }
        WalletCommand::Send {
            address,
            amount_sat,
            fee_rate,
        } => {
            let req = SendRequest {
                address,
                amount_sat,
                fee_sat_per_vb: fee_rate,
            };
            let s: Sent = c
                .call(Method::POST, "/v1/wallet/send", None, Some(&req))
                .await?;
            output::print(json, &s, || format!("sent: {}", s.txid));
        }
        WalletCommand::Bump { txid, fee_rate } => {
            let req = BumpRequest {
                txid,
                fee_sat_per_vb: fee_rate,
            };
            let b: BumpedView = c
                .call(Method::POST, "/v1/wallet/bump", None, Some(&req))
                .await?;
            output::print(json, &b, || {
                format!(
                    "replaced {} ({} sat fee) by {} ({} sat fee, {} sat/vB)",
                    b.old_txid, b.old_fee_sat, b.new_txid, b.new_fee_sat, b.fee_sat_per_vb
                )
            });
        }
        WalletCommand::Pay {
            uri,
            fee_rate,
            qr_only,
        } => {
            if qr_only {
                let req = xov_wallet::bip21::parse(&uri)?;
                println!("{}\n{}", xov_wallet::bip21::qr(&uri), req.address);
                return Ok(());
            }
            let req = PayRequest {
                uri,
                fee_sat_per_vb: fee_rate,
            };
            let s: Sent = c
                .call(Method::POST, "/v1/wallet/pay", None, Some(&req))
                .await?;
            output::print(json, &s, || format!("paid: {}", s.txid));
        }
    }
    Ok(())
}

/// `<datadir>/ssh`, private to the user: the public key file each order used and each lease's known hosts.
fn ssh_dir(dd: &DataDir) -> anyhow::Result<std::path::PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let d = dd.path("ssh");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&d)
        .with_context(|| format!("cannot create {}", d.display()))?;
    Ok(d)
}

async fn ssh_command(a: SshArgs, c: &Client, dd: &DataDir, json: bool) -> anyhow::Result<()> {
    use xov_node::cli::ssh;
    let l: LeaseView = c.get(&format!("/v1/leases/{}", a.lease), None).await?;
    let id = l.lease.id.clone();
    let dir = ssh_dir(dd)?;
    let recorded = std::fs::read_to_string(dir.join(format!("{id}.key")))
        .ok()
        .map(|p| std::path::PathBuf::from(p.trim()));
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let found: Vec<(std::path::PathBuf, String)> =
        ssh::candidates(a.identity.as_deref(), recorded, home.as_deref())
            .into_iter()
            .filter_map(|p| std::fs::read_to_string(&p).ok().map(|s| (p, s)))
            .collect();
    let program = std::env::var("XOV_SSH").unwrap_or_else(|_| "ssh".to_string());
    let plan = ssh::plan(
        &l.lease,
        &found,
        &dir.join(format!("{id}.known_hosts")),
        &program,
        &a.command,
    )?;
    if a.print || json {
        output::print(
            json,
            &serde_json::json!({ "program": plan.program, "args": plan.args }),
            || {
                std::iter::once(plan.program.clone())
                    .chain(plan.args.iter().map(|a| output::shell_quote(a)))
                    .collect::<Vec<_>>()
                    .join(" ")
            },
        );
        return Ok(());
    }
    use std::os::unix::process::CommandExt;
    let e = std::process::Command::new(&plan.program)
        .args(&plan.args)
        .exec();
    Err(anyhow::anyhow!(
        "cannot run {}: {e}; install OpenSSH's client (Debian: apt install openssh-client) or set XOV_SSH",
        plan.program
    ))
}

async fn order_command(a: OrderArgs, c: &Client, dd: &DataDir, json: bool) -> anyhow::Result<()> {
    let key = read_ssh_public_key(&a.ssh_key)?;
    let req = xov_node::lease::driver::OrderRequest {
        pool: a.pool,
        vcpus: a.vcpus,
        ram_mib: a.ram,
        disk_gib: a.disk,
        gpu: a.gpu,
        image: a.image,
        max_price: a.max_price,
        hours: a.hours.unwrap_or(0),
        ssh_public_key: key.trim().to_string(),
        refund_address: a.refund_address,
        ports: a.ports,
        pay: a.pay,
        bid_wait_secs: a.bid_wait,
        budget_sat: a.budget,
        slice_hours: a.slice_hours,
        offer: a.offer,
    };
    let l: LeaseView = c.call(Method::POST, "/v1/orders", None, Some(&req)).await?;
    // Which key file this lease was ordered with, for `xov ssh` (it finds the private key beside it).
    if let Ok(abs) = std::fs::canonicalize(&a.ssh_key) {
        let saved = ssh_dir(dd).and_then(|d| {
            std::fs::write(
                d.join(format!("{}.key", l.lease.id)),
                abs.display().to_string(),
            )
            .context("cannot record the order's key file")
        });
        if let Err(e) = saved {
            eprintln!("note: {e:#}; `xov ssh` will look for the key in ~/.ssh or take `-i PATH`");
        }
    }
    if !json {
        println!("{}", output::lease(&l, &output::When::system()));
        if !a.pay && a.budget.is_none() {
            if let Some(uri) = &l.lease.pay_uri {
                println!(
                    "\nPay with `xov wallet pay '{uri}'`, or scan:\n{}",
                    xov_wallet::bip21::qr(uri)
                );
            }
        }
    }
    if a.wait {
        follow(c, &l.lease.id, json, a.wait_timeout).await
    } else {
        if json {
            output::print(true, &l, String::new);
        }
        Ok(())
    }
}

/// The buyer's public key line from `path`, checked before any provider is asked: what is wrong with the
/// file and what a valid line looks like.
fn read_ssh_public_key(path: &std::path::Path) -> anyhow::Result<String> {
    let shown = path.display();
    let example =
        "a valid file holds one line like `ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI... you@host` \
                   (the .pub file `ssh-keygen -t ed25519` writes beside the private key)";
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read the SSH public key file {shown}; {example}"))?;
    let Ok(text) = String::from_utf8(bytes) else {
        anyhow::bail!("{shown} is not a text file, so not an SSH public key; {example}");
    };
    if text.contains("PRIVATE KEY") {
        anyhow::bail!(
            "{shown} is a private key: never hand it out; give its public half, {shown}.pub; {example}"
        );
    }
    let line = text.trim();
    xov_protocol::check_ssh_public_key(line)
        .map_err(|e| anyhow::anyhow!("{shown} is not an SSH public key: {e}"))?;
    Ok(line.to_string())
}

/// Shows a lease's progress until its machine runs or the lease ends, saying what it waits for; gives up
/// after `timeout_secs` with what it still waits for (the lease itself goes on).
async fn follow(c: &Client, id: &str, json: bool, timeout_secs: u64) -> anyhow::Result<()> {
    let mut shown = 0;
    let mut said: Option<String> = None;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(timeout_secs);
    loop {
        let v: LeaseView = c.get(&format!("/v1/leases/{id}"), None).await?;
        let l = &v.lease;
        let waiting = output::waiting_for(l);
        for s in &l.history[shown.min(l.history.len())..] {
            if json {
                println!("{}", serde_json::to_string(s)?);
            } else {
                println!(
                    "{}  {:<13} {}",
                    output::When::system().clock(s.at),
                    format!("{:?}", s.state),
                    s.detail
                );
            }
        }
        shown = l.history.len();
        let Some(waiting) = waiting else {
            if !json {
                println!("{}", output::lease(&v, &output::When::system()));
            }
            return Ok(());
        };
        if said.as_ref() != Some(&waiting) {
            // stderr, so that --json output stays one JSON object per line
            eprintln!("            waiting for {waiting}");
            said = Some(waiting.clone());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "gave up after {timeout_secs} s: lease {} is still {:?}, waiting for {waiting}. The lease goes on; \
                 `xov leases show {id} --wait` follows it again (--wait-timeout SECS to wait longer)",
                id.get(..12).unwrap_or(id),
                l.state
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}
