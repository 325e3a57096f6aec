//! Why a buyer's query found nothing, in words that say what to change.
//!
//! Invariants:
//! - A requirement that alone stands in the way (offers meet all the others) is named with the nearest among
//!   those offers ("cheapest matching offer is 1200 sats/h; your maximum is 900").
//! - Every other requirement that no live offer meets even on its own is named too, with the nearest thing
//!   in the whole book (the largest vCPU count, the images offered, the cheapest price): a buyer asking for
//!   three impossible things hears about all three at once.
//! - When only a combination stands in the way, the answer says how many offers meet each requirement.
//! - Empty exactly when the query matches some live offer.

use crate::book::{OfferBook, OfferQuery};
use crate::demand::{Demand, GpuWanted};
use crate::offer::Offer;

/// One requirement of a [`Demand`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Req {
    Image,
    Ports,
    Price,
    Vcpus,
    Ram,
    Disk,
    Gpu,
    Arch,
    Location,
}

impl Req {
    /// In the order reasons are given: what buyers most often get wrong first.
    const ALL: [Req; 9] = [
        Req::Image,
        Req::Ports,
        Req::Price,
        Req::Vcpus,
        Req::Ram,
        Req::Disk,
        Req::Gpu,
        Req::Arch,
        Req::Location,
    ];

    /// Whether `d` asks anything of this kind.
    fn asked(self, d: &Demand) -> bool {
        match self {
            Req::Image => d.image.is_some(),
            Req::Ports => !d.ports.is_empty(),
            Req::Price => d.max_price_sats_per_hour.is_some(),
            Req::Vcpus => d.min_vcpus > 0,
            Req::Ram => d.min_ram_mib > 0,
            Req::Disk => d.min_disk_gib > 0,
            Req::Gpu => d.gpu != GpuWanted::DontCare,
            Req::Arch => d.arch.is_some(),
            Req::Location => d.country.is_some() || d.region.is_some(),
        }
    }

    /// `d` without this requirement.
    fn relax(self, d: &mut Demand) {
        match self {
            Req::Image => d.image = None,
            Req::Ports => d.ports.clear(),
            Req::Price => d.max_price_sats_per_hour = None,
            Req::Vcpus => d.min_vcpus = 0,
            Req::Ram => d.min_ram_mib = 0,
            Req::Disk => d.min_disk_gib = 0,
            Req::Gpu => d.gpu = GpuWanted::DontCare,
            Req::Arch => d.arch = None,
            Req::Location => {
                d.country = None;
                d.region = None;
            }
        }
    }

    /// `d`'s requirement of this kind and nothing else.
    fn alone(self, d: &Demand) -> Demand {
        let mut only = d.clone();
        for other in Req::ALL.into_iter().filter(|r| *r != self) {
            other.relax(&mut only);
        }
        only
    }

    /// What was asked, briefly ("image windows", "64 vCPUs").
    fn label(self, d: &Demand) -> String {
        match self {
            Req::Image => format!("image {}", d.image.as_deref().unwrap_or_default()),
            Req::Ports => format!("ports {}", join(d.ports.iter())),
            Req::Price => format!(
                "at most {} sats/h",
                d.max_price_sats_per_hour.unwrap_or_default()
            ),
            Req::Vcpus => format!("{} vCPUs", d.min_vcpus),
            Req::Ram => format!("{} MiB RAM", d.min_ram_mib),
            Req::Disk => format!("{} GiB disk", d.min_disk_gib),
            Req::Gpu => match &d.gpu {
                GpuWanted::None => "no GPU".into(),
                GpuWanted::Some { model, min_count } => gpu_label(model.as_deref(), *min_count),
                GpuWanted::DontCare => "any GPU or none".into(),
            },
            Req::Arch => d.arch.map(|a| a.as_str().to_string()).unwrap_or_default(),
            Req::Location => location_label(d),
        }
    }

