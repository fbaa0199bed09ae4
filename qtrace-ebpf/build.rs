//! Rebuild the programs when bpf-linker changes (it is not a cargo input),
//! and set `bpf_target_arch` where aya-build has not (clippy, for one): the
//! kprobe programs read argument registers by architecture.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
    aya_build::emit_bpf_target_arch_cfg().map_err(|e| e.to_string())?;
    Ok(())
}
