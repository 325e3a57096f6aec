//! Command-line interface of the `xov` binary. Every command talks to a running daemon except `node run`, and
//! those that work on the data dir itself: `wallet recovery-words`, `wallet restore`, `backup export|import`.

pub mod client;
pub mod ops;
pub mod output;
pub mod ssh;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "xov",
    version,
    about = "xov: a peer-to-peer compute exchange settled in bitcoin",
    long_about = "xov: a peer-to-peer compute exchange settled in bitcoin.\n\nStart a node with `xov node run`; every other command talks to that node through its local API."
)]
pub struct Cli {
    /// Data directory of the node (key, database, cookie).
    #[arg(long, global = true, env = "XOV_DATADIR", value_name = "DIR")]
    pub datadir: Option<PathBuf>,
    /// Address of the node's local API (default: read from <datadir>/api).
    #[arg(long, global = true, env = "XOV_API", value_name = "HOST:PORT")]
    pub api: Option<String>,
    /// Machine-readable JSON output instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run or stop the node daemon.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Show the running node's id, uptime and counts.
    Status,
    /// Browse the offer book.
    #[command(subcommand)]
    Offers(OffersCommand),
    /// Publish or withdraw this node's own offers (providers).
    #[command(subcommand)]
    Offer(OfferCommand),
    /// Form, join, leave and list pools.
    #[command(subcommand)]
    Pool(PoolCommand),
    /// Connected and known peers, with their scores.
    Peers,
    /// The node's bitcoin wallet.
    #[command(subcommand)]
    Wallet(WalletCommand),
    /// Lease a machine: pick the best matching offers and ask their providers for an invoice.
    Order(OrderArgs),
    /// Your leases (as buyer and as provider).
    #[command(subcommand)]
    Leases(LeasesCommand),
    /// Act on one lease.
    #[command(subcommand)]
    Lease(LeaseCommand),
    /// Log in to a leased machine with the key you ordered it with: `xov ssh LEASE [-- COMMAND]`.
    Ssh(SshArgs),
    /// Trust as this node sees it: receipts, bonds, tier and the limits that follow.
    #[command(subcommand)]
    Trust(TrustCommand),
    /// Fidelity bonds: lock bitcoin until a block height to be trusted (and ranked) more.
    #[command(subcommand)]
    Bond(BondCommand),
    /// Back up what this node cannot get back from the chain or the network (identity, leases, invoices,
    /// bonds, receipts, pools), or import such a backup into an empty data dir. The recovery words are not in
    /// it: keep them apart (`xov wallet restore` reads them back).
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Check reachability, peers, pools, whether peers see your offers, chain sync, the cloud and the clock;
    /// explains each problem and its fix. Exits with status 2 when a check fails.
    Doctor,
    /// Follow the node's events as they happen: lease changes, payments, drain warnings (Ctrl-C ends).
    Events,
    /// Print (or open) the link to the node's web dashboard; the link logs the browser in.
    Dashboard {
        /// Open it in the default browser (xdg-open).
        #[arg(long)]
        open: bool,
    },
    /// Print a shell completion script, e.g. `xov completions bash > /etc/bash_completion.d/xov`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct SshArgs {
    /// The lease's id (as `xov leases list` shows it).
    pub lease: String,
    /// Private key to log in with (default: the one whose public half the lease was ordered with, found
    /// beside the public key file given to `xov order`, or in ~/.ssh).
    #[arg(short = 'i', long = "identity", value_name = "PATH")]
    pub identity: Option<PathBuf>,
    /// Print the ssh command instead of running it.
    #[arg(long)]
    pub print: bool,
    /// A command to run on the machine instead of a login shell (after `--`).
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct OrderArgs {
    /// Pool name or id (every pool this node joined when omitted).
    #[arg(long)]
    pub pool: Option<String>,
    /// At least this many vCPUs.
    #[arg(long, default_value_t = 0)]
    pub vcpus: u32,
    /// RAM in MiB.
    #[arg(long, default_value_t = 0, value_name = "MIB")]
    pub ram: u32,
    /// Disk in GiB.
    #[arg(long, default_value_t = 0, value_name = "GIB")]
    pub disk: u32,
    /// `any`, `none`, or a GPU model.
    #[arg(long)]
    pub gpu: Option<String>,
    /// OS image, e.g. debian-12.
    #[arg(long)]
    pub image: String,
    /// Highest price in sats per hour.
    #[arg(long, value_name = "SATS")]
    pub max_price: Option<u64>,
    /// Hours to pay for up front (pay the same address again to extend). With --budget: the invoice's size
    /// (default: the budget's worth).
    #[arg(long, required_unless_present = "budget")]
    pub hours: Option<u32>,
    /// Pay in slices instead of up front: at most SATS in all to the lease's address (network fees on top).
    /// The first slice is paid at once from this node's wallet; the next ones before the lease runs low, only
    /// while the provider delivers (machine running, fresh status, payments counted).
    #[arg(long, value_name = "SATS")]
    pub budget: Option<u64>,
    /// With --budget: hours per slice, fractions allowed (0.5 = 30 min); default one hour, or the offer's
    /// shortest lease if longer. Must fit the offer's lease bounds.
    #[arg(long, value_name = "H", requires = "budget")]
    pub slice_hours: Option<f64>,
    /// Your SSH public key file (e.g. ~/.ssh/id_ed25519.pub); the machine accepts it.
    #[arg(long, value_name = "FILE")]
    pub ssh_key: PathBuf,
    /// Where refunds of unused or undeliverable funds go.
    #[arg(long, value_name = "ADDRESS")]
    pub refund_address: Option<String>,
    /// A TCP port to have opened to the machine besides SSH (repeat for more: --port 80 --port 443). Only
    /// offers that allow it match (`xov offers` shows what each allows).
    #[arg(long = "port", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub ports: Vec<u16>,
    /// Pay the invoice from this node's wallet at once.
    #[arg(long)]
    pub pay: bool,
    /// Stay and show progress (payment, confirmations, boot) until the machine runs.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up waiting after this long, saying what the lease still waits for (the lease goes
    /// on; `xov leases show ID --wait` follows it again).
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_WAIT_TIMEOUT_SECS)]
    pub wait_timeout: u64,
    /// When no offer in the book matches, gossip a bid into the pool and wait up to this long for providers
    /// to answer with offers (some providers only answer bids). 0 = don't bid.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub bid_wait: u64,
    /// Order exactly this offer, PROVIDER:OFFER_ID (its `key` in `xov offers list --json`); the order fails
    /// rather than go to another provider.
    #[arg(long, value_name = "PROVIDER:OFFER_ID", value_parser = parse_offer_key)]
    pub offer: Option<String>,
}

