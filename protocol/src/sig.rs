//! The signature rule every xov node applies to every signed message, one at a time ([`verify_one`]) or many
//! together ([`verify_many`]).
//!
//! Invariants:
//! - One rule, both ways. A signature `(R, s)` by key `A` over `M` is valid when `s` is canonical (below ℓ),
//!   `R` and `A` decode as curve points, `A` is not of small order, and `[8]([s]B − R − [k]A)` is the
//!   identity, `k = SHA-512(R ‖ A ‖ M) mod ℓ`: the cofactored equation (ZIP-215's, with small-order keys
//!   refused). Batch verification can only be consistent with the cofactored equation: ed25519's usual
//!   cofactorless single check and a batch disagree on a signature built with a small-order component, and
//!   an uncofactored batch accepts such a signature with a probability set by its random weights, so two
//!   nodes (or one node twice) could decide differently. Here `verify_many` returns exactly what
//!   `verify_one` returns for each message, whatever else is in the batch, so every node accepts the same
//!   messages however it checks them, and a relay is never penalised for passing on what another node
//!   accepted.
//! - Nobody but the key's holder can make a valid signature, nor a second valid signature for a message
//!   someone else signed: `R`'s and `A`'s bytes go into `k`, so changing either (another encoding, an added
//!   small-order point) breaks the equation; `s` must be canonical. The holder can make several, which is
//!   why xov decides supersession by sequence number and never by message id.
//! - A failed batch is split in halves until each failure is pinned to its message; a batch never holds
//!   more than [`BATCH`] messages' points at once.

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use sha2::{Digest, Sha512};

/// Messages whose points one multiscalar multiplication takes at most.
pub const BATCH: usize = 1024;

/// One signature to check: the author's key bytes, the signed bytes, the signature.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    pub key: &'a [u8; 32],
    pub msg: &'a [u8],
    pub sig: &'a [u8; 64],
}

/// A signature's parts, decoded: what both checks share.
struct Parts {
    a: EdwardsPoint,
    r: EdwardsPoint,
    s: Scalar,
    k: Scalar,
}

fn parts(item: &Item<'_>) -> Option<Parts> {
    let a = CompressedEdwardsY(*item.key).decompress()?;
    if a.is_small_order() {
        return None;
    }
    let r_bytes: [u8; 32] = item.sig[..32].try_into().ok()?;
    let s_bytes: [u8; 32] = item.sig[32..].try_into().ok()?;
    let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes))?;
    let r = CompressedEdwardsY(r_bytes).decompress()?;
    let mut h = Sha512::new();
    h.update(r_bytes);
    h.update(item.key);
    h.update(item.msg);
    let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
    Some(Parts { a, r, s, k })
}

/// Whether one signature is valid under the rule above.
pub fn verify_one(item: &Item<'_>) -> bool {
    parts(item).as_ref().is_some_and(holds)
}

/// The cofactored equation for one decoded signature: `[8]([k](−A) + [s]B − R)` is the identity.
fn holds(p: &Parts) -> bool {
    let sb_minus_ka = EdwardsPoint::vartime_double_scalar_mul_basepoint(&p.k, &(-p.a), &p.s);
    (sb_minus_ka - p.r).mul_by_cofactor().is_identity()
}

