//! What a buyer wants: the filter behind `xov offers list`, matching, and a gossiped `Bid`.

use serde::{Deserialize, Serialize};

use crate::encoding::{Decode, DecodeError, Encode, Reader, Writer};
use crate::offer::{Arch, Offer, MAX_LABEL};

/// The buyer's GPU requirement.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GpuWanted {
    /// GPU or not, either is fine.
    #[default]
    DontCare,
    /// Only machines without a GPU.
    None,
    /// At least `min_count` GPUs, of `model` when given (case-insensitive).
    Some {
        model: Option<String>,
        min_count: u16,
    },
}

impl GpuWanted {
    fn accepts(&self, offer: &Offer) -> bool {
        match (self, &offer.instance.gpu) {
            (GpuWanted::DontCare, _) => true,
            (GpuWanted::None, gpu) => gpu.is_none(),
            (GpuWanted::Some { .. }, None) => false,
            (GpuWanted::Some { model, min_count }, Some(gpu)) => {
                gpu.count >= *min_count
                    && model
                        .as_ref()
                        .is_none_or(|m| m.eq_ignore_ascii_case(&gpu.model))
            }
        }
    }
}

impl Encode for GpuWanted {
    fn encode(&self, w: &mut Writer) {
        match self {
            GpuWanted::DontCare => w.u8(0),
            GpuWanted::None => w.u8(1),
            GpuWanted::Some { model, min_count } => {
                w.u8(2);
                w.option(model);
                w.u16(*min_count);
            }
        }
    }
}

impl Decode for GpuWanted {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.u8("gpu wanted")? {
            0 => Ok(GpuWanted::DontCare),
            1 => Ok(GpuWanted::None),
            2 => Ok(GpuWanted::Some {
                model: r.option("gpu model")?,
                min_count: r.u16("gpu count")?,
            }),
            tag => Err(DecodeError::InvalidTag {
                field: "gpu wanted",
                tag,
            }),
        }
    }
}

/// Requirements on an offer. Every field left at its default accepts everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Demand {
    pub min_vcpus: u32,
    pub min_ram_mib: u32,
    pub min_disk_gib: u32,
    pub gpu: GpuWanted,
    pub image: Option<String>,
    pub arch: Option<Arch>,
    /// ISO country code, compared case-insensitively.
    pub country: Option<String>,
    pub region: Option<String>,
    pub max_price_sats_per_hour: Option<u64>,
    /// TCP ports besides SSH the buyer wants opened: the offer must allow each
    /// ([`Offer::allows_port`]). At most [`crate::offer::MAX_EXTRA_PORTS`].
    pub ports: Vec<u16>,
}

impl Demand {
    /// Whether `offer` satisfies every requirement.
    pub fn matches(&self, offer: &Offer) -> bool {
        let i = &offer.instance;
        i.vcpus >= self.min_vcpus
            && i.ram_mib >= self.min_ram_mib
            && i.disk_gib >= self.min_disk_gib
            && self
                .max_price_sats_per_hour
                .is_none_or(|max| offer.price_sats_per_hour <= max)
            && self.arch.is_none_or(|a| a == i.arch)
            && self.gpu.accepts(offer)
            && self.image.as_ref().is_none_or(|img| offer.has_image(img))
            && self
                .country
                .as_ref()
                .is_none_or(|c| c.eq_ignore_ascii_case(&offer.location.country))
            && self
                .region
                .as_ref()
                .is_none_or(|r| r.eq_ignore_ascii_case(&offer.location.region))
            && self.ports.iter().all(|p| offer.allows_port(*p))
    }
}

impl Encode for Demand {
    fn encode(&self, w: &mut Writer) {
        w.u32(self.min_vcpus);
        w.u32(self.min_ram_mib);
        w.u32(self.min_disk_gib);
        self.gpu.encode(w);
        w.option(&self.image);
        w.option(&self.arch);
        w.option(&self.country);
        w.option(&self.region);
        w.option(&self.max_price_sats_per_hour);
        w.seq(&self.ports);
    }
}

impl Decode for Demand {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let d = Demand {
            min_vcpus: r.u32("min vcpus")?,
            min_ram_mib: r.u32("min ram")?,
            min_disk_gib: r.u32("min disk")?,
            gpu: GpuWanted::decode(r)?,
            image: r.option("image")?,
            arch: r.option("arch")?,
            country: r.option("country")?,
            region: r.option("region")?,
            max_price_sats_per_hour: r.option("max price")?,
            ports: r.seq("ports", crate::offer::MAX_EXTRA_PORTS)?,
        };
        // Strings inside options are decoded with the generic short-string limit; region and model share it.
        const { assert!(crate::encoding::MAX_SHORT_STR <= MAX_LABEL) };
        Ok(d)
    }
}
