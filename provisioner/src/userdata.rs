//! The buyer's key as cloud-init user-data, for providers that prefer not to create one Nova key pair per
//! lease (`key_delivery = "user_data"`). Nova wants user-data base64-encoded; the encoder is a few lines, so
//! no extra crate.

use crate::error::Result;
use crate::provisioner::parse_ssh_key;

/// A `#cloud-config` document that authorises `ssh_public_key` for the image's default user. The key is
/// validated first (one line, known type, base64 data), so it cannot smuggle YAML into the document.
pub fn cloud_config(ssh_public_key: &str) -> Result<String> {
    parse_ssh_key(ssh_public_key)?;
    let key = ssh_public_key.trim();
    // single-quoted YAML scalar: only the quote itself needs doubling
    let quoted = key.replace('\'', "''");
    Ok(format!(
        "#cloud-config\n# written by xov: the lease buyer's key\nssh_authorized_keys:\n  - '{quoted}'\n"
    ))
}

/// The `user_data` field Nova expects for this key: the cloud-config document, base64-encoded.
pub fn user_data(ssh_public_key: &str) -> Result<String> {
    Ok(base64(cloud_config(ssh_public_key)?.as_bytes()))
}

/// Standard base64 with padding (RFC 4648 §4).
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), enc);
        }
    }

    #[test]
    fn cloud_config_holds_the_key_and_nothing_else() {
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOzsQd6gSG6hQA80FztWVAzNhowSmJZl05CAYBboQqGz it's me";
        let doc = cloud_config(key).unwrap();
        assert!(doc.starts_with("#cloud-config\n"));
        assert!(doc.contains("  - 'ssh-ed25519 AAAA"));
        assert!(doc.contains("it''s me'"));
        assert!(cloud_config("ssh-ed25519 AAAA\nruncmd: [reboot]").is_err());
    }
}