/// `PROVIDER:OFFER_ID` of `xov order --offer`, checked before anything is sent.
fn parse_offer_key(s: &str) -> Result<String, String> {
    crate::lease::driver::parse_offer_key(s)
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

/// How long `--wait` follows a lease by default: an invoice, its confirmation and a boot fit well within it.
pub const DEFAULT_WAIT_TIMEOUT_SECS: u64 = 3600;

#[derive(Debug, Subcommand)]
pub enum LeasesCommand {
    /// All leases, newest first.
    List,
    /// One lease in detail: state, payment, machine address, history.
    Show {
        id: String,
        /// Follow it until it runs or ends.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this long, saying what the lease still waits for.
        #[arg(long, value_name = "SECS", default_value_t = DEFAULT_WAIT_TIMEOUT_SECS)]
        wait_timeout: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// Pay for more hours (to the lease's own address).
    Extend {
        id: String,
        /// Hours to add at the lease's price.
        #[arg(long, required_unless_present = "sats", conflicts_with = "sats")]
        hours: Option<u32>,
        /// Or exactly this many sats (the lease runs as long as they last).
        #[arg(long, value_name = "SATS")]
        sats: Option<u64>,
    },
    /// End the lease; the unused part is refunded to the refund address.
    Cancel { id: String },
}

#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// Explain a node's score: receipts, bond, tier, and what it may run here.
    Show {
        /// Node id, or `me`.
        #[arg(default_value = "me")]
        node: String,
        /// Pool whose load sets anonymous limits (default: this node's provider pool).
        #[arg(long)]
        pool: Option<String>,
    },
    /// Take a dual-signed receipt (hex, as gossiped) into this node's evidence, e.g. from another pool.
    Import { receipt_hex: String },
}

#[derive(Debug, Subcommand)]
pub enum BondCommand {
    /// Lock sats from the wallet in a timelocked output and announce it once confirmed.
    Create {
        /// Sats to lock.
        #[arg(long, value_name = "SATS")]
        amount: u64,
        /// Lock for this many blocks from now (144 a day)...
        #[arg(
            long,
            required_unless_present = "locktime",
            conflicts_with = "locktime"
        )]
        lock_blocks: Option<u32>,
        /// ...or until this block height.
        #[arg(long, value_name = "HEIGHT")]
        locktime: Option<u32>,
    },
    /// This node's bonds.
    List,
    /// Move a bond's coins back to the wallet once its lock has passed (the bond stops counting).
    Unlock {
        /// `txid:vout`, as `xov bond list` shows.
        outpoint: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Write the backup to FILE (0600; never over an existing file). Works whether the node runs or not.
    Export {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Read a backup into this data dir, which must have no database (a new --datadir); the node must not
    /// run. A damaged, truncated or other-version file is refused and nothing is written.
    Import {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum WalletCommand {
    /// A fresh receiving address (never reused).
    Address {
        /// Also draw a QR code of it, for paying from a phone.
        #[arg(long)]
        qr: bool,
    },
    /// Confirmed, pending and immature balance.
    Balance,
    /// Print the wallet's 24 recovery words (read from <datadir>/wallet.mnemonic on this machine; never sent
    /// over the API, never logged). An encrypted file needs XOV_WALLET_PASSPHRASE.
    RecoveryWords,
    /// Restore the wallet from its 24 recovery words, read from standard input (typed or piped) or from
    /// --words-file, never from the command line (other users see it). Into a data dir without a wallet and
    /// while its node is stopped; the next `xov node run` finds the wallet's coins on the chain. With
    /// XOV_WALLET_PASSPHRASE set the words are stored encrypted, as for a new wallet.
    Restore {
        /// Read the words from this file instead of standard input.
        #[arg(long, value_name = "FILE")]
        words_file: Option<PathBuf>,
    },
    /// Transactions, newest first.
    History,
    /// Send sats to an address (replace-by-fee on).
    Send {
        address: String,
        /// Amount in sats.
        amount_sat: u64,
        /// Fee rate in sat/vB (default 2).
        #[arg(long)]
        fee_rate: Option<u64>,
    },
    /// Replace an unconfirmed payment of this wallet by one paying a higher fee (RBF), so it confirms.
    Bump {
        txid: String,
        /// Fee rate in sat/vB (default: the chain's estimate, at least 1 sat/vB more than before).
        #[arg(long)]
        fee_rate: Option<u64>,
    },
    /// Pay a BIP21 payment request (bitcoin:ADDRESS?amount=…), such as a lease invoice.
    Pay {
        uri: String,
        #[arg(long)]
        fee_rate: Option<u64>,
        /// Only draw the request as a QR code (to pay from another wallet); send nothing.
        #[arg(long)]
        qr_only: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Start the daemon in the foreground (Ctrl-C or SIGTERM stops it cleanly).
    Run {
        /// Log as JSON lines.
        #[arg(long)]
        log_json: bool,
        /// Log filter, e.g. `debug` or `xov_node=debug,info` (also XOV_LOG_LEVEL).
        #[arg(long, value_name = "FILTER")]
        log_level: Option<String>,
    },
    /// Ask the running daemon to stop.
    Stop,
}

#[derive(Debug, Subcommand)]
pub enum OffersCommand {
    /// List offers, cheapest first.
    List(OfferFilterArgs),
}

#[derive(Debug, Args)]
pub struct OfferFilterArgs {
    /// Pool name or id.
    #[arg(long)]
    pub pool: Option<String>,
    /// At least this many vCPUs.
    #[arg(long)]
    pub vcpus: Option<u32>,
    /// At least this much RAM, in MiB.
    #[arg(long, value_name = "MIB")]
    pub ram: Option<u32>,
    /// At least this much disk, in GiB.
    #[arg(long, value_name = "GIB")]
    pub disk: Option<u32>,
    /// `any`, `none`, or a GPU model such as A100.
    #[arg(long)]
    pub gpu: Option<String>,
    /// OS image the offer must list, e.g. debian-12.
    #[arg(long)]
    pub image: Option<String>,
    /// Highest price in sats per hour.
    #[arg(long, value_name = "SATS")]
    pub max_price: Option<u64>,
    /// ISO country code, e.g. DE.
    #[arg(long)]
    pub country: Option<String>,
    #[arg(long)]
    pub region: Option<String>,
    /// x86_64, aarch64 or riscv64.
    #[arg(long)]
    pub arch: Option<String>,
    /// A TCP port the offer must let you open besides SSH (repeat for more).
    #[arg(long = "port", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub ports: Vec<u16>,
    /// Only this node's own offers.
    #[arg(long)]
    pub mine: bool,
    /// At most this many offers.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

/// (Parsed once per command: the size of `Publish` costs nothing worth a box.)
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)]
pub enum OfferCommand {
    /// Sign and publish an offer, from flags or a TOML file (flags override the file).
    Publish(PublishArgs),
    /// Withdraw one of this node's offers.
    Withdraw {
        /// The offer id (see `xov offers list --mine`).
        offer_id: u64,
    },
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// TOML file with the offer's fields (same names as the API's OfferSpec).
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Pool name or id (the public pool when omitted); publishing joins it.
    #[arg(long)]
    pub pool: Option<String>,
    /// Replace the offer with this id instead of adding one.
    #[arg(long)]
    pub offer_id: Option<u64>,
    /// vCPUs per machine.
    #[arg(long)]
    pub vcpus: Option<u32>,
    /// RAM in MiB.
    #[arg(long, value_name = "MIB")]
    pub ram: Option<u32>,
    /// Disk in GiB.
    #[arg(long, value_name = "GIB")]
    pub disk: Option<u32>,
    /// GPU model, e.g. A100 (none when omitted).
    #[arg(long, value_name = "MODEL")]
    pub gpu: Option<String>,
    /// GPUs per machine (default 1 with --gpu).
    #[arg(long)]
    pub gpu_count: Option<u16>,
    /// x86_64 (default), aarch64 or riscv64.
    #[arg(long)]
    pub arch: Option<String>,
    /// OS image offered; repeat for several.
    #[arg(long = "image", value_name = "IMAGE")]
    pub images: Vec<String>,
    /// Price in sats per hour.
    #[arg(long, value_name = "SATS")]
    pub price: Option<u64>,
    /// Shortest lease sold, seconds (default 3600).
    #[arg(long)]
    pub min_lease_secs: Option<u32>,
    /// Longest lease sold, seconds (default 30 days).
    #[arg(long)]
    pub max_lease_secs: Option<u32>,
    /// ISO country code, e.g. DE.
    #[arg(long)]
    pub country: Option<String>,
    /// Free-form region, e.g. fra-1.
    #[arg(long)]
    pub region: Option<String>,
    /// How many machines of this shape can run at once.
    #[arg(long)]
    pub capacity: Option<u32>,
    /// Lifetime of the offer in seconds.
    #[arg(long)]
    pub ttl_secs: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// List known pools: rules, offers held, peers seen, whether joined.
    List,
    /// Found a new pool with this node as founder, publish its charter and join it.
    Create {
        name: String,
        /// Only these node ids may publish offers (repeat); anyone when omitted.
        #[arg(long = "publisher", value_name = "NODE_ID")]
        publishers: Vec<String>,
        /// Prices must be multiples of this many sats per hour.
        #[arg(long, value_name = "SATS")]
        min_price_step: Option<u64>,
        /// Shortest offer lifetime allowed, seconds.
        #[arg(long)]
        min_ttl_secs: Option<u32>,
        /// Longest offer lifetime allowed, seconds.
        #[arg(long)]
        max_ttl_secs: Option<u32>,
        /// Most live offers per provider.
        #[arg(long)]
        max_offers_per_provider: Option<u32>,
    },
    /// Join a pool by name or id: receive its gossip and pull its current book from peers.
    Join { pool: String },
    /// Leave a pool and forget its offers.
    Leave { pool: String },
}
