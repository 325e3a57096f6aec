//! Asks the chain source's own peers how high the chain is and what time it is, for `xov doctor`: the
//! bitcoind RPC (`getblockchaininfo`, whose `headers` is what its peers announced, and the HTTP `Date`), or
//! each compact-filter peer by a Bitcoin P2P `version` handshake (its `start_height` and `timestamp`).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use xov_wallet::bitcoin::consensus::encode;
use xov_wallet::bitcoin::p2p::message::{NetworkMessage, RawNetworkMessage};
use xov_wallet::bitcoin::p2p::message_network::VersionMessage;
use xov_wallet::bitcoin::p2p::{Address, ServiceFlags};
use xov_wallet::Network;

const TIMEOUT: Duration = Duration::from_secs(5);

/// What one source said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerChain {
    /// Best height the source knows of (headers for bitcoind, `start_height` for a P2P peer).
    pub height: u64,
    /// Its clock, unix seconds, when it told us one.
    pub time: Option<i64>,
}

/// `getblockchaininfo` over bitcoind's JSON-RPC with the cookie file.
pub async fn bitcoind_rpc(url: &str, cookie_file: &str) -> Result<PeerChain, String> {
    let cookie = std::fs::read_to_string(cookie_file)
        .map_err(|e| format!("cannot read the RPC cookie {cookie_file}: {e}"))?;
    let (user, pass) = cookie
        .trim()
        .split_once(':')
        .ok_or_else(|| format!("{cookie_file} is not a bitcoind cookie (user:password)"))?;
    let http = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let resp = http
        .post(url)
        .basic_auth(user, Some(pass))
        .json(&serde_json::json!({"jsonrpc": "1.0", "id": "xov-doctor", "method": "getblockchaininfo", "params": []}))
        .send()
        .await
        .map_err(|e| format!("bitcoind RPC at {url} does not answer: {e}"))?;
    let time = resp
        .headers()
        .get(reqwest::header::DATE)
        .and_then(|d| d.to_str().ok())
        .and_then(http_date);
    let status = resp.status();
    let v: serde_json::Value = resp
        .json()
        .await
        .map_err(|e| format!("bitcoind RPC answered {status} with no JSON: {e}"))?;
    let r = &v["result"];
    let height = r["headers"]
        .as_u64()
        .or_else(|| r["blocks"].as_u64())
        .ok_or_else(|| format!("bitcoind RPC answered {status}: {}", v["error"]))?;
    Ok(PeerChain { height, time })
}

/// A `version` handshake with a Bitcoin P2P peer: its announced height and clock.
pub async fn p2p_version(peer: SocketAddr, network: Network) -> Result<PeerChain, String> {
    let work = async {
        let mut s = TcpStream::connect(peer)
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        let version = VersionMessage::new(
            ServiceFlags::NONE,
            now,
            Address::new(&peer, ServiceFlags::NONE),
            Address::new(&unspecified, ServiceFlags::NONE),
            rand_core::RngCore::next_u64(&mut rand_core::OsRng),
            "/xov-doctor/".into(),
            0,
        );
        let msg = RawNetworkMessage::new(network.magic(), NetworkMessage::Version(version));
        s.write_all(&encode::serialize(&msg))
            .await
            .map_err(|e| format!("cannot send: {e}"))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = s
                .read(&mut chunk)
                .await
                .map_err(|e| format!("cannot read: {e}"))?;
            if n == 0 {
                return Err("the peer closed the connection before its version".into());
            }
            buf.extend_from_slice(&chunk[..n]);
            // Messages before the peer's version are skipped; an incomplete one waits for more bytes.
            while let Ok((m, used)) = encode::deserialize_partial::<RawNetworkMessage>(&buf) {
                buf.drain(..used);
                if let NetworkMessage::Version(v) = m.payload() {
                    return Ok(PeerChain {
                        height: v.start_height.max(0) as u64,
                        time: Some(v.timestamp),
                    });
                }
            }
            if buf.len() > 1 << 20 {
                return Err("no version message from the peer".into());
            }
        }
    };
    tokio::time::timeout(TIMEOUT, work)
        .await
        .map_err(|_| "no answer within 5 s".to_string())?
}

/// Parses an HTTP `Date` (IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`) into unix seconds.
pub fn http_date(s: &str) -> Option<i64> {
    let mut p = s.split_whitespace().skip(1);
    let day: i64 = p.next()?.parse().ok()?;
    let month = match p.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = p.next()?.parse().ok()?;
    let mut hms = p.next()?.split(':').map(|x| x.parse::<i64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    // Days from the civil date (proleptic Gregorian), after Howard Hinnant's algorithm.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + m * 60 + sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        assert_eq!(http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784111777));
        assert_eq!(http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(http_date("Mon, 23 Nov 2026 14:43:19 GMT"), Some(1795444999));
        assert_eq!(http_date("garbage"), None);
    }
}
