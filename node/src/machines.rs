//! Which cloud this node's leases run on. Until a provider configures one (`[provider]` with OpenStack
//! credentials), the node buys but does not sell machines.

use std::sync::Arc;

use crate::config::Config;
use crate::lease_engine::Machines;

pub async fn from_config(_cfg: &Config) -> anyhow::Result<Option<Arc<dyn Machines>>> {
    Ok(None)
}
