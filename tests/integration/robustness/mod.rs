//! Robustness: memtrace never leaves anything behind, neither loses an
//! event silently nor turns one into a phantom leak, and stays bounded
//! under a hostile target.
//! - `cleanup`: probes never outlive memtrace. After SIGKILL — and after
//!   Ctrl-C, with the final report written — none of its BPF programs or
//!   links is left in the kernel's lists, and its breakpoints are gone from
//!   the target's code, which runs on unharmed (busy_loop.c, always inside
//!   malloc/free).
//! - `losses`: losses are counted, never phantom leaks. A full live-block
//!   table (`--max-live`) and a full stack table (`--max-stacks`) are
//!   counted, named by the report, and leave the other stacks' bytes and
//!   verdicts exact (loss_flood.c).
//! - `hostile`: a target churning over a million distinct stacks and
//!   addresses for 10 s (stack_churn.c) leaves memtrace's peak RSS under
//!   the cap the README gives for its `--max-stacks` and `--max-live`, with
//!   the evictions counted, every allocation in the totals and the small
//!   leak next to the churn reported exactly.

mod cleanup;
mod hostile;
mod losses;
