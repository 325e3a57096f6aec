//! What the hardware behind a flavor and an image is: the CPU architecture an image is built for
//! (Glance's `hw_architecture`) and the accelerators a flavor asks for (its extra specs). Pure: the inputs
//! are what Nova and Glance returned, and the operator's names for what the cloud calls by codes.
//!
//! Invariants:
//! - An accelerator is read only from what makes Nova place one: a PCI passthrough alias
//!   (`pci_passthrough:alias`), vGPU resources (`resources:VGPU`), or a custom resource class that the
//!   operator names or that says GPU (`resources:CUSTOM_GPU_*`). A flavor whose specs ask for none has none:
//!   an offer never claims a GPU the boot would not get.
//! - Only architectures an offer can state are offered; an image without `hw_architecture` is x86_64
//!   (Nova's own assumption on x86 hosts). Anything else is reported, never guessed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// CPU architectures an offer can state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CpuArch {
    X86_64,
    Aarch64,
    Riscv64,
}

impl CpuArch {
    /// From Glance's `hw_architecture` (libosinfo names, plus the common aliases); `None` is unknown to
    /// offers.
    pub fn from_glance(value: &str) -> Option<CpuArch> {
        match value.trim().to_ascii_lowercase().as_str() {
            "x86_64" | "amd64" | "x64" => Some(CpuArch::X86_64),
            "aarch64" | "arm64" => Some(CpuArch::Aarch64),
            "riscv64" => Some(CpuArch::Riscv64),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CpuArch::X86_64 => "x86_64",
            CpuArch::Aarch64 => "aarch64",
            CpuArch::Riscv64 => "riscv64",
        }
    }
}

/// Accelerators of one machine, as offered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuSpec {
    /// What buyers filter on, e.g. `NVIDIA A100`.
    pub model: String,
    pub count: u16,
}