    /// No live offer meets this requirement even alone: say so, with the nearest thing in `live`.
    fn nowhere(self, d: &Demand, live: &[&Offer]) -> String {
        match self {
            Req::Image => format!(
                "no offer has image {}; images offered: {}",
                d.image.as_deref().unwrap_or_default(),
                join(distinct(live.iter().flat_map(|o| o.images.iter())))
            ),
            Req::Ports => {
                let offered = distinct(live.iter().flat_map(|o| o.extra_ports.iter()));
                format!(
                    "no offer opens {} {} besides SSH; {}",
                    plural(d.ports.len(), "port", "ports"),
                    join(d.ports.iter()),
                    if offered.is_empty() {
                        "no offer opens any port besides SSH".to_string()
                    } else {
                        format!("ports offered: {}", join(offered))
                    }
                )
            }
            Req::Price => format!(
                "no offer costs {} sats/h or less; the cheapest is {} sats/h",
                d.max_price_sats_per_hour.unwrap_or_default(),
                live.iter()
                    .map(|o| o.price_sats_per_hour)
                    .min()
                    .unwrap_or(0)
            ),
            Req::Vcpus => format!(
                "no offer has {} vCPUs; the largest has {}",
                d.min_vcpus,
                live.iter().map(|o| o.instance.vcpus).max().unwrap_or(0)
            ),
            Req::Ram => format!(
                "no offer has {} MiB RAM; the largest has {} MiB",
                d.min_ram_mib,
                live.iter().map(|o| o.instance.ram_mib).max().unwrap_or(0)
            ),
            Req::Disk => format!(
                "no offer has {} GiB disk; the largest has {} GiB",
                d.min_disk_gib,
                live.iter().map(|o| o.instance.disk_gib).max().unwrap_or(0)
            ),
            Req::Gpu => {
                let gpus = distinct(
                    live.iter()
                        .filter_map(|o| o.instance.gpu.as_ref())
                        .map(|g| gpu_label(Some(&g.model), g.count)),
                );
                match &d.gpu {
                    GpuWanted::None => "every offer comes with a GPU".to_string(),
                    _ if gpus.is_empty() => {
                        format!("no offer has {}; no offer has a GPU", self.label(d))
                    }
                    _ => format!(
                        "no offer has {}; GPUs offered: {}",
                        self.label(d),
                        join(gpus)
                    ),
                }
            }
            Req::Arch => format!(
                "no offer runs on {}; offers run on {}",
                self.label(d),
                join(distinct(live.iter().map(|o| o.instance.arch.as_str())))
            ),
            Req::Location => format!(
                "no offer in {}; offers are in {}",
                self.label(d),
                join(distinct(live.iter().map(|o| place(o))))
            ),
        }
    }

    /// This requirement alone stands in the way: `others` meet all the rest (`whole`: they are the whole
    /// book, nothing else was asked).
    fn in_the_way(self, d: &Demand, others: &[&Offer], whole: bool) -> String {
        let largest = if whole {
            "the largest has"
        } else {
            "the largest that matches otherwise has"
        };
        match self {
            Req::Image => format!(
                "no offer has image {}; available: {}",
                d.image.as_deref().unwrap_or_default(),
                join(distinct(others.iter().flat_map(|o| o.images.iter())))
            ),
            Req::Ports => {
                let missing: Vec<u16> = d
                    .ports
                    .iter()
                    .copied()
                    .filter(|p| !others.iter().any(|o| o.allows_port(*p)))
                    .collect();
                let allowed = distinct(others.iter().flat_map(|o| o.extra_ports.iter()));
                format!(
                    "no offer opens {} {} to its machines besides SSH; offers that match otherwise allow {}",
                    plural(missing.len().max(1), "port", "ports"),
                    if missing.is_empty() {
                        "all of those ports together".to_string()
                    } else {
                        join(missing.iter())
                    },
                    if allowed.is_empty() {
                        "SSH only".to_string()
                    } else {
                        join(allowed)
                    }
                )
            }
            Req::Price => format!(
                "cheapest matching offer is {} sats/h; your maximum is {}",
                others
                    .iter()
                    .map(|o| o.price_sats_per_hour)
                    .min()
                    .unwrap_or(0),
                d.max_price_sats_per_hour.unwrap_or_default()
            ),
            Req::Vcpus => format!(
                "no offer has {} vCPUs; {largest} {}",
                d.min_vcpus,
                others.iter().map(|o| o.instance.vcpus).max().unwrap_or(0)
            ),
            Req::Ram => format!(
                "no offer has {} MiB RAM; {largest} {} MiB",
                d.min_ram_mib,
                others.iter().map(|o| o.instance.ram_mib).max().unwrap_or(0)
            ),
            Req::Disk => format!(
                "no offer has {} GiB disk; {largest} {} GiB",
                d.min_disk_gib,
                others
                    .iter()
                    .map(|o| o.instance.disk_gib)
                    .max()
                    .unwrap_or(0)
            ),
            Req::Gpu => {
                let gpus = distinct(
                    others
                        .iter()
                        .filter_map(|o| o.instance.gpu.as_ref())
                        .map(|g| gpu_label(Some(&g.model), g.count)),
                );
                match &d.gpu {
                    GpuWanted::None => "every offer that matches otherwise comes with a GPU".into(),
                    _ if gpus.is_empty() => format!(
                        "no offer that matches otherwise has {}; none of them has a GPU",
                        self.label(d)
                    ),
                    _ => format!(
                        "no offer that matches otherwise has {}; they have {}",
                        self.label(d),
                        join(gpus)
                    ),
                }
            }
            Req::Arch => format!(
                "no offer that matches otherwise runs on {}; they run on {}",
                self.label(d),
                join(distinct(others.iter().map(|o| o.instance.arch.as_str())))
            ),
            Req::Location => format!(
                "no offer that matches otherwise is in {}; they are in {}",
                self.label(d),
                join(distinct(others.iter().map(|o| place(o))))
            ),
        }
    }
}

