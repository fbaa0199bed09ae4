//! Builds the eBPF programs (qtrace-ebpf) for the bpf target with aya-build
//! and leaves the object at `$OUT_DIR/qtrace`, embedded by `probe.rs`.
use anyhow::{anyhow, Context as _};
use aya_build::Toolchain;

fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } =
        cargo_metadata::MetadataCommand::new().no_deps().exec().context("reading the workspace metadata")?;
    let ebpf = packages.into_iter().find(|p| p.name.as_str() == "qtrace-ebpf").ok_or_else(|| anyhow!("qtrace-ebpf package not found"))?;
    let root = ebpf.manifest_path.parent().ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    aya_build::build_ebpf(
        [aya_build::Package { name: ebpf.name.as_str(), root_dir: root.as_str(), ..Default::default() }],
        Toolchain::default(),
    )
}
