//! Every `xov` command README.md, docs/buyer.md and docs/operator.md show exists, with every flag they give
//! it, and the complete ones run against a testnet node (a wallet on Bitcoin Core regtest) without a
//! command-line error. A guide that names `xov bond show` or a flag the CLI lacks fails here.
//!
//! How a command is checked:
//! - its subcommand path is the longest run of words after `xov` whose `xov PATH --help` succeeds; a word
//!   after it that looks like a subcommand where PATH has subcommands is an unknown command;
//! - each `--flag` must be in `xov PATH --help` (or the global flags of `xov --help`);
//! - a command shown whole (in a code block, no `...`) runs with its placeholders (ID, SATS, ADDRESS...)
//!   filled from the node, and must not end with status 64 (EX_USAGE: a command line xov cannot read).
//!   One still running after a few seconds (`xov events`) has read its command line: it is stopped.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use xov_testnet::bitcoind::Bitcoind;
use xov_testnet::node::*;
use xov_testnet::scenario::*;

/// The exit status `xov` gives a command line it cannot read.
const EXIT_USAGE: i32 = 64;
const DOCS: [&str; 3] = ["README.md", "docs/buyer.md", "docs/operator.md"];
/// Commands piped into these are real shell pipes, not `a | b` alternatives.
const SHELL_TOOLS: [&str; 10] = [
    "jq", "grep", "head", "tail", "less", "sudo", "tee", "sort", "wc", "xargs",
];

/// One command as a guide shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Shown {
    doc: &'static str,
    words: Vec<String>,
    /// In a code block and without `...`: meant to be run as it is.
    whole: bool,
}

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// Shell-like words: quotes grouped, `#` comments and redirections dropped, `[optional]` brackets removed.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut in_word = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true
            }
            (None, '#') if !in_word => break,
            (None, ' ' | '\t') => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    let end = out
        .iter()
        .position(|w| w.starts_with('>') || w.starts_with("2>"))
        .unwrap_or(out.len());
    out.truncate(end);
    out.into_iter()
        .map(|w| w.trim_matches(|c| c == '[' || c == ']').to_string())
        .filter(|w| !w.is_empty())
        .collect()
}

/// `line` without its `# comment` (a `#` after a blank, outside quotes).
fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '#') if prev == ' ' || prev == '\t' => return &line[..i],
            _ => {}
        }
        prev = c;
    }
    line
}

/// The commands of one shown line: `xov wallet address | balance | send ADDRESS SATS` is three
/// (alternatives of `xov wallet`); `xov completions bash | sudo tee ...` is one (a shell pipe).
fn commands(doc: &'static str, line: &str, in_block: bool) -> Vec<Shown> {
    let line = line.trim().trim_start_matches("$ ");
    let start = match line.find("xov ") {
        Some(0) => 0,
        // `XOV_NETWORK_BOOTSTRAP=a,b xov node run`: environment first.
        Some(i) if line[..i].split_whitespace().all(|w| w.contains('=')) => i,
        _ => return Vec::new(),
    };
    let line = strip_comment(&line[start..]);
    let mut out = Vec::new();
    let mut prefix: Vec<String> = Vec::new();
    for (n, part) in line.split(" | ").enumerate() {
        let mut w = words(part);
        if n == 0 {
            if w.len() < 2 {
                // `xov --help` and the like
                prefix = w.clone();
            } else {
                prefix = w[..2].to_vec();
            }
        } else {
            if w.first().is_none_or(|t| SHELL_TOOLS.contains(&t.as_str())) {
                break;
            }
            let mut full = prefix.clone();
            full.append(&mut w);
            w = full;
        }
        let whole = in_block && !w.iter().any(|t| t.contains("...") || t.contains('…'));
        out.push(Shown {
            doc,
            words: w,
            whole,
        });
    }
    out
}