/// Human-readable reasons, most useful first; empty when the query does match.
pub fn explain_no_match(book: &OfferBook, q: &OfferQuery, now: u64) -> Vec<String> {
    let all = OfferQuery {
        pool: q.pool,
        demand: Demand::default(),
        limit: 0,
    };
    let live: Vec<&Offer> = book
        .query(&all, now)
        .into_iter()
        .map(|o| o.body())
        .collect();
    if live.is_empty() {
        return vec![match q.pool {
            Some(_) => "the pool has no live offers right now; try later or another pool".into(),
            None => "this node knows no live offers; is it connected to peers?".into(),
        }];
    }
    let d = &q.demand;
    if live.iter().any(|o| d.matches(o)) {
        return Vec::new();
    }
    let asked: Vec<Req> = Req::ALL.into_iter().filter(|r| r.asked(d)).collect();
    let meeting = |demand: &Demand| -> Vec<&Offer> {
        live.iter().copied().filter(|o| demand.matches(o)).collect()
    };
    let mut reasons = Vec::new();
    for r in &asked {
        let mut relaxed = d.clone();
        r.relax(&mut relaxed);
        let others = meeting(&relaxed);
        if !others.is_empty() {
            // This requirement alone stands in the way: the nearest among the offers meeting the rest.
            reasons.push(r.in_the_way(d, &others, others.len() == live.len()));
        } else if meeting(&r.alone(d)).is_empty() {
            // Nothing meets it even on its own: the nearest thing in the whole book.
            reasons.push(r.nowhere(d, &live));
        }
    }
    if reasons.is_empty() {
        let counts: Vec<String> = asked
            .iter()
            .map(|r| {
                let n = meeting(&r.alone(d)).len();
                format!("{}: {n} {}", r.label(d), plural(n, "offer", "offers"))
            })
            .collect();
        reasons.push(format!(
            "each requirement is met by some offer, but no offer meets them all ({}); loosen two or more",
            counts.join(", ")
        ));
    }
    reasons
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}

/// Sorted, without repeats.
fn distinct<T: Ord + ToString>(items: impl Iterator<Item = T>) -> Vec<String> {
    let mut v: Vec<T> = items.collect();
    v.sort();
    v.dedup();
    v.iter().map(ToString::to_string).collect()
}

fn join<T: ToString>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn gpu_label(model: Option<&str>, count: u16) -> String {
    match (model, count) {
        (Some(m), 0 | 1) => format!("GPU {m}"),
        (Some(m), n) => format!("{n}× GPU {m}"),
        (None, 0 | 1) => "a GPU".to_string(),
        (None, n) => format!("{n} GPUs"),
    }
}

fn location_label(d: &Demand) -> String {
    match (&d.country, &d.region) {
        (Some(c), Some(r)) => format!("{}/{r}", c.to_uppercase()),
        (Some(c), None) => c.to_uppercase(),
        (None, Some(r)) => format!("region {r}"),
        (None, None) => String::new(),
    }
}

