//! Target lifecycle: a target that calls exec. Its old image's memory — heap
//! blocks still live in the kernel's table and anonymous mappings tracked
//! in userspace — is released by the exec, so only what the new image holds
//! may be reported (exec_after_leak.c execs leak_in_script.c).

use memtrace_integration::{compile_c, run_memtrace_cmd};

#[test]
fn exec_releases_the_old_image() {
    let first = compile_c("exec_after_leak");
    let second = compile_c("leak_in_script");
    let report = run_memtrace_cmd(&[], &[first.as_os_str(), second.as_os_str()]);
    let ctx = report.describe();
    for gone in ["before_exec", "map_before_exec"] {
        assert!(
            report.stacks_of(gone).is_empty(),
            "{gone}'s memory was released by exec but is still reported\n{ctx}"
        );
    }
    let leak = report.stack_of("leak_in_script");
    assert_eq!(leak.outstanding_bytes, 60_000, "new image's leak\n{ctx}");
    assert_eq!(leak.outstanding_allocations, 30, "new image's leak\n{ctx}");
    assert_eq!(
        report.totals.outstanding_bytes, 60_000,
        "only the new image's leak may remain outstanding\n{ctx}"
    );
    report.assert_target("leak_in_script", None);
    report.assert_consistent();
}