/// Every command the three guides show, code blocks and inline code alike.
fn shown() -> Vec<Shown> {
    let mut all = BTreeSet::new();
    for doc in DOCS {
        let text = std::fs::read_to_string(repo_root().join(doc)).expect("read the guide");
        let mut in_block = false;
        let mut pending = String::new();
        for line in text.lines() {
            if line.trim_start().starts_with("```") {
                in_block = !in_block;
                continue;
            }
            if in_block {
                // continuation lines
                if let Some(head) = line.trim_end().strip_suffix('\\') {
                    pending.push_str(head);
                    pending.push(' ');
                    continue;
                }
                let full = std::mem::take(&mut pending) + line;
                all.extend(commands(doc, &full, true));
            } else {
                for (i, span) in line.split('`').enumerate() {
                    if i % 2 == 1 {
                        all.extend(commands(doc, span, false));
                    }
                }
            }
        }
    }
    all.into_iter().collect()
}

fn xov_out(args: &[&str]) -> std::process::Output {
    Command::new(xov_bin())
        .args(args)
        .output()
        .expect("run xov")
}

/// `xov PATH --help`, if PATH is a command.
fn help(path: &[&str]) -> Option<String> {
    let out = xov_out(&[path, &["--help"]].concat());
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).to_string())
}

/// Whether `help` lists `flag` as a whole word.
fn lists_flag(help: &str, flag: &str) -> bool {
    help.match_indices(flag).any(|(i, _)| {
        help[i + flag.len()..]
            .chars()
            .next()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '-'))
    })
}

/// Checks that the command exists with every flag; returns its subcommand path's length.
fn check_exists(c: &Shown, global: &str) -> Result<usize, String> {
    let w: Vec<&str> = c
        .words
        .iter()
        .skip_while(|t| t.contains('=') && !t.starts_with('-'))
        .skip(1) // xov
        .map(String::as_str)
        .collect();
    let mut path: Vec<&str> = Vec::new();
    let mut text = global.to_string();
    for word in &w {
        if word.starts_with('-') {
            continue; // a global flag before the command (`xov --json status`)
        }
        if !word.chars().all(|ch| ch.is_ascii_lowercase() || ch == '-') {
            break;
        }
        let mut next = path.clone();
        next.push(word);
        match help(&next) {
            Some(h) => {
                path = next;
                text = h;
            }
            None if text.contains("\nCommands:") => {
                return Err(format!(
                    "{}: `{}`: `xov {}` has no command `{word}`",
                    c.doc,
                    c.words.join(" "),
                    path.join(" ")
                ))
            }
            None => break,
        }
    }
    for flag in w.iter().filter(|t| t.starts_with("--") && t.len() > 2) {
        let flag = flag.split('=').next().unwrap_or(flag);
        if !lists_flag(&text, flag) && !lists_flag(global, flag) {
            return Err(format!(
                "{}: `{}`: `xov {}` has no flag {flag}",
                c.doc,
                c.words.join(" "),
                path.join(" ")
            ));
        }
    }
    Ok(path.len())
}

/// A placeholder's value on the test node.
fn fill(word: &str, values: &[(&str, String)]) -> String {
    for (name, v) in values {
        if word == *name {
            return v.clone();
        }
    }
    if word.starts_with("~/.ssh/") {
        return values
            .iter()
            .find(|(n, _)| *n == "KEYFILE")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
    }
    if word.starts_with("bc1q") {
        return values
            .iter()
            .find(|(n, _)| *n == "ADDRESS")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
    }
    word.to_string()
}

/// Runs `xov ARGS` against the node for at most `secs`; its exit status, or `None` if still running then
/// (it is killed).
fn run_bounded(d: &Daemon, args: &[String], env: &[(String, String)], secs: u64) -> Option<i32> {
    let mut child = Command::new(xov_bin())
        .arg("--datadir")
        .arg(&d.datadir)
        .args(args)
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run xov");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait().ok().and_then(|st| st.code()));
    });
    let code = match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(code) => Some(code.unwrap_or(-1)),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            None
        }
    };
    let _ = waiter.join();
    code
}