fn place(o: &Offer) -> String {
    if o.location.region.is_empty() {
        o.location.country.to_uppercase()
    } else {
        format!(
            "{}/{}",
            o.location.country.to_uppercase(),
            o.location.region
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::OfferBook;
    use crate::demand::GpuWanted;
    use crate::offer::{Arch, Gpu, InstanceType, Location};
    use crate::signed::Signed;
    use crate::{Chain, Keypair, PoolId};

    const NOW: u64 = 1_000_000;

    /// A book of three offers: small debian (300 sats/h, DE), large ubuntu (2400, 80/443 open, FR/paris),
    /// a GPU machine (9000, A100 ×2, DE).
    fn book() -> OfferBook {
        let mut book = OfferBook::new();
        type Shape<'a> = (
            u8,
            u32,
            u32,
            &'a str,
            u64,
            Option<Gpu>,
            &'a [u16],
            (&'a str, &'a str),
        );
        let shapes: [Shape; 3] = [
            (1, 2, 2048, "debian-12", 300, None, &[], ("DE", "")),
            (
                2,
                8,
                32768,
                "ubuntu-24.04",
                2400,
                None,
                &[80, 443],
                ("FR", "paris"),
            ),
            (
                3,
                16,
                65536,
                "debian-12",
                9000,
                Some(Gpu {
                    model: "A100".into(),
                    count: 2,
                }),
                &[],
                ("DE", ""),
            ),
        ];
        for (seed, vcpus, ram_mib, image, price, gpu, ports, (country, region)) in shapes {
            let k = Keypair::from_secret_bytes(&[seed; 32]);
            let o = Offer {
                provider: k.node_id(),
                pool: PoolId([9; 32]),
                offer_id: seed as u64,
                sequence: 1,
                created_at: NOW - 10,
                expires_at: NOW + 3600,
                instance: InstanceType {
                    vcpus,
                    ram_mib,
                    disk_gib: 20,
                    gpu,
                    arch: Arch::X86_64,
                },
                images: vec![image.into()],
                price_sats_per_hour: price,
                min_lease_secs: 3600,
                max_lease_secs: 86_400,
                location: Location {
                    country: country.into(),
                    region: region.into(),
                },
                capacity: 1,
                bond: None,
                chain: Chain::REGTEST,
                extra_ports: ports.to_vec(),
            };
            book.insert(Signed::sign(o, &k), NOW).unwrap();
        }
        book
    }

    #[test]
    fn each_requirement_nothing_meets_is_named_with_the_nearest_thing() {
        struct Case {
            name: &'static str,
            demand: Demand,
            want: Vec<&'static str>,
        }
        let cases = [
            Case {
                name: "three impossible things at once",
                demand: Demand {
                    min_vcpus: 64,
                    image: Some("windows".into()),
                    max_price_sats_per_hour: Some(10),
                    ..Demand::default()
                },
                want: vec![
                    "no offer has image windows; images offered: debian-12, ubuntu-24.04",
                    "no offer costs 10 sats/h or less; the cheapest is 300 sats/h",
                    "no offer has 64 vCPUs; the largest has 16",
                ],
            },
            Case {
                name: "a GPU model nobody has",
                demand: Demand {
                    gpu: GpuWanted::Some {
                        model: Some("H100".into()),
                        min_count: 1,
                    },
                    ..Demand::default()
                },
                want: vec!["no offer that matches otherwise has GPU H100; they have 2× GPU A100"],
            },
            Case {
                name: "a port and a place nobody offers",
                demand: Demand {
                    ports: vec![8080],
                    country: Some("us".into()),
                    ..Demand::default()
                },
                want: vec![
                    "no offer opens port 8080 besides SSH; ports offered: 80, 443",
                    "no offer in US; offers are in DE, FR/paris",
                ],
            },
            Case {
                name: "either alone stands in the way: both ways out, each with the nearest among the rest",
                demand: Demand {
                    image: Some("ubuntu-24.04".into()),
                    max_price_sats_per_hour: Some(500),
                    ..Demand::default()
                },
                want: vec![
                    "no offer has image ubuntu-24.04; available: debian-12",
                    "cheapest matching offer is 2400 sats/h; your maximum is 500",
                ],
            },
            Case {
                name: "vCPUs alone in the way",
                demand: Demand {
                    min_vcpus: 12,
                    max_price_sats_per_hour: Some(3000),
                    ..Demand::default()
                },
                want: vec![
                    "cheapest matching offer is 9000 sats/h; your maximum is 3000",
                    "no offer has 12 vCPUs; the largest that matches otherwise has 8",
                ],
            },
            Case {
                name: "only the combination stands in the way",
                demand: Demand {
                    image: Some("ubuntu-24.04".into()),
                    gpu: GpuWanted::Some {
                        model: None,
                        min_count: 1,
                    },
                    max_price_sats_per_hour: Some(300),
                    ..Demand::default()
                },
                want: vec![
                    "each requirement is met by some offer, but no offer meets them all (image ubuntu-24.04: 1 offer, at most 300 sats/h: 1 offer, a GPU: 1 offer); loosen two or more",
                ],
            },
            Case {
                name: "a match: nothing to explain",
                demand: Demand {
                    min_vcpus: 8,
                    ..Demand::default()
                },
                want: vec![],
            },
        ];
        let book = book();
        for c in cases {
            let q = OfferQuery {
                pool: None,
                demand: c.demand,
                limit: 0,
            };
            assert_eq!(explain_no_match(&book, &q, NOW), c.want, "{}", c.name);
        }
    }
}
