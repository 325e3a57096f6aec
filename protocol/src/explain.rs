//! Why a buyer's query found nothing: each requirement is checked against the offers that meet all the
//! others, so the answer names what to change ("no offer has image X", "cheapest is 1,200 sats/h").

use crate::book::{OfferBook, OfferQuery};
use crate::demand::{Demand, GpuWanted};

/// Human-readable reasons, most useful first; empty when the query does match.
pub fn explain_no_match(book: &OfferBook, q: &OfferQuery, now: u64) -> Vec<String> {
    let all = OfferQuery {
        pool: q.pool,
        demand: Demand::default(),
        limit: 0,
    };
    let live = book.query(&all, now);
    if live.is_empty() {
        return vec![match q.pool {
            Some(_) => "the pool has no live offers right now; try later or another pool".into(),
            None => "this node knows no live offers; is it connected to peers?".into(),
        }];
    }
    let d = &q.demand;
    let without = |f: &dyn Fn(&mut Demand)| {
        let mut relaxed = d.clone();
        f(&mut relaxed);
        live.iter()
            .filter(|o| relaxed.matches(o.body()))
            .map(|o| o.body())
            .collect::<Vec<_>>()
    };
    let mut reasons = Vec::new();
    if let Some(img) = &d.image {
        let others = without(&|r| r.image = None);
        if !others.is_empty() {
            let mut imgs: Vec<&str> = others
                .iter()
                .flat_map(|o| o.images.iter().map(String::as_str))
                .collect();
            imgs.sort();
            imgs.dedup();
            reasons.push(format!(
                "no offer has image {img}; available: {}",
                imgs.join(", ")
            ));
        }
    }
    if !d.ports.is_empty() {
        let others = without(&|r| r.ports.clear());
        if !others.is_empty() {
            let missing: Vec<String> = d
                .ports
                .iter()
                .filter(|p| !others.iter().any(|o| o.allows_port(**p)))
                .map(u16::to_string)
                .collect();
            let mut allowed: Vec<u16> = others
                .iter()
                .flat_map(|o| o.extra_ports.iter().copied())
                .collect();
            allowed.sort_unstable();
            allowed.dedup();
            let allowed: Vec<String> = allowed.iter().map(u16::to_string).collect();
            reasons.push(format!(
                "no offer opens {} {} to its machines besides SSH; offers that match otherwise allow {}",
                if missing.len() == 1 { "port" } else { "ports" },
                if missing.is_empty() {
                    "all of those ports together".to_string()
                } else {
                    missing.join(", ")
                },
                if allowed.is_empty() {
                    "SSH only".to_string()
                } else {
                    allowed.join(", ")
                }
            ));
        }
    }
    if let Some(max) = d.max_price_sats_per_hour {
        let others = without(&|r| r.max_price_sats_per_hour = None);
        if let Some(cheapest) = others.iter().map(|o| o.price_sats_per_hour).min() {
            reasons.push(format!(
                "cheapest matching offer is {cheapest} sats/h; your maximum is {max}"
            ));
        }
    }
    if d.min_vcpus > 0 {
        let others = without(&|r| r.min_vcpus = 0);
        if !others.is_empty() {
            let most = live
                .iter()
                .map(|o| o.body().instance.vcpus)
                .max()
                .unwrap_or(0);
            reasons.push(format!(
                "no offer has {} vCPUs; the largest has {most}",
                d.min_vcpus
            ));
        }
    }
    if d.min_ram_mib > 0 {
        let others = without(&|r| r.min_ram_mib = 0);
        if !others.is_empty() {
            let most = live
                .iter()
                .map(|o| o.body().instance.ram_mib)
                .max()
                .unwrap_or(0);
            reasons.push(format!(
                "no offer has {} MiB RAM; the largest has {most}",
                d.min_ram_mib
            ));
        }
    }
    if d.min_disk_gib > 0 && !without(&|r| r.min_disk_gib = 0).is_empty() {
        reasons.push(format!("no offer has {} GiB disk", d.min_disk_gib));
    }
    if d.gpu != GpuWanted::DontCare && !without(&|r| r.gpu = GpuWanted::DontCare).is_empty() {
        reasons.push("no offer has the GPU asked for".into());
    }
    if let Some(a) = d.arch {
        if !without(&|r| r.arch = None).is_empty() {
            reasons.push(format!("no offer runs on {}", a.as_str()));
        }
    }
    if d.country.is_some() || d.region.is_some() {
        let others = without(&|r| {
            r.country = None;
            r.region = None;
        });
        if !others.is_empty() {
            reasons.push("no offer in that location".into());
        }
    }
    if reasons.is_empty() && live.iter().all(|o| !d.matches(o.body())) {
        reasons
            .push("no single offer meets all requirements together; loosen several of them".into());
    }
    reasons
}
