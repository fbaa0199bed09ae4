//! A traced function's arguments and return value at the positions
//! userspace resolved by parameter name from the kernel's BTF
//! ([`qtrace_common::ArgSlots`]), never at positions fixed here: Debian's
//! 6.12.117 added a seventh parameter to `tcp_v4_syn_recv_sock` (858d2a4f67ff's
//! `opt_child_init`), which moved fexit's return value from slot 6 to slot 7.
//!
//! The verifier accepts only constant offsets into a tracing or kprobe
//! context, and checks each against the function's BTF prototype (a slot
//! past the return value, or one holding a function pointer, is refused).
//! So a slot is read through a `match` whose arms each read one constant
//! offset. The slot comes from the frozen, program-read-only CONFIG map,
//! whose contents the verifier knows as constants: it walks only the arm the
//! running kernel's slot selects and never checks the others. (5.10's
//! verifier keeps a constant across a stack spill of 8 bytes only; the
//! slots are compared straight from their loads, in registers.)

use aya_ebpf::programs::{FEntryContext, FExitContext, ProbeContext};

/// Reads the `u64` at word `$word` of a context when `$slot` is `$n`;
/// `None` for a slot not listed.
///
/// Each arm is one `ldxdw` with its offset in the instruction, written as
/// inline assembly: with plain (even volatile) loads LLVM merges the arms
/// into one load at a computed address, and the verifier refuses a context
/// access at a register offset ("dereference of modified ctx ptr").
macro_rules! ctx_word {
    ($base:expr, $slot:expr, $($n:literal => $word:expr),+ $(,)?) => {
        match $slot {
            $($n => {
                let v: u64;
                // SAFETY: one load from the context the kernel passed, at a
                // constant offset the verifier checks against the context's
                // type (a function's prototype, or the register set).
                unsafe {
                    core::arch::asm!(
                        "{v} = *(u64 *)({base} + {off})",
                        v = lateout(reg) v,
                        base = in(reg) $base,
                        off = const 8 * $word,
                        options(pure, readonly, nostack, preserves_flags),
                    )
                };
                Some(v)
            })+
            _ => None,
        }
    };
}

/// The contexts whose words are the traced function's arguments (a kprobe's
/// are registers: [`reg_arg`]).
pub(crate) trait TracingContext: aya_ebpf::EbpfContext {}
impl TracingContext for FEntryContext {}
impl TracingContext for FExitContext {}

/// Slot `slot` of a fentry/fexit context: argument `slot` for
/// `slot < number of parameters`, the return value (fexit) at that number.
/// Zero for a slot beyond the twelve a trampoline can pass
/// (`MAX_BPF_FUNC_ARGS`).
#[inline(always)]
pub(crate) fn btf_slot(ctx: &impl TracingContext, slot: u8) -> u64 {
    let base = ctx.as_ptr();
    let v = ctx_word!(base, slot,
        0 => 0, 1 => 1, 2 => 2, 3 => 3, 4 => 4, 5 => 5, 6 => 6, 7 => 7, 8 => 8, 9 => 9, 10 => 10, 11 => 11, 12 => 12);
    v.unwrap_or(0)
}

/// Word index in a kprobe's context (`bpf_user_pt_regs_t`) of each
/// argument register, as libbpf's `__PT_PARM{1..}_REG` name them: x86_64
/// passes six in di, si, dx, cx, r8, r9 (`struct pt_regs`); arm64 eight in
/// x0 to x7 (`struct user_pt_regs`).
#[cfg(bpf_target_arch = "x86_64")]
macro_rules! reg_word {
    ($base:expr, $slot:expr) => {
        ctx_word!($base, $slot, 0 => 14, 1 => 13, 2 => 12, 3 => 11, 4 => 9, 5 => 8)
    };
}
#[cfg(bpf_target_arch = "aarch64")]
macro_rules! reg_word {
    ($base:expr, $slot:expr) => {
        ctx_word!($base, $slot, 0 => 0, 1 => 1, 2 => 2, 3 => 3, 4 => 4, 5 => 5, 6 => 6, 7 => 7)
    };
}
#[cfg(not(any(bpf_target_arch = "x86_64", bpf_target_arch = "aarch64")))]
compile_error!("qtrace's kprobes know the argument registers of x86_64 and aarch64 only");

/// Argument `slot` of a kprobe, from its register; `None` for a slot passed
/// on the stack (userspace refuses the kprobe tier before that can happen).
#[inline(always)]
pub(crate) fn reg_arg(ctx: &ProbeContext, slot: u8) -> Option<u64> {
    reg_word!(ctx.regs, slot)
}
