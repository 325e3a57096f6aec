//! The operator's commands of the CLI: `xov doctor`, `xov events`, `xov dashboard`.

use std::io::Write;

use crate::api::doctor::{Level, Report};
use crate::cli::client::{Client, ClientError};
use crate::events::Event;

/// Prints the doctor's report; returns false when a check failed (the caller exits with status 2).
pub async fn doctor(c: &Client, json: bool) -> Result<bool, ClientError> {
    let r: Report = c.get("/v1/doctor", None).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
    } else {
        println!("{}", render_report(&r));
    }
    Ok(r.failures == 0)
}

/// The report for people: one line per check, the fix indented below a problem.
pub fn render_report(r: &Report) -> String {
    let mut out = String::new();
    for c in &r.checks {
        let mark = match c.status {
            Level::Ok => "ok  ",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        out.push_str(&format!("{mark}  {:<12} {}\n", c.name, c.detail));
        if let Some(f) = &c.fix {
            out.push_str(&format!("      {:<12} fix: {f}\n", ""));
        }
    }
    out.push_str(&if r.healthy {
        "all checks passed".to_string()
    } else {
        format!("{} failed, {} warnings", r.failures, r.warnings)
    });
    out
}

/// One event as a line for people.
pub fn render_event(e: &Event) -> String {
    match e {
        Event::Lease { previous, lease } => {
            let state = crate::api::metrics::state_name(lease.state);
            let change = match previous {
                Some(p) if *p != lease.state => {
                    format!("{} -> {state}", crate::api::metrics::state_name(*p))
                }
                Some(_) => state,
                None => format!("new, {state}"),
            };
            let detail = lease
                .history
                .last()
                .map(|s| s.detail.as_str())
                .unwrap_or("");
            let addr = lease
                .instance
                .as_ref()
                .map(|i| format!(" [{}@{}]", i.user, i.addresses.join(",")))
                .unwrap_or_default();
            format!(
                "lease {} {change}: {detail}{addr}",
                &lease.id[..lease.id.len().min(12)]
            )
        }
        Event::DrainWarning(w) => format!("WARNING {}", w.message),
        Event::Alert { alert } => format!("ALERT {alert}"),
        Event::Wallet { event } => format!(
            "wallet {}",
            serde_json::to_string(event).unwrap_or_default()
        ),
        Event::Lagged { missed } => {
            format!("({missed} events were missed; `xov leases list` shows the current state)")
        }
    }
}

/// Streams `/v1/events` until the node stops or Ctrl-C: JSON lines with `--json`, readable lines otherwise.
pub async fn events(c: &Client, json: bool) -> Result<(), ClientError> {
    let mut resp = c.open_stream("/v1/events").await?;
    let mut buf = String::new();
    let mut data = String::new();
    loop {
        let chunk = match resp.chunk().await {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(()),
            Err(source) => {
                return Err(ClientError::Unreachable {
                    addr: c.base().to_string(),
                    source,
                })
            }
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        // Server-sent events: `field: value` lines, an empty line ends an event.
        while let Some(i) = buf.find('\n') {
            let line = buf[..i].trim_end_matches('\r').to_string();
            buf.drain(..=i);
            if let Some(d) = line.strip_prefix("data:") {
                data.push_str(d.trim_start());
            } else if line.is_empty() && !data.is_empty() {
                let text = if json {
                    data.clone()
                } else {
                    match serde_json::from_str::<Event>(&data) {
                        Ok(e) => format!("{} {}", crate::clock::unix_now(), render_event(&e)),
                        Err(_) => data.clone(),
                    }
                };
                data.clear();
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{text}");
                let _ = out.flush();
            }
        }
    }
}

/// Prints the dashboard link (which logs the browser in) and opens it when asked.
pub async fn dashboard(c: &Client, open: bool, json: bool) -> Result<(), ClientError> {
    let login: crate::api::dashboard::LoginCode = c
        .call::<(), _>(reqwest::Method::POST, "/v1/dashboard/login", None, None)
        .await?;
    let url = login.url;
    if json {
        println!(
            "{}",
            serde_json::json!({ "url": url, "expires_in_secs": login.expires_in_secs })
        );
    } else {
        println!("{url}");
        eprintln!(
            "(a one-time link: it logs one browser in within {} s, then stops working)",
            login.expires_in_secs
        );
    }
    if open {
        if let Err(e) = std::process::Command::new("xdg-open").arg(&url).status() {
            eprintln!("cannot open a browser ({e}); open the link above yourself");
        }
    }
    Ok(())
}
