//! Cgroup membership → attribution: which cgroup a process is in (from
//! `/proc/PID/cgroup`, cgroup v1, v2 and hybrid), which container and
//! Kubernetes pod that cgroup belongs to (docker, containerd, cri-o, podman;
//! cgroupfs and systemd drivers), and the matching rules behind
//! `--container ID` and `--cgroup PATH`. Pure string work apart from
//! [`read`]; nothing here touches the cgroup filesystem.

pub use memtrace_report::Container;

/// From the text of `/proc/PID/cgroup` (`HIERARCHY:CONTROLLERS:PATH` per
/// line), the process's cgroup path. Preference, first that exists:
///
/// 1. the cgroup v2 line (`0::PATH`) when PATH is not just `/`;
/// 2. the v1 line whose controller list includes `memory`;
/// 3. the v1 `name=systemd` line;
/// 4. the first other v1 line;
/// 5. the v2 line with PATH `/`.
///
/// On hybrid machines the v2 path is `/` while v1 holds the real placement,
/// hence the order. Malformed lines are skipped; `None` when nothing usable.
pub fn parse_proc_cgroup(text: &str) -> Option<String> {
    let mut v2 = None;
    let mut memory = None;
    let mut systemd = None;
    let mut any_v1 = None;
    for line in text.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(hierarchy), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if hierarchy.is_empty() || !hierarchy.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if !path.starts_with('/') {
            continue;
        }
        if hierarchy == "0" && controllers.is_empty() {
            v2.get_or_insert(path);
            continue;
        }
        let mut names = controllers.split(',');
        if memory.is_none() && names.clone().any(|c| c == "memory") {
            memory = Some(path);
        }
        if systemd.is_none() && names.any(|c| c == "name=systemd") {
            systemd = Some(path);
        }
        any_v1.get_or_insert(path);
    }
    v2.filter(|p| *p != "/")
        .or(memory)
        .or(systemd)
        .or(any_v1)
        .or(v2)
        .map(str::to_owned)
}

/// The cgroup path of process `pid` (see [`parse_proc_cgroup`]); `None`
/// when `/proc/PID/cgroup` cannot be read (process gone, no permission).
pub fn read(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    parse_proc_cgroup(&text)
}

/// The container a cgroup path (as returned by [`read`]) belongs to.
/// Recognised, cgroup v1 and v2, anywhere in the path:
///
/// * scope units (systemd driver): `docker-ID.scope` (docker),
///   `cri-containerd-ID.scope` (containerd), `crio-ID.scope` (cri-o),
///   `libpod-ID.scope` (podman);
/// * bare ids (cgroupfs driver): `/docker/ID` (docker) and
///   `/kubepods[/QOS]/podUID/ID` (runtime `"kubepods"`);
/// * pods: a `podUID` component (cgroupfs) or a
///   `…kubepods[-QOS]-podUID.slice` component (systemd, underscores in the
///   UID turned into dashes), only below a component naming `kubepods`.
///
/// ID is exactly 64 lowercase hex characters; UID is 8-4-4-4-12 lowercase
/// hex (or 32 hex, static pods). The outermost container wins, so cgroups
/// nested below a container (`…/docker-ID.scope/init.scope`) still
/// attribute to it. A pod without a container (sandbox level) gives
/// `Some` with runtime `"kubepods"` and an empty `id`. `None` for anything
/// else, and for conmon monitor scopes (`crio-conmon-ID.scope`,
/// `libpod-conmon-ID.scope`), which are not containers.
pub fn container_of(cgroup_path: &str) -> Option<Container> {
    let mut pod_uid: Option<String> = None;
    let mut in_kubepods = false;
    let mut previous = "";
    for component in cgroup_path.split('/').filter(|c| !c.is_empty()) {
        if let Some(id) = component.strip_suffix(".scope").and_then(|s| {
            s.strip_prefix("crio-conmon-")
                .or(s.strip_prefix("libpod-conmon-"))
        }) {
            if is_container_id(id) {
                return None;
            }
        }
        if let Some((runtime, id)) = scope_container(component) {
            return Some(Container {
                runtime: runtime.to_owned(),
                id: id.to_owned(),
                pod_uid,
            });
        }
        if is_container_id(component) {
            let runtime = if previous == "docker" {
                Some("docker")
            } else if pod_uid.is_some() && pod_component_uid(previous).is_some() {
                Some("kubepods")
            } else {
                None
            };
            if let Some(runtime) = runtime {
                return Some(Container {
                    runtime: runtime.to_owned(),
                    id: component.to_owned(),
                    pod_uid,
                });
            }
        }
        if in_kubepods && pod_uid.is_none() {
            pod_uid = pod_component_uid(component);
        }
        in_kubepods |= component.contains("kubepods");
        previous = component;
    }
    pod_uid.map(|uid| Container {
        runtime: "kubepods".to_owned(),
        id: String::new(),
        pod_uid: Some(uid),
    })
}

