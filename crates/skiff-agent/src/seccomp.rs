//! `seccompProfile: RuntimeDefault`: the system calls a container may not make.
//!
//! containerd's and Docker's default profiles are allow-lists of about 350 calls. skiff writes
//! the same policy the other way round, as a deny-list of the calls those profiles leave out
//! that a container can reach (Docker documents them as "significant syscalls blocked by the
//! default profile"): kernel modules, keyrings, mounts and new namespaces, clock changes,
//! tracing other processes, kexec and reboot, BPF, `userfaultfd`, io_uring. As in those
//! profiles, a call guarded by a capability the container was given is allowed again
//! (`CAP_SYS_ADMIN` allows `mount`, `CAP_SYS_PTRACE` allows `ptrace`, ...). A denied call fails
//! with `EPERM`; `clone3` fails with `ENOSYS`, so the C library falls back to `clone`, whose
//! namespace flags the filter can see.
//!
//! The difference from an allow-list: a system call added to the kernel after this list was
//! written is allowed. The list is short enough to read in one sitting, which is the point.
use serde_json::{json, Value};

/// Calls denied unless the container holds the capability (`None`: always denied).
const DENIED: &[(&str, Option<&str>)] = &[
    // Kernel modules and the old module calls.
    ("init_module", Some("CAP_SYS_MODULE")),
    ("finit_module", Some("CAP_SYS_MODULE")),
    ("delete_module", Some("CAP_SYS_MODULE")),
    ("create_module", None),
    ("get_kernel_syms", None),
    ("query_module", None),
    // Keyrings are not namespaced.
    ("add_key", None),
    ("keyctl", None),
    ("request_key", None),
    // Mounts, the new mount API, namespaces, quotas, swap.
    ("mount", Some("CAP_SYS_ADMIN")),
    ("umount", Some("CAP_SYS_ADMIN")),
    ("umount2", Some("CAP_SYS_ADMIN")),
    ("pivot_root", Some("CAP_SYS_ADMIN")),
    ("open_tree", Some("CAP_SYS_ADMIN")),
    ("move_mount", Some("CAP_SYS_ADMIN")),
    ("fsopen", Some("CAP_SYS_ADMIN")),
    ("fsconfig", Some("CAP_SYS_ADMIN")),
    ("fsmount", Some("CAP_SYS_ADMIN")),
    ("fspick", Some("CAP_SYS_ADMIN")),
    ("mount_setattr", Some("CAP_SYS_ADMIN")),
    ("unshare", Some("CAP_SYS_ADMIN")),
    ("setns", Some("CAP_SYS_ADMIN")),
    ("quotactl", Some("CAP_SYS_ADMIN")),
    ("quotactl_fd", Some("CAP_SYS_ADMIN")),
    ("swapon", Some("CAP_SYS_ADMIN")),
    ("swapoff", Some("CAP_SYS_ADMIN")),
    ("fanotify_init", Some("CAP_SYS_ADMIN")),
    ("lookup_dcookie", Some("CAP_SYS_ADMIN")),
    ("name_to_handle_at", Some("CAP_SYS_ADMIN")),
    ("open_by_handle_at", Some("CAP_DAC_READ_SEARCH")),
    // BPF and performance counters.
    ("bpf", Some("CAP_SYS_ADMIN")),
    ("perf_event_open", Some("CAP_SYS_ADMIN")),
    // Other processes' memory.
    ("ptrace", Some("CAP_SYS_PTRACE")),
    ("process_vm_readv", Some("CAP_SYS_PTRACE")),
    ("process_vm_writev", Some("CAP_SYS_PTRACE")),
    ("kcmp", Some("CAP_SYS_PTRACE")),
    ("pidfd_getfd", Some("CAP_SYS_PTRACE")),
    // The machine itself.
    ("reboot", Some("CAP_SYS_BOOT")),
    ("kexec_load", Some("CAP_SYS_BOOT")),
    ("kexec_file_load", Some("CAP_SYS_BOOT")),
    ("settimeofday", Some("CAP_SYS_TIME")),
    ("stime", Some("CAP_SYS_TIME")),
    ("clock_settime", Some("CAP_SYS_TIME")),
    ("clock_adjtime", Some("CAP_SYS_TIME")),
    ("acct", Some("CAP_SYS_PACCT")),
    ("iopl", Some("CAP_SYS_RAWIO")),
    ("ioperm", Some("CAP_SYS_RAWIO")),
    ("syslog", Some("CAP_SYSLOG")),
    ("vhangup", Some("CAP_SYS_TTY_CONFIG")),
    // NUMA placement of memory.
    ("get_mempolicy", Some("CAP_SYS_NICE")),
    ("set_mempolicy", Some("CAP_SYS_NICE")),
    ("mbind", Some("CAP_SYS_NICE")),
    ("move_pages", Some("CAP_SYS_NICE")),
    // Obsolete or a frequent source of kernel exploits.
    ("nfsservctl", None),
    ("uselib", None),
    ("ustat", None),
    ("sysfs", None),
    ("_sysctl", None),
    ("userfaultfd", None),
    ("io_uring_setup", None),
    ("io_uring_enter", None),
    ("io_uring_register", None),
];

