//! From what the cluster has to what the provider may offer. The provider's mapping says which flavors and
//! images to sell at what price; the cloud says which of them exist and how much quota is left. Only the
//! intersection is offered, with a capacity the quota can really hold, so an offer never promises a machine
//! the cluster cannot deliver.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::error::{ProvisionError, Result};
use crate::glance::{Glance, Image};
use crate::hardware::{gpu_of, CpuArch, GpuSpec};
use crate::nova::{Flavor, Limits, Nova, NovaServer};
use crate::provisioner::{Inventory, OfferableShape, OfferedImage, QuotaLeft};

/// The provider's offer mapping (`[provider.inventory]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryMapping {
    #[serde(default)]
    pub entries: Vec<MappingEntry>,
    /// Buyers' names for what the cloud calls accelerators by code: a PCI passthrough alias (`a100`), `VGPU`
    /// or a custom resource class (`CUSTOM_GPU_A100`) → a model (`NVIDIA A100`). Unnamed ones are offered
    /// under their code.
    #[serde(default)]
    pub gpu_names: BTreeMap<String, String>,
}

/// One shape to sell: a flavor, the images it may boot, its price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappingEntry {
    /// Nova flavor name or id.
    pub flavor: String,
    pub images: Vec<ImageEntry>,
    pub price_sats_per_hour: u64,
    /// Never more than this many machines of this flavor at once (ours, counted across leases).
    #[serde(default)]
    pub max_instances: Option<u32>,
    /// The accelerators to offer with this flavor, when its extra specs do not say (or say it otherwise).
    #[serde(default)]
    pub gpu: Option<GpuSpec>,
}

/// An image to offer: a Glance name or id offered under that name, or `{ offer = "debian-12", glance = "..." }`
/// to offer a Glance image under a market-friendly name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ImageEntry {
    Name(String),
    Alias { offer: String, glance: String },
}

impl ImageEntry {
    /// The name buyers see.
    pub fn offered(&self) -> &str {
        match self {
            ImageEntry::Name(n) => n,
            ImageEntry::Alias { offer, .. } => offer,
        }
    }

    /// The Glance name or id behind it.
    pub fn glance(&self) -> &str {
        match self {
            ImageEntry::Name(n) => n,
            ImageEntry::Alias { glance, .. } => glance,
        }
    }
}

