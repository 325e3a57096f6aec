//! Each rejection rule, one by one, with the typed error a caller (and the CLI) sees.

mod common;

use common::*;
use xov_protocol::validate::*;
use xov_protocol::*;

fn signed(o: Offer) -> Signed<Offer> {
    let k = key(1);
    assert_eq!(o.provider, k.node_id());
    Signed::sign(o, &k)
}

#[test]
fn an_honest_offer_is_accepted() {
    assert_eq!(
        validate_offer(&signed(offer(&key(1), 1, 1, 500)), NOW, None),
        Ok(())
    );
}

#[test]
fn expired_and_future_offers_are_rejected() {
    let mut o = offer(&key(1), 1, 1, 500);
    o.expires_at = NOW;
    assert_eq!(
        validate_offer(&signed(o), NOW, None),
        Err(ValidationError::Expired {
            expires_at: NOW,
            now: NOW
        })
    );
    let mut o = offer(&key(1), 1, 1, 500);
    o.created_at = NOW + MAX_CLOCK_SKEW_SECS + 1;
    o.expires_at = o.created_at + 600;
    assert!(matches!(
        validate_offer(&signed(o), NOW, None),
        Err(ValidationError::FromTheFuture { .. })
    ));
}

/// A field's name and a change that puts it out of range.
type Case = (&'static str, Box<dyn Fn(&mut Offer)>);

#[test]
fn out_of_range_fields_are_named() {
    let cases: Vec<Case> = vec![
        ("vcpus", Box::new(|o| o.instance.vcpus = 0)),
        ("ram_mib", Box::new(|o| o.instance.ram_mib = 0)),
        ("disk_gib", Box::new(|o| o.instance.disk_gib = 0)),
        ("price", Box::new(|o| o.price_sats_per_hour = 0)),
        ("capacity", Box::new(|o| o.capacity = 0)),
        ("images", Box::new(|o| o.images.clear())),
        ("image", Box::new(|o| o.images = vec!["".into()])),
        (
            "max_lease",
            Box::new(|o| o.max_lease_secs = o.min_lease_secs - 1),
        ),
        ("country", Box::new(|o| o.location.country = "de".into())),
        (
            "gpu count",
            Box::new(|o| {
                o.instance.gpu = Some(Gpu {
                    model: "A100".into(),
                    count: 0,
                })
            }),
        ),
    ];
    for (field, mutate) in cases {
        let mut o = offer(&key(1), 1, 1, 500);
        mutate(&mut o);
        match validate_offer(&signed(o), NOW, None) {
            Err(ValidationError::OutOfRange { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: expected OutOfRange, got {other:?}"),
        }
    }
}

#[test]
fn a_signature_by_someone_else_is_rejected() {
    let body = offer(&key(1), 1, 1, 500);
    let forged = Signed::sign(body.clone(), &key(2));
    assert_eq!(
        validate_offer(&forged, NOW, None),
        Err(ValidationError::BadSignature(body.provider))
    );
}

#[test]
fn charter_rules_are_enforced() {
    let founder = key(200);
    let mut c = charter(&founder);
    c.rules.min_price_step_sats = 100;
    c.rules.publish = PublishPolicy::AllowList(vec![key(1).node_id()]);
    c.rules.max_ttl_secs = 1800;
    let pool = c.pool_id();
    let mut o = offer(&key(1), 1, 1, 550);
    o.pool = pool;
    o.expires_at = o.created_at + 1000;
    assert_eq!(
        validate_offer(&signed(o.clone()), NOW, Some(&c)),
        Err(ValidationError::PriceStep {
            price: 550,
            step: 100
        })
    );
    o.price_sats_per_hour = 600;
    assert_eq!(validate_offer(&signed(o.clone()), NOW, Some(&c)), Ok(()));
    o.expires_at = o.created_at + 3600;
    assert!(matches!(
        validate_offer(&signed(o.clone()), NOW, Some(&c)),
        Err(ValidationError::TtlOutOfBounds { ttl: 3600, .. })
    ));
    let mut stranger = offer(&key(3), 1, 1, 600);
    stranger.pool = pool;
    stranger.expires_at = stranger.created_at + 1000;
    assert_eq!(
        validate_offer(&Signed::sign(stranger, &key(3)), NOW, Some(&c)),
        Err(ValidationError::NotAllowedInPool(key(3).node_id()))
    );
    let elsewhere = offer(&key(1), 1, 1, 600); // default pool, not this charter's
    assert!(matches!(
        validate_offer(&signed(elsewhere), NOW, Some(&c)),
        Err(ValidationError::WrongPool { .. })
    ));
}

#[test]
fn an_offer_on_its_pools_chain_is_accepted() {
    for (_, chain) in Chain::KNOWN {
        let c = PoolCharter {
            chain,
            ..charter(&key(200))
        };
        let mut o = offer(&key(1), 1, 1, 500);
        o.pool = c.pool_id();
        o.chain = chain;
        assert_eq!(validate_offer(&signed(o), NOW, Some(&c)), Ok(()), "{chain}");
    }
}

#[test]
fn an_offer_for_another_chain_than_its_pool_is_refused_as_the_providers_fault() {
    let c = charter(&key(200)); // regtest
    let mut o = offer(&key(1), 1, 1, 500);
    o.pool = c.pool_id();
    o.chain = Chain::SIGNET;
    let err = validate_offer(&signed(o), NOW, Some(&c)).unwrap_err();
    assert_eq!(
        err,
        ValidationError::ChainMismatch {
            offer: Chain::SIGNET,
            pool: Chain::REGTEST
        }
    );
    assert!(!err.is_benign(), "the sender signed a contradiction");
    assert!(err.to_string().contains("signet"), "{err}");
    // The same offer against the signet pool of the same name is in another pool altogether.
    let signet = PoolCharter {
        chain: Chain::SIGNET,
        ..c.clone()
    };
    let mut o = offer(&key(1), 1, 1, 500);
    o.pool = c.pool_id();
    o.chain = Chain::SIGNET;
    assert!(matches!(
        validate_offer(&signed(o), NOW, Some(&signet)),
        Err(ValidationError::WrongPool { .. })
    ));
}

#[test]
fn pool_ids_differ_per_chain() {
    let regtest = charter(&key(200));
    let signet = PoolCharter {
        chain: Chain::SIGNET,
        ..regtest.clone()
    };
    assert_ne!(regtest.pool_id(), signet.pool_id());
    assert_ne!(
        public_charter(Chain::REGTEST).body().pool_id(),
        public_charter(Chain::SIGNET).body().pool_id()
    );
    assert_ne!(
        public_charter(Chain::TESTNET4).body().pool_id(),
        public_charter(Chain::BITCOIN).body().pool_id()
    );
}

#[test]
fn oversized_unknown_version_and_wrong_kind_are_refused_before_decoding() {
    let o = signed(offer(&key(1), 1, 1, 500));
    let mut bytes = o.to_bytes();
    let big = vec![0u8; Kind::Offer.max_size() + 1];
    assert!(matches!(
        Signed::<Offer>::from_bytes(&big),
        Err(DecodeError::TooLarge { .. })
    ));
    assert!(matches!(
        AnyMessage::from_bytes(&vec![1u8; signed::MAX_MESSAGE_BYTES + 1]),
        Err(DecodeError::TooLarge { .. })
    ));
    // Version 1 (offers without their chain) and anything newer than this code are refused by the version.
    for v in [0, 1, signed::VERSION + 1] {
        bytes[0] = v;
        assert_eq!(
            Signed::<Offer>::from_bytes(&bytes),
            Err(DecodeError::UnknownVersion(v))
        );
    }
    bytes[0] = signed::VERSION;
    bytes[1] = Kind::Bid as u8;
    assert!(matches!(
        Signed::<Offer>::from_bytes(&bytes),
        Err(DecodeError::WrongKind {
            expected: "offer",
            ..
        })
    ));
    bytes[1] = 99;
    assert_eq!(
        AnyMessage::from_bytes(&bytes),
        Err(DecodeError::UnknownKind(99))
    );
}

#[test]
fn a_signature_does_not_transfer_between_kinds() {
    // Same author key signing the same bytes under another kind must not verify as an offer.
    let o = signed(offer(&key(1), 1, 1, 500));
    let mut bytes = o.to_bytes();
    bytes[1] = Kind::OfferWithdrawal as u8;
    assert!(Signed::<OfferWithdrawal>::from_bytes(&bytes).is_err_or_unverified());
}

trait ErrOrUnverified {
    fn is_err_or_unverified(&self) -> bool;
}
impl<T: Message> ErrOrUnverified for Result<Signed<T>, DecodeError> {
    fn is_err_or_unverified(&self) -> bool {
        match self {
            Err(_) => true,
            Ok(m) => !m.verify(),
        }
    }
}

#[test]
fn book_rejects_replayed_sequences_and_honours_withdrawals() {
    let k = key(1);
    let mut book = OfferBook::new();
    let v2 = Signed::sign(offer(&k, 1, 2, 500), &k);
    let v1 = Signed::sign(offer(&k, 1, 1, 400), &k);
    assert_eq!(book.insert(v2.clone(), NOW), Ok(Inserted::New));
    assert_eq!(book.insert(v2.clone(), NOW), Ok(Inserted::Duplicate));
    assert_eq!(
        book.insert(v1, NOW),
        Err(ValidationError::SequenceNotNewer { have: 2, got: 1 })
    );
    let v3 = Signed::sign(offer(&k, 1, 3, 450), &k);
    assert_eq!(
        book.insert(v3, NOW),
        Ok(Inserted::Superseded {
            previous_sequence: 2
        })
    );
    assert_eq!(book.len(), 1);

    let w = Signed::sign(
        OfferWithdrawal {
            provider: k.node_id(),
            pool: pool(),
            offer_id: 1,
            sequence: 3,
            created_at: NOW,
            expires_at: NOW + 3600,
        },
        &k,
    );
    assert_eq!(validate_withdrawal(&w, NOW, None), Ok(()));
    assert!(book.withdraw(&w, NOW).unwrap().is_some());
    assert!(book.is_empty());
    // A delayed copy of the withdrawn version stays out; a newer version comes back.
    assert!(matches!(
        book.insert(Signed::sign(offer(&k, 1, 3, 450), &k), NOW),
        Err(ValidationError::Withdrawn {
            withdrawn: 3,
            got: 3
        })
    ));
    assert_eq!(
        book.insert(Signed::sign(offer(&k, 1, 4, 450), &k), NOW),
        Ok(Inserted::New)
    );
}

#[test]
fn book_expires_by_ttl() {
    let k = key(1);
    let mut book = OfferBook::new();
    let mut short = offer(&k, 1, 1, 500);
    short.expires_at = NOW + 60;
    book.insert(Signed::sign(short, &k), NOW).unwrap();
    book.insert(Signed::sign(offer(&k, 2, 1, 500), &k), NOW)
        .unwrap();
    assert_eq!(book.expire(NOW + 59), vec![]);
    let gone = book.expire(NOW + 60);
    assert_eq!(
        gone,
        vec![OfferKey {
            provider: k.node_id(),
            offer_id: 1
        }]
    );
    assert_eq!(book.len(), 1);
    // A query never returns an offer past its expiry, even before expire() runs.
    assert!(book.query(&OfferQuery::default(), NOW + 3600).is_empty());
}

#[test]
fn queries_filter_every_dimension_and_sort_by_price() {
    let mut book = OfferBook::new();
    let mut gpu = offer(&key(1), 1, 1, 9000);
    gpu.instance.gpu = Some(Gpu {
        model: "A100".into(),
        count: 2,
    });
    let mut arm = offer(&key(2), 1, 1, 300);
    arm.instance.arch = Arch::Aarch64;
    arm.location.country = "FR".into();
    let mut big = offer(&key(3), 1, 1, 800);
    big.instance.vcpus = 16;
    big.images = vec!["ubuntu-24.04".into()];
    let cheap = offer(&key(4), 1, 1, 200);
    for (o, k) in [(gpu, 1), (arm, 2), (big, 3), (cheap, 4)] {
        book.insert(Signed::sign(o, &key(k)), NOW).unwrap();
    }
    let ask = |d: Demand| -> Vec<u64> {
        book.query(
            &OfferQuery {
                pool: Some(pool()),
                demand: d,
                limit: 0,
            },
            NOW,
        )
        .iter()
        .map(|o| o.body().price_sats_per_hour)
        .collect()
    };
    assert_eq!(ask(Demand::default()), vec![200, 300, 800, 9000]);
    assert_eq!(
        ask(Demand {
            min_vcpus: 4,
            ..Demand::default()
        }),
        vec![800]
    );
    assert_eq!(
        ask(Demand {
            gpu: GpuWanted::Some {
                model: Some("a100".into()),
                min_count: 1
            },
            ..Demand::default()
        }),
        vec![9000]
    );
    assert_eq!(
        ask(Demand {
            gpu: GpuWanted::None,
            ..Demand::default()
        }),
        vec![200, 300, 800]
    );
    assert_eq!(
        ask(Demand {
            arch: Some(Arch::Aarch64),
            ..Demand::default()
        }),
        vec![300]
    );
    assert_eq!(
        ask(Demand {
            country: Some("fr".into()),
            ..Demand::default()
        }),
        vec![300]
    );
    assert_eq!(
        ask(Demand {
            image: Some("ubuntu-24.04".into()),
            ..Demand::default()
        }),
        vec![800]
    );
    assert_eq!(
        ask(Demand {
            max_price_sats_per_hour: Some(300),
            ..Demand::default()
        }),
        vec![200, 300]
    );
    let other_pool = PoolId([9; 32]);
    assert!(book
        .query(
            &OfferQuery {
                pool: Some(other_pool),
                ..OfferQuery::default()
            },
            NOW
        )
        .is_empty());
}

#[test]
fn bids_need_a_max_price_and_charters_a_sane_name() {
    let k = key(1);
    let bid = Bid {
        buyer: k.node_id(),
        pool: pool(),
        bid_id: 1,
        sequence: 1,
        created_at: NOW,
        expires_at: NOW + 600,
        demand: Demand::default(),
        hours: 3,
        count: 1,
    };
    assert!(matches!(
        validate_bid(&Signed::sign(bid.clone(), &k), NOW),
        Err(ValidationError::OutOfRange {
            field: "max_price",
            ..
        })
    ));
    let priced = Bid {
        demand: Demand {
            max_price_sats_per_hour: Some(900),
            ..Demand::default()
        },
        ..bid
    };
    assert_eq!(validate_bid(&Signed::sign(priced, &k), NOW), Ok(()));
    let mut c = charter(&k);
    assert_eq!(validate_charter(&Signed::sign(c.clone(), &k), NOW), Ok(()));
    c.name = "bad name!".into();
    assert!(matches!(
        validate_charter(&Signed::sign(c, &k), NOW),
        Err(ValidationError::OutOfRange {
            field: "pool name",
            ..
        })
    ));
}

/// A valid order by `buyer` from key 2's offer 1, for 3 hours of debian-12.
fn an_order(buyer: &Keypair) -> Order {
    Order {
        buyer: buyer.node_id(),
        provider: key(2).node_id(),
        pool: pool(),
        offer_id: 1,
        offer_sequence: 1,
        image: "debian-12".into(),
        hours: 3,
        ssh_public_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFMq1LDz2jg9w7mOpwiKfpc7OclyFbnfAmDxnjAXHk82 buyer@laptop".into(),
        refund_address: Some("bcrt1qexample".into()),
        created_at: NOW,
        nonce: 42,
        chain: Chain::REGTEST,
        extra_ports: vec![],
    }
}

#[test]
fn orders_need_an_ssh_key_and_metering_is_exact() {
    let k = key(1);
    let order = an_order(&k);
    assert_eq!(
        validate_order(&Signed::sign(order.clone(), &k), NOW),
        Ok(())
    );
    let bad = Order {
        ssh_public_key: "hunter2".into(),
        ..order
    };
    let err = validate_order(&Signed::sign(bad, &k), NOW).unwrap_err();
    assert!(
        matches!(
            err,
            ValidationError::BadSshKey(SshKeyError::UnknownKeyType { .. })
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("ssh key is not usable: 'hunter2' is not a supported key type"),
        "{err}"
    );
    let o = offer(&k, 1, 1, 3600);
    assert_eq!(
        o.cost_msat(1),
        1000,
        "3600 sats/h is 1 sat = 1000 msat per second"
    );
    assert_eq!(o.cost_msat(3600), 3_600_000);
}

#[test]
fn a_query_that_finds_nothing_is_explained() {
    let mut book = OfferBook::new();
    book.insert(Signed::sign(offer(&key(1), 1, 1, 1200), &key(1)), NOW)
        .unwrap();
    book.insert(Signed::sign(offer(&key(2), 1, 1, 1500), &key(2)), NOW)
        .unwrap();
    let q = |d: Demand| OfferQuery {
        pool: Some(pool()),
        demand: d,
        limit: 0,
    };
    let why = explain_no_match(
        &book,
        &q(Demand {
            max_price_sats_per_hour: Some(900),
            ..Demand::default()
        }),
        NOW,
    );
    assert_eq!(
        why,
        vec!["cheapest matching offer is 1200 sats/h; your maximum is 900".to_string()]
    );
    let why = explain_no_match(
        &book,
        &q(Demand {
            image: Some("arch".into()),
            ..Demand::default()
        }),
        NOW,
    );
    assert_eq!(
        why,
        vec!["no offer has image arch; available: debian-12".to_string()]
    );
    let why = explain_no_match(
        &book,
        &q(Demand {
            min_vcpus: 64,
            ..Demand::default()
        }),
        NOW,
    );
    assert_eq!(
        why,
        vec!["no offer has 64 vCPUs; the largest has 2".to_string()]
    );
    assert!(explain_no_match(&book, &q(Demand::default()), NOW).is_empty());
    let empty = OfferBook::new();
    assert!(explain_no_match(&empty, &q(Demand::default()), NOW)[0].contains("no live offers"));
}

/// Ports besides SSH: an offer says which a buyer may have opened, an order and a bid ask for some. Each list
/// is ascending, distinct and without 0; a demand matches only offers allowing every port it asks for, and a
/// query that finds nothing for its ports says which port no offer opens and what the others allow.
#[test]
fn ports_are_checked_matched_and_explained() {
    let k = key(1);
    let with_ports = |ports: &[u16]| {
        let mut o = offer(&k, 1, 1, 500);
        o.extra_ports = ports.to_vec();
        o
    };
    struct Case {
        name: &'static str,
        ports: &'static [u16],
        ok: bool,
    }
    for c in [
        Case {
            name: "none: SSH only",
            ports: &[],
            ok: true,
        },
        Case {
            name: "ascending",
            ports: &[80, 443, 8080],
            ok: true,
        },
        Case {
            name: "out of order",
            ports: &[443, 80],
            ok: false,
        },
        Case {
            name: "twice",
            ports: &[80, 80],
            ok: false,
        },
        Case {
            name: "port 0",
            ports: &[0, 80],
            ok: false,
        },
    ] {
        let got = validate_offer(&signed(with_ports(c.ports)), NOW, None);
        let order = Order {
            extra_ports: c.ports.to_vec(),
            ..an_order(&k)
        };
        let got_order = validate_order(&Signed::sign(order, &k), NOW);
        if c.ok {
            assert_eq!(got, Ok(()), "offer, {}", c.name);
            assert_eq!(got_order, Ok(()), "order, {}", c.name);
        } else {
            for (what, r) in [("offer", got), ("order", got_order)] {
                match r {
                    Err(ValidationError::OutOfRange { field, reason }) => {
                        assert_eq!(field, "extra ports", "{what}, {}", c.name);
                        assert_eq!(reason, "must be ascending, distinct and not 0");
                    }
                    other => panic!("{what}, {}: {other:?}", c.name),
                }
            }
        }
    }

    let web = with_ports(&[80, 443]);
    assert!(web.allows_port(443) && !web.allows_port(22) && !web.allows_port(8080));
    let wants = |ports: &[u16]| Demand {
        ports: ports.to_vec(),
        ..Demand::default()
    };
    assert!(wants(&[]).matches(&web));
    assert!(wants(&[80, 443]).matches(&web));
    assert!(!wants(&[443, 8080]).matches(&web));
    assert!(!wants(&[80]).matches(&with_ports(&[])));

    let mut book = OfferBook::default();
    book.insert(signed(web), NOW).unwrap();
    let q = OfferQuery {
        pool: None,
        demand: wants(&[80, 8080]),
        limit: 0,
    };
    assert!(book.query(&q, NOW).is_empty());
    let why = explain_no_match(&book, &q, NOW);
    assert_eq!(
        why,
        ["no offer opens port 8080 to its machines besides SSH; offers that match otherwise allow 80, 443"],
        "{why:?}"
    );
}