/// `docker-ID.scope` and friends → (runtime, ID).
fn scope_container(component: &str) -> Option<(&'static str, &str)> {
    const PREFIXES: [(&str, &str); 4] = [
        ("docker-", "docker"),
        ("cri-containerd-", "containerd"),
        ("crio-", "cri-o"),
        ("libpod-", "podman"),
    ];
    let stem = component.strip_suffix(".scope")?;
    PREFIXES.iter().find_map(|(prefix, runtime)| {
        let id = stem.strip_prefix(prefix)?;
        is_container_id(id).then_some((*runtime, id))
    })
}

/// The pod UID (with dashes) named by a cgroup component: `podUID`
/// (cgroupfs driver) or `…-podUID_WITH_UNDERSCORES.slice` (systemd driver).
fn pod_component_uid(component: &str) -> Option<String> {
    let raw = match component.strip_suffix(".slice") {
        Some(stem) => &stem[stem.rfind("-pod")? + "-pod".len()..],
        None => component.strip_prefix("pod")?,
    };
    let uid = raw.replace('_', "-");
    is_pod_uid(&uid).then_some(uid)
}

/// Exactly 64 lowercase hex characters.
fn is_container_id(s: &str) -> bool {
    s.len() == 64 && is_lower_hex(s)
}

/// 8-4-4-4-12 lowercase hex, or 32 lowercase hex (the kubelet's UID for
/// static pods is a hash without dashes).
fn is_pod_uid(s: &str) -> bool {
    if s.len() == 32 {
        return is_lower_hex(s);
    }
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && is_lower_hex(g))
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `wanted` (the argument of `--container ID`) names container `c`:
/// at least 4 hex characters that are a prefix of the container id
/// (docker's short ids are 12), or the pod UID exactly. Case-insensitive;
/// a `runtime://` scheme as printed by `kubectl` (`containerd://ID`) is
/// ignored, and underscores in a UID are read as dashes.
pub fn matches_container(c: &Container, wanted: &str) -> bool {
    let wanted = wanted.trim();
    let wanted = wanted.split_once("://").map_or(wanted, |(_, rest)| rest);
    let wanted = wanted.to_ascii_lowercase();
    let id_match = wanted.len() >= 4
        && wanted.bytes().all(|b| b.is_ascii_hexdigit())
        && c.id.starts_with(&wanted);
    id_match || c.pod_uid.as_deref() == Some(wanted.replace('_', "-").as_str())
}

/// Whether cgroup `path` (as returned by [`read`]) is `wanted` (the
/// argument of `--cgroup PATH`) or below it, component-wise: `/foo`
/// matches `/foo` and `/foo/bar`, not `/foobar`.
///
/// `wanted` may be a cgroup path (`/foo`, or `foo`) or a directory in a
/// cgroup mount. Rule: a leading `/sys/fs/cgroup` is removed, then, if
/// the next component is `unified` (hybrid v2 mount), a known v1
/// hierarchy (`memory`, `cpu`, `pids`, `systemd`, …), contains a comma
/// (`cpu,cpuacct`) or starts with `name=`, that component too. A v2
/// top-level cgroup named like a v1 hierarchy is therefore misread; none
/// is in practice. Empty and `.` components and trailing slashes are
/// ignored, so `/sys/fs/cgroup` alone matches every process.
pub fn in_cgroup(path: &str, wanted: &str) -> bool {
    let mut want = components(wanted);
    if want.starts_with(&["sys", "fs", "cgroup"]) {
        want.drain(..3);
        if want.first().is_some_and(|c| is_mount_hierarchy(c)) {
            want.remove(0);
        }
    }
    components(path).starts_with(&want)
}