impl InventoryMapping {
    /// Catches mapping mistakes at start: empty image lists, zero prices, one offered name for two images.
    pub fn validate(&self) -> Result<()> {
        let mut seen: HashMap<&str, &str> = HashMap::new();
        for e in &self.entries {
            if e.flavor.is_empty() || e.images.is_empty() || e.price_sats_per_hour == 0 {
                return Err(ProvisionError::Config(format!(
                    "inventory entry for flavor '{}' needs a flavor, at least one image and a non-zero price",
                    e.flavor
                )));
            }
            for i in &e.images {
                if let Some(prev) = seen.insert(i.offered(), i.glance()) {
                    if prev != i.glance() {
                        return Err(ProvisionError::Config(format!(
                            "image '{}' is mapped to both '{prev}' and '{}'",
                            i.offered(),
                            i.glance()
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// The Glance reference for an image as offered (itself when no alias names it).
    pub fn glance_ref<'a>(&'a self, offered: &'a str) -> &'a str {
        self.entries
            .iter()
            .flat_map(|e| e.images.iter())
            .find(|i| i.offered() == offered)
            .map(ImageEntry::glance)
            .unwrap_or(offered)
    }
}

fn left(max: i64, used: i64) -> Option<u64> {
    (max >= 0).then(|| (max - used).max(0) as u64)
}

pub(crate) fn quota_left(l: &Limits) -> QuotaLeft {
    QuotaLeft {
        instances: left(l.max_total_instances, l.total_instances_used),
        cores: left(l.max_total_cores, l.total_cores_used),
        ram_mib: left(l.max_total_ram_size, l.total_ram_used),
    }
}

/// How many more machines of `flavor` fit: the tightest of instances, cores and RAM left, and the
/// provider's own cap minus the machines of this flavor we already run.
pub(crate) fn capacity(flavor: &Flavor, q: &QuotaLeft, cap: Option<u32>, running: u32) -> u32 {
    let per = |left: Option<u64>, each: u32| match (left, each) {
        (None, _) | (_, 0) => u64::MAX,
        (Some(l), e) => l / u64::from(e),
    };
    let quota = q
        .instances
        .unwrap_or(u64::MAX)
        .min(per(q.cores, flavor.vcpus))
        .min(per(q.ram_mib, flavor.ram));
    let cap = cap.map_or(u64::MAX, |c| u64::from(c.saturating_sub(running)));
    quota.min(cap).min(u64::from(u32::MAX)) as u32
}

/// Whether the image's own minimums fit the flavor (Nova would refuse the boot otherwise).
pub(crate) fn fits(img: &Image, flavor: &Flavor) -> bool {
    img.min_disk.unwrap_or(0) <= u64::from(flavor.disk)
        && img.min_ram.unwrap_or(0) <= u64::from(flavor.ram)
}

/// Asks the cloud and applies the mapping. `ours` are the machines we run (for `max_instances`).
pub(crate) async fn collect(
    nova: &Nova,
    glance: &Glance,
    mapping: &InventoryMapping,
    ours: &[NovaServer],
) -> Result<Inventory> {
    let flavors = nova.flavors().await?;
    let quota = quota_left(&nova.limits().await?);
    let mut running: BTreeMap<&str, u32> = BTreeMap::new();
    for s in ours.iter().filter(|s| !s.is_gone()) {
        if let Some(name) = s.flavor.as_ref().and_then(|f| f.original_name.as_deref()) {
            *running.entry(name).or_default() += 1;
        }
    }
    let mut images: HashMap<String, Option<Image>> = HashMap::new();
    let mut shapes = Vec::new();
    let mut warnings = Vec::new();
    for entry in &mapping.entries {
        let Some(flavor) = flavors
            .iter()
            .filter(|f| !f.disabled)
            .find(|f| f.id == entry.flavor)
            .or_else(|| {
                flavors
                    .iter()
                    .filter(|f| !f.disabled)
                    .find(|f| f.name == entry.flavor)
            })
        else {
            warnings.push(format!(
                "flavor '{}' not found (or disabled): not offered",
                entry.flavor
            ));
            continue;
        };
        let mut offered = Vec::new();
        let mut arch: Option<CpuArch> = None;
        for i in &entry.images {
            let img = match images.get(i.glance()) {
                Some(found) => found.clone(),
                None => {
                    let found = glance.resolve(i.glance()).await?;
                    images.insert(i.glance().to_string(), found.clone());
                    found
                }
            };
            match img {
                None => warnings.push(format!(
                    "image '{}' (offered as '{}') not found or not active: not offered with {}",
                    i.glance(),
                    i.offered(),
                    flavor.name
                )),
                Some(img) if !fits(&img, flavor) => warnings.push(format!(
                    "image '{}' needs more disk or RAM than flavor {} has: not offered with it",
                    i.glance(),
                    flavor.name
                )),
                Some(img) => {
                    let this = match img.arch_property() {
                        None => CpuArch::X86_64,
                        Some(a) => match CpuArch::from_glance(a) {
                            Some(c) => c,
                            None => {
                                warnings.push(format!(
                                    "image '{}' is for {a}, which offers cannot state (x86_64, aarch64, riscv64): not offered",
                                    i.glance()
                                ));
                                continue;
                            }
                        },
                    };
                    if arch.is_some_and(|first| first != this) {
                        warnings.push(format!(
                            "image '{}' is for {}, flavor {}'s other images for {}: an offer has one architecture, not offered with it",
                            i.glance(),
                            this.as_str(),
                            flavor.name,
                            arch.map_or("", CpuArch::as_str)
                        ));
                        continue;
                    }
                    arch = Some(this);
                    offered.push(OfferedImage {
                        name: i.offered().to_string(),
                        cloud_name: img.name.clone().unwrap_or_default(),
                        image_id: img.id,
                    })
                }
            }
        }
        if offered.is_empty() {
            warnings.push(format!(
                "flavor {} has no usable image: not offered",
                flavor.name
            ));
            continue;
        }
        let gpu = match &entry.gpu {
            Some(g) => Some(g.clone()),
            None => {
                let (gpu, notes) = gpu_of(&flavor.extra_specs, &mapping.gpu_names);
                warnings.extend(
                    notes
                        .into_iter()
                        .map(|n| format!("flavor {}: {n}", flavor.name)),
                );
                gpu
            }
        };
        let run = running.get(flavor.name.as_str()).copied().unwrap_or(0);
        shapes.push(OfferableShape {
            flavor_id: flavor.id.clone(),
            flavor_name: flavor.name.clone(),
            vcpus: flavor.vcpus,
            ram_mib: flavor.ram,
            disk_gib: flavor.disk,
            images: offered,
            price_sats_per_hour: entry.price_sats_per_hour,
            capacity: capacity(flavor, &quota, entry.max_instances, run),
            gpu,
            arch: arch.unwrap_or(CpuArch::X86_64),
        });
    }
    Ok(Inventory {
        shapes,
        quota_left: quota,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flavor(vcpus: u32, ram: u32, disk: u32) -> Flavor {
        Flavor {
            id: "1".into(),
            name: "f".into(),
            vcpus,
            ram,
            disk,
            disabled: false,
            extra_specs: Default::default(),
        }
    }

    #[test]
    fn capacity_is_the_tightest_limit() {
        let q = QuotaLeft {
            instances: Some(10),
            cores: Some(20),
            ram_mib: Some(51200),
        };
        assert_eq!(capacity(&flavor(1, 512, 1), &q, None, 0), 10);
        assert_eq!(capacity(&flavor(4, 512, 1), &q, None, 0), 5);
        assert_eq!(capacity(&flavor(1, 16384, 1), &q, None, 0), 3);
        assert_eq!(capacity(&flavor(1, 512, 1), &q, Some(4), 1), 3);
        assert_eq!(capacity(&flavor(1, 512, 1), &q, Some(4), 9), 0);
        let unlimited = QuotaLeft::default();
        assert_eq!(capacity(&flavor(1, 512, 1), &unlimited, Some(7), 0), 7);
        assert_eq!(capacity(&flavor(1, 512, 1), &unlimited, None, 0), u32::MAX);
    }

    #[test]
    fn quota_left_from_limits() {
        let l = Limits {
            max_total_instances: 10,
            total_instances_used: 12,
            max_total_cores: -1,
            total_cores_used: 3,
            max_total_ram_size: 2048,
            total_ram_used: 512,
        };
        assert_eq!(
            quota_left(&l),
            QuotaLeft {
                instances: Some(0),
                cores: None,
                ram_mib: Some(1536)
            }
        );
    }

    #[test]
    fn image_minimums() {
        let img = |min_disk, min_ram| Image {
            id: "i".into(),
            name: None,
            status: "active".into(),
            created_at: None,
            min_disk: Some(min_disk),
            min_ram: Some(min_ram),
            hw_architecture: None,
            architecture: None,
        };
        assert!(fits(&img(1, 512), &flavor(1, 512, 1)));
        assert!(!fits(&img(2, 0), &flavor(1, 512, 1)));
        assert!(!fits(&img(0, 1024), &flavor(1, 512, 1)));
    }

    #[test]
    fn mapping_from_toml_with_aliases() {
        let m: InventoryMapping = toml::from_str(
            r#"
            [[entries]]
            flavor = "m1.tiny"
            images = ["tiny-raw", { offer = "debian-12", glance = "debian-12-genericcloud-amd64" }]
            price_sats_per_hour = 900
            max_instances = 5
            "#,
        )
        .unwrap();
        m.validate().unwrap();
        assert_eq!(m.entries[0].max_instances, Some(5));
        assert_eq!(m.entries[0].gpu, None);
        let g: InventoryMapping = toml::from_str(
            r#"
            gpu_names = { a100 = "NVIDIA A100", CUSTOM_GPU_T4 = "NVIDIA T4" }
            [[entries]]
            flavor = "g1.custom"
            images = ["ubuntu-24.04"]
            price_sats_per_hour = 90000
            gpu = { model = "AMD MI300X", count = 8 }
            "#,
        )
        .unwrap();
        assert_eq!(g.gpu_names["a100"], "NVIDIA A100");
        assert_eq!(
            g.entries[0].gpu,
            Some(GpuSpec {
                model: "AMD MI300X".into(),
                count: 8
            })
        );
        assert_eq!(m.glance_ref("debian-12"), "debian-12-genericcloud-amd64");
        assert_eq!(m.glance_ref("tiny-raw"), "tiny-raw");
        assert_eq!(m.glance_ref("other"), "other");

        let mut bad = m.clone();
        bad.entries[0].images.push(ImageEntry::Alias {
            offer: "debian-12".into(),
            glance: "something-else".into(),
        });
        assert!(bad.validate().is_err());
        let mut free = m;
        free.entries[0].price_sats_per_hour = 0;
        assert!(free.validate().is_err());
    }
}