/// The accelerators a flavor's extra specs ask for, and notes for the operator about what was left out.
/// `names` maps what the cloud calls a device (a PCI alias, `VGPU`, a custom resource class) to the model
/// buyers see.
pub fn gpu_of(
    extra_specs: &BTreeMap<String, String>,
    names: &BTreeMap<String, String>,
) -> (Option<GpuSpec>, Vec<String>) {
    let mut found: Vec<(String, u16)> = Vec::new();
    let mut notes = Vec::new();
    let named = |code: &str, fallback: String| names.get(code).cloned().unwrap_or(fallback);
    if let Some(aliases) = extra_specs.get("pci_passthrough:alias") {
        for a in aliases.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            let (alias, count) = match a.split_once(':') {
                Some((n, c)) => (n.trim(), c.trim().parse::<u16>().ok()),
                None => (a, Some(1)),
            };
            match count {
                Some(c) if c > 0 => found.push((named(alias, alias.to_string()), c)),
                _ => notes.push(format!("PCI alias '{a}' has no usable count: not offered")),
            }
        }
    }
    for (key, value) in extra_specs {
        // `resources:CLASS` or a granular group `resourcesN:CLASS`.
        let Some((group, class)) = key.split_once(':') else {
            continue;
        };
        if !group.starts_with("resources") {
            continue;
        }
        let gpu_class = class == "VGPU"
            || class == "PGPU"
            || names.contains_key(class)
            || (class.starts_with("CUSTOM_") && class.contains("GPU"));
        if !gpu_class {
            continue;
        }
        let fallback = match class {
            "VGPU" => "vGPU".to_string(),
            "PGPU" => "GPU".to_string(),
            c => c
                .trim_start_matches("CUSTOM_")
                .trim_start_matches("GPU_")
                .replace('_', " "),
        };
        match value.trim().parse::<u16>() {
            Ok(c) if c > 0 => found.push((named(class, fallback), c)),
            _ => notes.push(format!("{key}={value} is not a count: not offered")),
        }
    }
    let Some((model, _)) = found.first().cloned() else {
        return (None, notes);
    };
    let count: u16 = found
        .iter()
        .filter(|(m, _)| *m == model)
        .map(|(_, c)| *c)
        .fold(0u16, |a, c| a.saturating_add(c));
    let others: Vec<&str> = found
        .iter()
        .filter(|(m, _)| *m != model)
        .map(|(m, _)| m.as_str())
        .collect();
    if !others.is_empty() {
        notes.push(format!(
            "the flavor also has {}: an offer names one model, offered as {count} × {model}",
            others.join(", ")
        ));
    }
    (Some(GpuSpec { model, count }), notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn gpus_from_extra_specs() {
        let names = specs(&[("a100", "NVIDIA A100"), ("VGPU", "NVIDIA GRID V100D-8Q")]);
        let gpu = |model: &str, count| {
            Some(GpuSpec {
                model: model.into(),
                count,
            })
        };
        for (name, extra, want, notes) in [
            ("no specs", specs(&[]), None, 0),
            (
                "unrelated specs",
                specs(&[("hw:cpu_policy", "dedicated"), ("resources:VCPU", "0")]),
                None,
                0,
            ),
            (
                "named PCI alias",
                specs(&[("pci_passthrough:alias", "a100:2")]),
                gpu("NVIDIA A100", 2),
                0,
            ),
            (
                "unnamed PCI alias, no count",
                specs(&[("pci_passthrough:alias", "t4")]),
                gpu("t4", 1),
                0,
            ),
            (
                "bad alias count",
                specs(&[("pci_passthrough:alias", "a100:x")]),
                None,
                1,
            ),
            (
                "vGPU",
                specs(&[("resources:VGPU", "1")]),
                gpu("NVIDIA GRID V100D-8Q", 1),
                0,
            ),
            (
                "custom class",
                specs(&[("resources:CUSTOM_GPU_A100", "1")]),
                gpu("A100", 1),
                0,
            ),
            (
                "custom class in a granular group",
                specs(&[("resources1:CUSTOM_GPU_H100_80GB", "4")]),
                gpu("H100 80GB", 4),
                0,
            ),
            (
                "custom class without GPU in its name",
                specs(&[("resources:CUSTOM_FPGA", "1")]),
                None,
                0,
            ),
            ("zero units", specs(&[("resources:VGPU", "0")]), None, 1),
            (
                "two kinds: the first is offered, the other noted",
                specs(&[
                    ("pci_passthrough:alias", "a100:2"),
                    ("resources:CUSTOM_GPU_T4", "1"),
                ]),
                gpu("NVIDIA A100", 2),
                1,
            ),
            (
                "one model from two aliases adds up",
                specs(&[("pci_passthrough:alias", "a100:2, a100:1")]),
                gpu("NVIDIA A100", 3),
                0,
            ),
        ] {
            let (got, n) = gpu_of(&extra, &names);
            assert_eq!(got, want, "{name}");
            assert_eq!(n.len(), notes, "{name}: {n:?}");
        }
        // The operator's name wins for a custom class too.
        let named = specs(&[("CUSTOM_GPU_A100", "NVIDIA A100 80GB")]);
        assert_eq!(
            gpu_of(&specs(&[("resources:CUSTOM_GPU_A100", "1")]), &named).0,
            gpu("NVIDIA A100 80GB", 1)
        );
    }

    #[test]
    fn architectures_from_glance() {
        for (given, want) in [
            ("x86_64", Some(CpuArch::X86_64)),
            ("AMD64", Some(CpuArch::X86_64)),
            ("aarch64", Some(CpuArch::Aarch64)),
            ("arm64", Some(CpuArch::Aarch64)),
            ("riscv64", Some(CpuArch::Riscv64)),
            ("ppc64le", None),
            ("", None),
        ] {
            assert_eq!(CpuArch::from_glance(given), want, "{given}");
        }
    }
}