/// Each item's verdict, exactly as [`verify_one`] gives it, checked together: a random linear combination
/// of the equations in one multiscalar multiplication per batch (about three times the throughput of one by
/// one), and a failed batch split in halves down to single messages. The weights are 128-bit values drawn
/// from a hash of the whole batch, so no signer can choose them.
pub fn verify_many(items: &[Item<'_>]) -> Vec<bool> {
    let mut ok = vec![false; items.len()];
    for (n, chunk) in items.chunks(BATCH).enumerate() {
        let base = n * BATCH;
        let decoded: Vec<Option<Parts>> = chunk.iter().map(parts).collect();
        // Items that do not decode fail alone; the rest are checked together, then by halves.
        let usable: Vec<usize> = (0..chunk.len()).filter(|&i| decoded[i].is_some()).collect();
        let mut pending: Vec<&[usize]> = vec![&usable];
        while let Some(part) = pending.pop() {
            if part.len() <= 2 {
                for &i in part {
                    ok[base + i] = decoded[i].as_ref().is_some_and(holds);
                }
                continue;
            }
            let ps: Vec<&Parts> = part.iter().filter_map(|&i| decoded[i].as_ref()).collect();
            if batch_holds(&ps, part.iter().map(|&i| &chunk[i])) {
                for &i in part {
                    ok[base + i] = true;
                }
            } else {
                let (a, b) = part.split_at(part.len() / 2);
                pending.push(a);
                pending.push(b);
            }
        }
    }
    ok
}

/// `[8](−(Σ zᵢsᵢ)B + Σ zᵢRᵢ + Σ zᵢkᵢAᵢ)` is the identity, with weights `zᵢ` from a hash of every
/// signature and key in the batch. Holds whenever each item's own equation holds; fails, except with
/// negligible probability, when one does not.
fn batch_holds<'a, 'b: 'a>(ps: &[&Parts], items: impl Iterator<Item = &'a Item<'b>>) -> bool {
    let mut seed = Sha512::new();
    seed.update(b"xov batch weights");
    for (p, item) in ps.iter().zip(items) {
        seed.update(item.sig);
        seed.update(item.key);
        seed.update(p.k.as_bytes());
    }
    let seed = seed.finalize();
    let zs: Vec<Scalar> = (0..ps.len() as u64)
        .map(|i| {
            let mut h = Sha512::new();
            h.update(seed);
            h.update(i.to_le_bytes());
            let d = h.finalize();
            let mut w = [0u8; 16];
            w.copy_from_slice(&d[..16]);
            Scalar::from(u128::from_le_bytes(w))
        })
        .collect();
    let b_coefficient: Scalar = ps.iter().zip(&zs).map(|(p, z)| z * p.s).sum();
    let scalars = std::iter::once(-b_coefficient)
        .chain(zs.iter().copied())
        .chain(ps.iter().zip(&zs).map(|(p, z)| z * p.k));
    let points = std::iter::once(curve25519_dalek::constants::ED25519_BASEPOINT_POINT)
        .chain(ps.iter().map(|p| p.r))
        .chain(ps.iter().map(|p| p.a));
    EdwardsPoint::vartime_multiscalar_mul(scalars, points)
        .mul_by_cofactor()
        .is_identity()
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
    use ed25519_dalek::{Signer, SigningKey, Verifier};

    /// A signature made by hand with the key's scalar, its `R` shifted by `torsion` (a small-order point):
    /// what only the key's holder can build.
    fn sign_with(
        key: &SigningKey,
        key_bytes: &[u8; 32],
        msg: &[u8],
        torsion: EdwardsPoint,
    ) -> [u8; 64] {
        let a = key.to_scalar();
        let r = Scalar::from_bytes_mod_order_wide(&Sha512::digest(msg).into());
        let big_r = (ED25519_BASEPOINT_POINT * r + torsion).compress();
        let mut h = Sha512::new();
        h.update(big_r.as_bytes());
        h.update(key_bytes);
        h.update(msg);
        let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
        let s = r + k * a;
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(big_r.as_bytes());
        sig[32..].copy_from_slice(s.as_bytes());
        sig
    }

    struct Case {
        name: &'static str,
        key: [u8; 32],
        msg: Vec<u8>,
        sig: [u8; 64],
        valid: bool,
    }

    fn cases() -> Vec<Case> {
        let sk = SigningKey::from_bytes(&[9; 32]);
        let pk = sk.verifying_key().to_bytes();
        let msg = b"an offer".to_vec();
        let honest = sk.sign(&msg).to_bytes();
        let mut flipped_s = honest;
        flipped_s[40] ^= 1;
        let mut flipped_r = honest;
        flipped_r[3] ^= 1;
        // s + ℓ: the same value, not canonical
        let mut s_plus_l = honest;
        let s = Scalar::from_canonical_bytes(honest[32..].try_into().unwrap()).unwrap();
        let l_bytes: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for i in 0..32 {
            let v = s.as_bytes()[i] as u16 + l_bytes[i] as u16 + carry;
            s_plus_l[32 + i] = v as u8;
            carry = v >> 8;
        }
        // A key with a small-order component: its holder can still sign for it.
        let torsion_key = (sk.verifying_key().to_edwards() + EIGHT_TORSION[1])
            .compress()
            .to_bytes();
        let small_order_key = EIGHT_TORSION[2].compress().to_bytes();
        vec![
            Case {
                name: "honest",
                key: pk,
                msg: msg.clone(),
                sig: honest,
                valid: true,
            },
            Case {
                name: "another message",
                key: pk,
                msg: b"another offer".to_vec(),
                sig: honest,
                valid: false,
            },
            Case {
                name: "s changed",
                key: pk,
                msg: msg.clone(),
                sig: flipped_s,
                valid: false,
            },
            Case {
                name: "R changed",
                key: pk,
                msg: msg.clone(),
                sig: flipped_r,
                valid: false,
            },
            Case {
                name: "s not canonical (s + ℓ)",
                key: pk,
                msg: msg.clone(),
                sig: s_plus_l,
                valid: false,
            },
            Case {
                name: "R with an order-8 component, by the key's holder",
                key: pk,
                msg: msg.clone(),
                sig: sign_with(&sk, &pk, &msg, EIGHT_TORSION[1]),
                valid: true,
            },
            Case {
                name: "R with an order-2 component, by the key's holder",
                key: pk,
                msg: msg.clone(),
                sig: sign_with(&sk, &pk, &msg, EIGHT_TORSION[4]),
                valid: true,
            },
            Case {
                name: "key with an order-8 component, by its holder",
                key: torsion_key,
                msg: msg.clone(),
                sig: sign_with(&sk, &torsion_key, &msg, EIGHT_TORSION[0]),
                valid: true,
            },
            Case {
                name: "small-order key",
                key: small_order_key,
                msg: msg.clone(),
                sig: [0; 64],
                valid: false,
            },
            Case {
                name: "R added a small-order point by someone else",
                key: pk,
                msg: msg.clone(),
                sig: {
                    let r = CompressedEdwardsY(honest[..32].try_into().unwrap())
                        .decompress()
                        .unwrap();
                    let mut s = honest;
                    s[..32].copy_from_slice((r + EIGHT_TORSION[1]).compress().as_bytes());
                    s
                },
                valid: false,
            },
        ]
    }

    #[test]
    fn the_rule_one_at_a_time() {
        for c in cases() {
            let item = Item {
                key: &c.key,
                msg: &c.msg,
                sig: &c.sig,
            };
            assert_eq!(verify_one(&item), c.valid, "{}", c.name);
        }
        // Where the rule differs from ed25519's strict single check: only signatures the key's holder built
        // with small-order components, which the strict check refuses.
        for c in cases().iter().filter(|c| c.valid && c.name != "honest") {
            let strict = ed25519_dalek::VerifyingKey::from_bytes(&c.key).is_ok_and(|k| {
                k.verify_strict(&c.msg, &ed25519_dalek::Signature::from_bytes(&c.sig))
                    .is_ok()
            });
            assert!(!strict, "{}: strict accepts it too", c.name);
        }
        // ... and honest signatures pass ed25519's usual check as well
        let c = &cases()[0];
        let k = ed25519_dalek::VerifyingKey::from_bytes(&c.key).unwrap();
        assert!(k
            .verify(&c.msg, &ed25519_dalek::Signature::from_bytes(&c.sig))
            .is_ok());
    }

    /// Every case in every position of batches of honest signatures: the batch's verdicts are the single
    /// check's, item by item (an uncofactored batch passes an order-8 component one time in eight).
    #[test]
    fn many_together_agree_with_one_at_a_time_wherever_they_sit() {
        let keys: Vec<SigningKey> = (0..40u8)
            .map(|i| SigningKey::from_bytes(&[i + 1; 32]))
            .collect();
        let honest: Vec<([u8; 32], Vec<u8>, [u8; 64])> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let m = format!("message {i}").into_bytes();
                (
                    k.verifying_key().to_bytes(),
                    m.clone(),
                    k.sign(&m).to_bytes(),
                )
            })
            .collect();
        let special = cases();
        for (n, c) in special.iter().enumerate() {
            for at in [0, 1, 17, 39] {
                let mut all: Vec<(&[u8; 32], &[u8], &[u8; 64])> = honest
                    .iter()
                    .map(|(k, m, s)| (k, m.as_slice(), s))
                    .collect();
                // a second special one, so two sit in one batch
                let other = &special[(n + 3) % special.len()];
                all.insert(25, (&other.key, &other.msg, &other.sig));
                all.insert(at, (&c.key, &c.msg, &c.sig));
                let items: Vec<Item<'_>> = all
                    .iter()
                    .map(|&(key, msg, sig)| Item { key, msg, sig })
                    .collect();
                let together = verify_many(&items);
                let single: Vec<bool> = items.iter().map(verify_one).collect();
                assert_eq!(together, single, "{} at {at} with {}", c.name, other.name);
                assert_eq!(together[at], c.valid, "{} at {at}", c.name);
            }
        }
        assert!(verify_many(&[]).is_empty());
    }
}