#[test]
fn the_detector_catches_an_unknown_command_and_flag() {
    let global = help(&[]).expect("xov --help");
    let bad = |line: &str| {
        let c = commands("test", line, true).remove(0);
        check_exists(&c, &global)
    };
    assert!(bad("xov bond show NODE_ID")
        .unwrap_err()
        .contains("has no command `show`"));
    assert!(bad("xov offers list --no-such-flag")
        .unwrap_err()
        .contains("has no flag --no-such-flag"));
    assert_eq!(bad("xov leases show ID --wait"), Ok(2));
    assert_eq!(bad("xov --json status"), Ok(1));
    // the alternatives of one line, and a real pipe
    let alts = commands(
        "test",
        "xov wallet address | balance | send ADDRESS SATS",
        true,
    );
    let alts: Vec<String> = alts.iter().map(|c| c.words.join(" ")).collect();
    assert_eq!(
        alts,
        [
            "xov wallet address",
            "xov wallet balance",
            "xov wallet send ADDRESS SATS"
        ]
    );
    let piped = commands(
        "test",
        "xov completions bash | sudo tee /etc/x >/dev/null   # or zsh",
        true,
    );
    assert_eq!(piped.len(), 1);
    assert_eq!(piped[0].words, ["xov", "completions", "bash"]);
    let status = xov_out(&["bond", "show", "x"]).status.code();
    assert_eq!(
        status,
        Some(EXIT_USAGE),
        "a command line xov cannot read ends with EX_USAGE"
    );
}

#[test]
fn every_command_the_guides_show_exists_and_runs_against_a_testnet() {
    let all = shown();
    for doc in DOCS {
        assert!(
            all.iter().filter(|c| c.doc == doc).count() >= 5,
            "{doc}: the extractor found almost no commands: {all:?}"
        );
    }
    let global = help(&[]).expect("xov --help");
    let missing: Vec<String> = all
        .iter()
        .filter_map(|c| check_exists(c, &global).err())
        .collect();
    assert!(
        missing.is_empty(),
        "commands the guides show that xov lacks:\n{}",
        missing.join("\n")
    );

    if xov_testnet::skip_e2e("docs_commands: running the guides' commands") {
        return;
    }
    let btc = Bitcoind::start().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("xov.toml"), buyer_toml(&btc)).unwrap();
    let d = Daemon::start(dir.path());
    let keys = tempfile::tempdir().unwrap();
    let key_file = ssh_key(keys.path());
    let address = d.json(&["wallet", "address"])["address"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let values: Vec<(&str, String)> = vec![
        ("ID", "0".repeat(64)),
        ("LEASE", "0".repeat(64)),
        ("NODE_ID", d.node_id.clone()),
        ("SATS", "1000".into()),
        ("N", "10".into()),
        ("NAME", "docs-pool".into()),
        ("ADDRESS", address.clone()),
        ("BIP21_URI", format!("bitcoin:{address}?amount=0.00001")),
        ("TXID", "0".repeat(64)),
        ("COMMAND", "true".into()),
        ("DIR", dir.path().display().to_string()),
        ("KEYFILE", key_file.display().to_string()),
        // `xov backup export --out BACKUP` writes it (once: a second export to it is refused, as is any
        // import into the running node's data dir).
        (
            "BACKUP",
            keys.path().join("node.xovbackup").display().to_string(),
        ),
    ];
    // `xov node stop` last: it ends the node the others talk to. `xov node run` would start a second
    // daemon on the same directory (refused: not a command-line error).
    let mut runnable: Vec<&Shown> = all.iter().filter(|c| c.whole).collect();
    runnable.sort_by_key(|c| c.words.join(" ").contains("node stop"));
    let mut ran = 0;
    let mut unread = Vec::new();
    for c in runnable {
        let env: Vec<(String, String)> = c
            .words
            .iter()
            .take_while(|t| t.contains('=') && !t.starts_with('-'))
            .filter_map(|t| {
                t.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        // An offer's ID is a number; a lease's is hex.
        let numeric_id = c.words.join(" ").contains("offer withdraw");
        let args: Vec<String> = c
            .words
            .iter()
            .skip(env.len() + 1)
            .map(|t| match t.as_str() {
                "ID" if numeric_id => "1".to_string(),
                _ => fill(t, &values),
            })
            .filter(|t| t != "--open") // no browser here
            .collect();
        ran += 1;
        if run_bounded(&d, &args, &env, 5) == Some(EXIT_USAGE) {
            unread.push(format!("{}: xov {}", c.doc, args.join(" ")));
        }
    }
    assert!(ran >= 15, "only {ran} whole commands found");
    assert!(
        unread.is_empty(),
        "commands the guides show that xov cannot read:\n{}",
        unread.join("\n")
    );
}