/// `clone` flags that make new namespaces (`CLONE_NEWNS` .. `CLONE_NEWNET`, `CLONE_NEWCGROUP`).
const NAMESPACE_FLAGS: [u64; 7] = [
    0x0002_0000, // CLONE_NEWNS
    0x0200_0000, // CLONE_NEWCGROUP
    0x0400_0000, // CLONE_NEWUTS
    0x0800_0000, // CLONE_NEWIPC
    0x1000_0000, // CLONE_NEWUSER
    0x2000_0000, // CLONE_NEWPID
    0x4000_0000, // CLONE_NEWNET
];

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// The architectures a filter covers: the native one and the 32-bit ones it can run.
fn architectures() -> Vec<&'static str> {
    match std::env::consts::ARCH {
        "aarch64" => vec!["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        _ => vec!["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    }
}

/// The OCI `linux.seccomp` document for a container holding `capabilities` (`CAP_…` names).
pub fn runtime_default(capabilities: &[String]) -> Value {
    let holds = |cap: &str| capabilities.iter().any(|c| c == cap);
    let denied: Vec<&str> = DENIED
        .iter()
        .filter(|(_, cap)| !cap.is_some_and(holds))
        .map(|(name, _)| *name)
        .collect();
    let mut syscalls = vec![json!({
        "names": denied, "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM,
    })];
    if !holds("CAP_SYS_ADMIN") {
        syscalls.push(json!({
            "names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS,
        }));
        // One rule per flag: denied when that bit is set in the first argument.
        for flag in NAMESPACE_FLAGS {
            syscalls.push(json!({
                "names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM,
                "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}],
            }));
        }
    }
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": architectures(),
        "syscalls": syscalls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied(profile: &Value) -> Vec<String> {
        profile["syscalls"][0]["names"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_str().map(str::to_string))
            .collect()
    }

    #[test]
    fn capabilities_allow_back_the_calls_they_guard() {
        let plain = runtime_default(&["CAP_CHOWN".into()]);
        let names = denied(&plain);
        for call in ["mount", "unshare", "ptrace", "keyctl", "bpf", "reboot"] {
            assert!(names.contains(&call.to_string()), "{call}");
        }
        // clone3 is ENOSYS and each namespace flag of clone its own rule.
        assert_eq!(plain["syscalls"][1]["errnoRet"], ENOSYS);
        assert_eq!(plain["syscalls"].as_array().map(Vec::len), Some(9));

        let admin = runtime_default(&["CAP_SYS_ADMIN".into(), "CAP_SYS_PTRACE".into()]);
        let names = denied(&admin);
        for call in ["mount", "unshare", "ptrace", "bpf"] {
            assert!(!names.contains(&call.to_string()), "{call}");
        }
        assert!(names.contains(&"keyctl".to_string()), "never allowed");
        assert_eq!(admin["syscalls"].as_array().map(Vec::len), Some(1));
        assert_eq!(admin["defaultAction"], "SCMP_ACT_ALLOW");
    }
}
