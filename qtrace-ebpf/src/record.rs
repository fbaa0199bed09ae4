//! Fields of a classic tracepoint's record, at the byte offsets userspace
//! read from the running kernel's format file (`Config::tp_*`).
//!
//! A record is the program's context, so its fields can be loaded directly
//! instead of through `bpf_probe_read_kernel()` (a helper call per field, a
//! fifth of a state change's cost on the accept path). The verifier accepts
//! only constant offsets into a context ("dereference of modified ctx
//! ptr"), so, as in `args`, each offset a record of ours has is one `match`
//! arm holding one load with its offset in the instruction (inline assembly:
//! LLVM merges plain loads into one at a computed address). The offset comes
//! from the frozen CONFIG map, a constant to the verifier, which walks only
//! the arm it selects; an offset not listed (another kernel's layout, or
//! `OFFSET_NONE`) falls back to a probe read, as before.

use aya_ebpf::{programs::TracePointContext, EbpfContext as _};

use crate::kmem::read;

/// Loads a `$ty` (`$width`: `u64`, `u32` or `u16` in the BPF assembler's
/// syntax) from `$base + $off` for each listed constant offset; `None` for
/// any other.
macro_rules! record_load {
    ($base:expr, $off:expr, $ty:ty, $width:literal, $($n:literal),+ $(,)?) => {
        match $off {
            $($n => {
                let v: u64;
                // SAFETY: one load from the record the kernel passed, at a
                // constant offset the verifier checks against its size.
                unsafe {
                    core::arch::asm!(
                        concat!("{v} = *(", $width, " *)({base} + {off})"),
                        v = lateout(reg) v,
                        base = in(reg) $base,
                        off = const $n,
                        options(pure, readonly, nostack, preserves_flags),
                    )
                };
                Some(v as $ty)
            })+
            _ => None,
        }
    };
}

/// An 8-byte field: a pointer (`skaddr`, `rx_sk`, `location`) or a syscall
/// argument or return value (`long` slots from offset 16).
#[inline(always)]
pub(crate) fn u64_at(ctx: &TracePointContext, off: u32) -> u64 {
    let base = ctx.as_ptr();
    record_load!(base, off, u64, "u64", 8, 16, 24, 32, 40).unwrap_or_else(|| read(base as u64, off))
}

/// A 4-byte field: `oldstate` / `newstate`, a drop reason.
#[inline(always)]
pub(crate) fn u32_at(ctx: &TracePointContext, off: u32) -> u32 {
    let base = ctx.as_ptr();
    record_load!(base, off, u32, "u32", 8, 12, 16, 20, 24, 28, 32, 36, 40, 44).unwrap_or_else(|| read(base as u64, off))
}

/// A 2-byte field: a port, a family or a protocol.
#[inline(always)]
pub(crate) fn u16_at(ctx: &TracePointContext, off: u32) -> u16 {
    let base = ctx.as_ptr();
    record_load!(base, off, u16, "u16", 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32).unwrap_or_else(|| read(base as u64, off))
}