fn components(path: &str) -> Vec<&str> {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect()
}

/// A directory directly under `/sys/fs/cgroup` that is a mount point of
/// its own (v1 hierarchy or the hybrid v2 mount), not a cgroup.
fn is_mount_hierarchy(name: &str) -> bool {
    const HIERARCHIES: [&str; 18] = [
        "unified",
        "systemd",
        "elogind",
        "blkio",
        "cpu",
        "cpuacct",
        "cpuset",
        "devices",
        "freezer",
        "hugetlb",
        "memory",
        "misc",
        "net_cls",
        "net_prio",
        "perf_event",
        "pids",
        "rdma",
        "debug",
    ];
    HIERARCHIES.contains(&name) || name.contains(',') || name.starts_with("name=")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899";
    const ID2: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
    const UID: &str = "1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9";
    const UID_U: &str = "1f2e3d4c_5b6a_4978_8695_a4b3c2d1e0f9";

    fn container(runtime: &str, id: &str, pod: Option<&str>) -> Option<Container> {
        Some(Container {
            runtime: runtime.to_owned(),
            id: id.to_owned(),
            pod_uid: pod.map(str::to_owned),
        })
    }

    // ---- parse_proc_cgroup ----

    #[test]
    fn parse_pure_v2() {
        let text = "0::/system.slice/nginx.service\n";
        assert_eq!(
            parse_proc_cgroup(text).as_deref(),
            Some("/system.slice/nginx.service")
        );
    }

    #[test]
    fn parse_pure_v2_root() {
        assert_eq!(parse_proc_cgroup("0::/\n").as_deref(), Some("/"));
    }

    #[test]
    fn parse_v1_prefers_memory() {
        let text = format!(
            "12:pids:/kubepods/burstable/pod{UID}/{ID}\n\
             11:cpu,cpuacct:/kubepods/burstable/pod{UID}/{ID}\n\
             4:memory:/kubepods/burstable/pod{UID}/{ID}-mem\n\
             1:name=systemd:/kubepods/burstable/pod{UID}/{ID}-sd\n"
        );
        assert_eq!(
            parse_proc_cgroup(&text),
            Some(format!("/kubepods/burstable/pod{UID}/{ID}-mem"))
        );
    }

    #[test]
    fn parse_v1_memory_in_combined_controller_list() {
        let text = "3:cpu,memory:/a\n1:name=systemd:/b\n";
        assert_eq!(parse_proc_cgroup(text).as_deref(), Some("/a"));
    }

    #[test]
    fn parse_v1_systemd_without_memory() {
        let text = "3:pids:/p\n1:name=systemd:/user.slice/user-1000.slice/session-2.scope\n";
        assert_eq!(
            parse_proc_cgroup(text).as_deref(),
            Some("/user.slice/user-1000.slice/session-2.scope")
        );
    }

    #[test]
    fn parse_v1_any_line() {
        let text = "7:blkio:/blk\n3:pids:/p\n";
        assert_eq!(parse_proc_cgroup(text).as_deref(), Some("/blk"));
    }

    #[test]
    fn parse_hybrid_prefers_nonroot_v2() {
        let text = "12:memory:/system.slice/docker.service\n\
                    1:name=systemd:/system.slice/docker.service\n\
                    0::/system.slice/docker.service/sub\n";
        assert_eq!(
            parse_proc_cgroup(text).as_deref(),
            Some("/system.slice/docker.service/sub")
        );
    }

    #[test]
    fn parse_hybrid_root_v2_falls_back_to_memory() {
        // Captured from a real hybrid host.
        let text = "9:name=systemd:/\n8:pids:/\n7:blkio:/\n6:freezer:/\n5:devices:/\n\
                    4:memory:/process_api/512d8b42de46adce6feb6714f10b0921\n\
                    3:cpuset:/\n2:cpuacct:/\n1:cpu:/\n0::/\n";
        assert_eq!(
            parse_proc_cgroup(text).as_deref(),
            Some("/process_api/512d8b42de46adce6feb6714f10b0921")
        );
    }

    #[test]
    fn parse_hybrid_root_v2_falls_back_to_systemd() {
        let text = "3:pids:/p\n1:name=systemd:/sd\n0::/\n";
        assert_eq!(parse_proc_cgroup(text).as_deref(), Some("/sd"));
    }

    #[test]
    fn parse_path_with_colon_kept_whole() {
        assert_eq!(parse_proc_cgroup("0::/a:b\n").as_deref(), Some("/a:b"));
    }

    #[test]
    fn parse_garbage_and_empty() {
        assert_eq!(parse_proc_cgroup(""), None);
        assert_eq!(parse_proc_cgroup("\n\n"), None);
        assert_eq!(parse_proc_cgroup("hello\nx:memory:/a\n4:memory\n"), None);
        // Garbage skipped, good line kept.
        assert_eq!(
            parse_proc_cgroup("junk\n4:memory:/ok\n").as_deref(),
            Some("/ok")
        );
    }

    // ---- read ----

    #[test]
    fn read_self() {
        let path = read(std::process::id()).expect("own /proc/PID/cgroup");
        assert!(path.starts_with('/'), "{path}");
    }

    #[test]
    fn read_missing_process() {
        // Above the kernel's PID_MAX_LIMIT (4194304).
        assert_eq!(read(u32::MAX), None);
    }

    // ---- container_of: docker ----

    #[test]
    fn docker_cgroupfs() {
        assert_eq!(
            container_of(&format!("/docker/{ID}")),
            container("docker", ID, None)
        );
    }

    #[test]
    fn docker_systemd() {
        assert_eq!(
            container_of(&format!("/system.slice/docker-{ID}.scope")),
            container("docker", ID, None)
        );
    }

    #[test]
    fn docker_nested_cgroup_below_container() {
        assert_eq!(
            container_of(&format!("/system.slice/docker-{ID}.scope/init.scope")),
            container("docker", ID, None)
        );
        assert_eq!(
            container_of(&format!("/docker/{ID}/system.slice/cron.service")),
            container("docker", ID, None)
        );
    }

    #[test]
    fn docker_in_docker_outermost_wins() {
        assert_eq!(
            container_of(&format!("/docker/{ID}/docker/{ID2}")),
            container("docker", ID, None)
        );
    }

    // ---- container_of: containerd, cri-o, podman ----

    #[test]
    fn containerd_scope_outside_kubernetes() {
        assert_eq!(
            container_of(&format!("/system.slice/cri-containerd-{ID}.scope")),
            container("containerd", ID, None)
        );
    }

    #[test]
    fn podman_libpod_scope() {
        assert_eq!(
            container_of(&format!("/machine.slice/libpod-{ID}.scope/container")),
            container("podman", ID, None)
        );
        assert_eq!(
            container_of(&format!(
                "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"
            )),
            container("podman", ID, None)
        );
    }

    #[test]
    fn crio_scope() {
        assert_eq!(
            container_of(&format!("/machine.slice/crio-{ID}.scope")),
            container("cri-o", ID, None)
        );
    }

    #[test]
    fn conmon_is_not_a_container() {
        assert_eq!(
            container_of(&format!("/machine.slice/crio-conmon-{ID}.scope")),
            None
        );
        assert_eq!(
            container_of(&format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_U}.slice/crio-conmon-{ID}.scope"
            )),
            None
        );
        assert_eq!(
            container_of(&format!("/machine.slice/libpod-conmon-{ID}.scope")),
            None
        );
    }

    // ---- container_of: kubepods, cgroupfs driver ----

    #[test]
    fn kube_cgroupfs_burstable() {
        assert_eq!(
            container_of(&format!("/kubepods/burstable/pod{UID}/{ID}")),
            container("kubepods", ID, Some(UID))
        );
    }

    #[test]
    fn kube_cgroupfs_besteffort() {
        assert_eq!(
            container_of(&format!("/kubepods/besteffort/pod{UID}/{ID}")),
            container("kubepods", ID, Some(UID))
        );
    }

    #[test]
    fn kube_cgroupfs_guaranteed() {
        assert_eq!(
            container_of(&format!("/kubepods/pod{UID}/{ID}")),
            container("kubepods", ID, Some(UID))
        );
    }

    #[test]
    fn kube_cgroupfs_static_pod_hash_uid() {
        let uid = "6e1b5d9f0c3a47e28b9d0f1a2c3e4d5b";
        assert_eq!(
            container_of(&format!("/kubepods/burstable/pod{uid}/{ID}")),
            container("kubepods", ID, Some(uid))
        );
    }

    #[test]
    fn kube_pod_level_without_container() {
        assert_eq!(
            container_of(&format!("/kubepods/burstable/pod{UID}")),
            container("kubepods", "", Some(UID))
        );
        assert_eq!(
            container_of(&format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_U}.slice"
            )),
            container("kubepods", "", Some(UID))
        );
    }

    // ---- container_of: kubepods, systemd driver ----

    #[test]
    fn kube_systemd_containerd() {
        assert_eq!(
            container_of(&format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_U}.slice/cri-containerd-{ID}.scope"
            )),
            container("containerd", ID, Some(UID))
        );
    }

    #[test]
    fn kube_systemd_docker() {
        assert_eq!(
            container_of(&format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_U}.slice/docker-{ID}.scope"
            )),
            container("docker", ID, Some(UID))
        );
    }

    #[test]
    fn kube_systemd_crio_guaranteed() {
        assert_eq!(
            container_of(&format!(
                "/kubepods.slice/kubepods-pod{UID_U}.slice/crio-{ID}.scope"
            )),
            container("cri-o", ID, Some(UID))
        );
    }

    #[test]
    fn kube_systemd_kind_node_nested_under_kubelet() {
        // kind / k3d nodes put kubepods under the node's own slice.
        assert_eq!(
            container_of(&format!(
                "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{UID_U}.slice/cri-containerd-{ID}.scope"
            )),
            container("containerd", ID, Some(UID))
        );
    }

    // ---- container_of: negatives ----

    #[test]
    fn not_containers() {
        for path in [
            "/",
            "",
            "/user.slice/user-1000.slice/session-3.scope",
            "/system.slice/ssh.service",
            "/system.slice/docker.service",
            "/system.slice/containerd.service",
            "/init.scope",
            "/kubepods",
            "/kubepods.slice/kubepods-burstable.slice",
            "/process_api/512d8b42de46adce6feb6714f10b0921",
        ] {
            assert_eq!(container_of(path), None, "{path}");
        }
    }

    #[test]
    fn ids_matched_strictly() {
        let upper = ID.to_ascii_uppercase();
        let short = &ID[..63];
        let long = format!("{ID}0");
        let nonhex = format!("{}g", &ID[..63]);
        for id in [upper.as_str(), short, long.as_str(), nonhex.as_str()] {
            assert_eq!(container_of(&format!("/docker/{id}")), None, "{id}");
            assert_eq!(
                container_of(&format!("/system.slice/docker-{id}.scope")),
                None,
                "{id}"
            );
        }
        // Scope without the .scope suffix, or with an unknown prefix.
        assert_eq!(container_of(&format!("/system.slice/docker-{ID}")), None);
        assert_eq!(container_of(&format!("/system.slice/rkt-{ID}.scope")), None);
    }

    #[test]
    fn bare_id_needs_docker_or_pod_parent() {
        assert_eq!(container_of(&format!("/{ID}")), None);
        assert_eq!(container_of(&format!("/default/{ID}")), None);
        assert_eq!(container_of(&format!("/kubepods/burstable/{ID}")), None);
    }

    #[test]
    fn pod_uid_matched_strictly() {
        // Bad UIDs: wrong grouping, uppercase, not under kubepods.
        for path in [
            format!("/kubepods/burstable/pod1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f/{ID}"),
            format!("/kubepods/burstable/pod1f2e3d4c5b6a-4978-8695-a4b3c2d1e0f9/{ID}"),
            format!("/kubepods/burstable/pod{}/{ID}", UID.to_ascii_uppercase()),
            format!("/other/pod{UID}/{ID}"),
            format!("/pod{UID}"),
        ] {
            assert_eq!(container_of(&path), None, "{path}");
        }
        // Under a scope, a bad pod slice still yields the container.
        assert_eq!(
            container_of(&format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podnot_a_uid.slice/cri-containerd-{ID}.scope"
            )),
            container("containerd", ID, None)
        );
    }

    #[test]
    fn container_serde_roundtrip() {
        let c = container("containerd", ID, Some(UID)).unwrap();
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Container>(&json).unwrap(), c);
    }

    // ---- matches_container ----

    #[test]
    fn matches_by_id_prefix() {
        let c = container("docker", ID, Some(UID)).unwrap();
        assert!(matches_container(&c, ID));
        assert!(matches_container(&c, &ID[..12]));
        assert!(matches_container(&c, &ID[..4]));
        assert!(matches_container(&c, &ID[..12].to_ascii_uppercase()));
        assert!(matches_container(&c, &format!("containerd://{ID}")));
        assert!(matches_container(&c, &format!(" {} ", &ID[..12])));
        assert!(!matches_container(&c, &ID[..3]));
        assert!(!matches_container(&c, ""));
        assert!(!matches_container(&c, &ID[1..13]));
        assert!(!matches_container(&c, &ID2[..12]));
        assert!(!matches_container(&c, &format!("{ID}0")));
    }

    #[test]
    fn matches_by_pod_uid() {
        let c = container("containerd", ID, Some(UID)).unwrap();
        assert!(matches_container(&c, UID));
        assert!(matches_container(&c, &UID.to_ascii_uppercase()));
        assert!(matches_container(&c, UID_U));
        assert!(!matches_container(&c, &UID[..8]), "UID must be whole");
        assert!(!matches_container(
            &c,
            "1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f8"
        ));
        // Pod-level entry: id empty, only the UID matches.
        let pod = container("kubepods", "", Some(UID)).unwrap();
        assert!(matches_container(&pod, UID));
        assert!(!matches_container(&pod, "1f2e"));
        // No pod.
        let bare = container("docker", ID, None).unwrap();
        assert!(!matches_container(&bare, UID));
    }

    // ---- in_cgroup ----

    #[test]
    fn in_cgroup_by_cgroup_path() {
        let p = "/system.slice/foo.service/sub";
        assert!(in_cgroup(p, "/system.slice"));
        assert!(in_cgroup(p, "/system.slice/"));
        assert!(in_cgroup(p, "system.slice/foo.service"));
        assert!(in_cgroup(p, "/system.slice/foo.service/sub"));
        assert!(in_cgroup(p, "/"));
        assert!(!in_cgroup(p, "/system"));
        assert!(!in_cgroup(p, "/system.slice/foo"));
        assert!(!in_cgroup(p, "/system.slice/foo.service/sub/deeper"));
        assert!(!in_cgroup(p, "/user.slice"));
        assert!(!in_cgroup("/foobar", "/foo"));
        assert!(in_cgroup("/foo/bar", "/foo"));
        assert!(in_cgroup("/foo", "/foo"));
    }

    #[test]
    fn in_cgroup_by_mount_path() {
        let kube = format!("/kubepods/burstable/pod{UID}/{ID}");
        // v2
        assert!(in_cgroup(
            "/system.slice/a.service",
            "/sys/fs/cgroup/system.slice"
        ));
        // v1 controllers, including combined mounts and named hierarchies.
        assert!(in_cgroup(&kube, "/sys/fs/cgroup/memory/kubepods"));
        assert!(in_cgroup(
            &kube,
            "/sys/fs/cgroup/cpu,cpuacct/kubepods/burstable"
        ));
        assert!(in_cgroup(&kube, "/sys/fs/cgroup/pids/kubepods/"));
        assert!(in_cgroup(&kube, "/sys/fs/cgroup/systemd/kubepods"));
        assert!(in_cgroup(&kube, "/sys/fs/cgroup/name=foo/kubepods"));
        // hybrid v2 mount
        assert!(in_cgroup(&kube, "/sys/fs/cgroup/unified/kubepods"));
        // mount roots match everything
        assert!(in_cgroup(&kube, "/sys/fs/cgroup"));
        assert!(in_cgroup(&kube, "/sys/fs/cgroup/memory"));
        assert!(in_cgroup(&kube, "/sys/fs/cgroup/unified/"));
        // negatives
        assert!(!in_cgroup(&kube, "/sys/fs/cgroup/memory/kube"));
        assert!(!in_cgroup(
            &kube,
            "/sys/fs/cgroup/memory/kubepods/guaranteed"
        ));
        assert!(!in_cgroup(&kube, "/sys/fs/cgroupx/kubepods"));
        assert!(!in_cgroup(
            "/system.slice",
            "/sys/fs/cgroup/system.slice/a.service"
        ));
    }
}
