//! Builders for the CRI configs tests send, with test defaults, so that a test states
//! only what it is about.
//!
//! [`PodBuilder`] starts from a pod shaped like crictl's example (namespace
//! `default`, uid `uid-<name>`, attempt 1, the name as hostname, logs in /tmp, label
//! `app=<name>`, an empty Linux config); [`ContainerBuilder`] from a container of an
//! image with its log at `<name>.log` in the pod's log directory and an empty Linux
//! config. Each method sets one field (or adds one entry to a list or map) and
//! leaves the rest as it was; `build` (or `Into`) gives the CRI message.

use std::collections::HashMap;
use std::path::Path;

use crius_cri_api::v1 as cri;

/// A `PodSandboxConfig` under construction.
#[derive(Debug, Clone)]
pub struct PodBuilder(cri::PodSandboxConfig);

impl PodBuilder {
    /// A pod named `name`, shaped like crictl's example.
    pub fn new(name: &str) -> PodBuilder {
        PodBuilder(cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.to_string(),
                namespace: "default".to_string(),
                uid: format!("uid-{name}"),
                attempt: 1,
            }),
            hostname: name.chars().take(60).collect(),
            log_directory: "/tmp".to_string(),
            labels: HashMap::from([("app".to_string(), name.to_string())]),
            linux: Some(cri::LinuxPodSandboxConfig::default()),
            ..Default::default()
        })
    }

    /// The CRI message.
    pub fn build(self) -> cri::PodSandboxConfig {
        self.0
    }

    fn metadata(&mut self) -> &mut cri::PodSandboxMetadata {
        self.0.metadata.get_or_insert_with(Default::default)
    }

    fn linux(&mut self) -> &mut cri::LinuxPodSandboxConfig {
        self.0.linux.get_or_insert_with(Default::default)
    }

    fn security(&mut self) -> &mut cri::LinuxSandboxSecurityContext {
        self.linux()
            .security_context
            .get_or_insert_with(Default::default)
    }

    fn namespaces(&mut self) -> &mut cri::NamespaceOption {
        self.security()
            .namespace_options
            .get_or_insert_with(Default::default)
    }

    /// The Kubernetes namespace (metadata).
    pub fn namespace(mut self, namespace: &str) -> PodBuilder {
        self.metadata().namespace = namespace.to_string();
        self
    }

    /// The pod's uid (metadata).
    pub fn uid(mut self, uid: &str) -> PodBuilder {
        self.metadata().uid = uid.to_string();
        self
    }

    /// The attempt (metadata).
    pub fn attempt(mut self, attempt: u32) -> PodBuilder {
        self.metadata().attempt = attempt;
        self
    }

    /// The hostname.
    pub fn hostname(mut self, hostname: &str) -> PodBuilder {
        self.0.hostname = hostname.to_string();
        self
    }

    /// The log directory; an empty path means none.
    pub fn log_directory(mut self, dir: impl AsRef<Path>) -> PodBuilder {
        self.0.log_directory = dir.as_ref().display().to_string();
        self
    }

    /// The DNS config.
    pub fn dns(mut self, servers: &[&str], searches: &[&str], options: &[&str]) -> PodBuilder {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        self.0.dns_config = Some(cri::DnsConfig {
            servers: strings(servers),
            searches: strings(searches),
            options: strings(options),
        });
        self
    }

    /// Adds a port mapping (`host_port` 0: none on the host).
    pub fn port(
        mut self,
        protocol: cri::Protocol,
        container_port: i32,
        host_port: i32,
    ) -> PodBuilder {
        self.0.port_mappings.push(cri::PortMapping {
            protocol: protocol as i32,
            container_port,
            host_port,
            host_ip: String::new(),
        });
        self
    }

    /// Adds a TCP port mapping.
    pub fn tcp_port(self, container_port: i32, host_port: i32) -> PodBuilder {
        self.port(cri::Protocol::Tcp, container_port, host_port)
    }

    /// The network namespace mode (the others stay as they were, POD by default).
    pub fn network_mode(mut self, mode: cri::NamespaceMode) -> PodBuilder {
        self.namespaces().network = mode as i32;
        self
    }

    /// The PID namespace mode.
    pub fn pid_mode(mut self, mode: cri::NamespaceMode) -> PodBuilder {
        self.namespaces().pid = mode as i32;
        self
    }

    /// The user namespace: `mode` with these uid and gid maps (the kubelet's
    /// `hostUsers: false` is POD with one mapping each).
    pub fn userns(mut self, userns: cri::UserNamespace) -> PodBuilder {
        self.namespaces().userns_options = Some(userns);
        self
    }

    /// The IPC namespace mode.
    pub fn ipc_mode(mut self, mode: cri::NamespaceMode) -> PodBuilder {
        self.namespaces().ipc = mode as i32;
        self
    }

    /// Adds a sysctl.
    pub fn sysctl(mut self, name: &str, value: &str) -> PodBuilder {
        self.linux()
            .sysctls
            .insert(name.to_string(), value.to_string());
        self
    }

    /// Adds (or replaces) a label.
    pub fn label(mut self, key: &str, value: &str) -> PodBuilder {
        self.0.labels.insert(key.to_string(), value.to_string());
        self
    }

    /// Replaces every label, the default `app` one included.
    pub fn labels(mut self, labels: &[(&str, &str)]) -> PodBuilder {
        self.0.labels = pairs(labels);
        self
    }

    /// Adds (or replaces) an annotation.
    pub fn annotation(mut self, key: &str, value: &str) -> PodBuilder {
        self.0
            .annotations
            .insert(key.to_string(), value.to_string());
        self
    }

    /// A privileged pod.
    pub fn privileged(mut self) -> PodBuilder {
        self.security().privileged = true;
        self
    }

    /// The pod's seccomp profile.
    pub fn seccomp(mut self, profile: cri::security_profile::ProfileType) -> PodBuilder {
        self.security().seccomp = Some(cri::SecurityProfile {
            profile_type: profile as i32,
            localhost_ref: String::new(),
        });
        self
    }

    /// The whole security context, replacing what the other methods set in it.
    pub fn security_context(mut self, context: cri::LinuxSandboxSecurityContext) -> PodBuilder {
        self.linux().security_context = Some(context);
        self
    }

    /// The pod's cgroup parent.
    pub fn cgroup_parent(mut self, parent: &str) -> PodBuilder {
        self.linux().cgroup_parent = parent.to_string();
        self
    }

    /// The pod's resources, and the overhead on top of them.
    pub fn resources(
        mut self,
        resources: cri::LinuxContainerResources,
        overhead: cri::LinuxContainerResources,
    ) -> PodBuilder {
        let linux = self.linux();
        linux.resources = Some(resources);
        linux.overhead = Some(overhead);
        self
    }
}

impl From<PodBuilder> for cri::PodSandboxConfig {
    fn from(b: PodBuilder) -> cri::PodSandboxConfig {
        b.build()
    }
}

/// A `ContainerConfig` under construction.
#[derive(Debug, Clone)]
pub struct ContainerBuilder(cri::ContainerConfig);

impl ContainerBuilder {
    /// A container named `name` of `image` (its entrypoint and command, logging to
    /// `<name>.log`).
    pub fn new(name: &str, image: &str) -> ContainerBuilder {
        ContainerBuilder(cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: name.to_string(),
                attempt: 0,
            }),
            image: Some(crate::rpc::image_spec(image)),
            log_path: format!("{name}.log"),
            linux: Some(cri::LinuxContainerConfig::default()),
            ..Default::default()
        })
    }

    /// The CRI message.
    pub fn build(self) -> cri::ContainerConfig {
        self.0
    }

    fn linux(&mut self) -> &mut cri::LinuxContainerConfig {
        self.0.linux.get_or_insert_with(Default::default)
    }

    fn security(&mut self) -> &mut cri::LinuxContainerSecurityContext {
        self.linux()
            .security_context
            .get_or_insert_with(Default::default)
    }

    fn resources_mut(&mut self) -> &mut cri::LinuxContainerResources {
        self.linux().resources.get_or_insert_with(Default::default)
    }

    /// The attempt (metadata).
    pub fn attempt(mut self, attempt: u32) -> ContainerBuilder {
        if let Some(m) = self.0.metadata.as_mut() {
            m.attempt = attempt;
        }
        self
    }

    /// The command (the image's entrypoint is replaced).
    pub fn command<S: AsRef<str>>(
        mut self,
        command: impl IntoIterator<Item = S>,
    ) -> ContainerBuilder {
        self.0.command = strings(command);
        self
    }

    /// The args (the image's cmd is replaced).
    pub fn args<S: AsRef<str>>(mut self, args: impl IntoIterator<Item = S>) -> ContainerBuilder {
        self.0.args = strings(args);
        self
    }

    /// The command `/bin/sh -c <script>`.
    pub fn sh(self, script: &str) -> ContainerBuilder {
        self.command(["/bin/sh", "-c", script])
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> ContainerBuilder {
        self.0.envs.push(cri::KeyValue {
            key: key.to_string(),
            value: value.as_bytes().to_vec(),
        });
        self
    }

    /// The working directory.
    pub fn working_dir(mut self, dir: &str) -> ContainerBuilder {
        self.0.working_dir = dir.to_string();
        self
    }

    /// Adds a mount.
    pub fn mount(mut self, mount: cri::Mount) -> ContainerBuilder {
        self.0.mounts.push(mount);
        self
    }

    /// Adds a read-write bind mount of `host` at `container`.
    pub fn bind(self, host: impl AsRef<Path>, container: &str) -> ContainerBuilder {
        self.mount(cri::Mount {
            container_path: container.to_string(),
            host_path: host.as_ref().display().to_string(),
            ..Default::default()
        })
    }

    /// Adds a read-only bind mount of `host` at `container`.
    pub fn bind_readonly(self, host: impl AsRef<Path>, container: &str) -> ContainerBuilder {
        self.mount(cri::Mount {
            container_path: container.to_string(),
            host_path: host.as_ref().display().to_string(),
            readonly: true,
            ..Default::default()
        })
    }

    /// Adds a device: `host` at `container` with cgroup `permissions` (`rwm`).
    pub fn device(mut self, host: &str, container: &str, permissions: &str) -> ContainerBuilder {
        self.0.devices.push(cri::Device {
            container_path: container.to_string(),
            host_path: host.to_string(),
            permissions: permissions.to_string(),
        });
        self
    }

    /// The whole resources message, replacing what [`memory_limit`](Self::memory_limit)
    /// set.
    pub fn resources(mut self, resources: cri::LinuxContainerResources) -> ContainerBuilder {
        self.linux().resources = Some(resources);
        self
    }

    /// The memory limit, in bytes.
    pub fn memory_limit(mut self, bytes: i64) -> ContainerBuilder {
        self.resources_mut().memory_limit_in_bytes = bytes;
        self
    }

    /// The whole security context, replacing what the other methods set in it.
    pub fn security_context(
        mut self,
        context: cri::LinuxContainerSecurityContext,
    ) -> ContainerBuilder {
        self.linux().security_context = Some(context);
        self
    }

    /// Runs as this uid.
    pub fn run_as_user(mut self, uid: i64) -> ContainerBuilder {
        self.security().run_as_user = Some(cri::Int64Value { value: uid });
        self
    }

    /// Runs as this user, looked up in the container's /etc/passwd.
    pub fn run_as_username(mut self, name: &str) -> ContainerBuilder {
        self.security().run_as_username = name.to_string();
        self
    }

    /// A privileged container.
    pub fn privileged(mut self) -> ContainerBuilder {
        self.security().privileged = true;
        self
    }

    /// A read-only root filesystem.
    pub fn readonly_rootfs(mut self) -> ContainerBuilder {
        self.security().readonly_rootfs = true;
        self
    }

    fn capabilities(&mut self) -> &mut cri::Capability {
        self.security()
            .capabilities
            .get_or_insert_with(Default::default)
    }

    /// Adds a capability (a name without `CAP_`, as the kubelet sends them).
    pub fn add_capability(mut self, cap: &str) -> ContainerBuilder {
        self.capabilities().add_capabilities.push(cap.to_string());
        self
    }

    /// Drops a capability.
    pub fn drop_capability(mut self, cap: &str) -> ContainerBuilder {
        self.capabilities().drop_capabilities.push(cap.to_string());
        self
    }

    /// The seccomp profile.
    pub fn seccomp(mut self, profile: cri::security_profile::ProfileType) -> ContainerBuilder {
        self.security().seccomp = Some(cri::SecurityProfile {
            profile_type: profile as i32,
            localhost_ref: String::new(),
        });
        self
    }

    /// The PID namespace: `mode`, and the container whose namespace it joins in
    /// TARGET mode ("" otherwise).
    pub fn pid_mode(mut self, mode: cri::NamespaceMode, target: &str) -> ContainerBuilder {
        let ns = self
            .security()
            .namespace_options
            .get_or_insert_with(Default::default);
        ns.pid = mode as i32;
        ns.target_id = target.to_string();
        self
    }

    /// The user namespace (the kubelet sends the pod's).
    pub fn userns(mut self, userns: cri::UserNamespace) -> ContainerBuilder {
        self.security()
            .namespace_options
            .get_or_insert_with(Default::default)
            .userns_options = Some(userns);
        self
    }

    /// A terminal.
    pub fn tty(mut self) -> ContainerBuilder {
        self.0.tty = true;
        self
    }

    /// Stdin kept open, across attachers.
    pub fn stdin(mut self) -> ContainerBuilder {
        self.0.stdin = true;
        self
    }

    /// Stdin, closed when the first attacher's input ends.
    pub fn stdin_once(mut self) -> ContainerBuilder {
        self.0.stdin = true;
        self.0.stdin_once = true;
        self
    }

    /// The log path, relative to the pod's log directory; "" for none.
    pub fn log_path(mut self, path: &str) -> ContainerBuilder {
        self.0.log_path = path.to_string();
        self
    }

    /// No log file.
    pub fn no_log(self) -> ContainerBuilder {
        self.log_path("")
    }

    /// Adds (or replaces) a label.
    pub fn label(mut self, key: &str, value: &str) -> ContainerBuilder {
        self.0.labels.insert(key.to_string(), value.to_string());
        self
    }
}

impl From<ContainerBuilder> for cri::ContainerConfig {
    fn from(b: ContainerBuilder) -> cri::ContainerConfig {
        b.build()
    }
}

fn strings<S: AsRef<str>>(v: impl IntoIterator<Item = S>) -> Vec<String> {
    v.into_iter().map(|s| s.as_ref().to_string()).collect()
}

fn pairs(v: &[(&str, &str)]) -> HashMap<String, String> {
    v.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_defaults_and_setters() {
        let c = PodBuilder::new("web").build();
        let m = c.metadata.unwrap();
        assert_eq!(
            (
                m.name.as_str(),
                m.namespace.as_str(),
                m.uid.as_str(),
                m.attempt
            ),
            ("web", "default", "uid-web", 1)
        );
        assert_eq!(
            (c.hostname.as_str(), c.log_directory.as_str()),
            ("web", "/tmp")
        );
        assert_eq!(c.labels, pairs(&[("app", "web")]));
        assert_eq!(c.linux, Some(cri::LinuxPodSandboxConfig::default()));

        let c = PodBuilder::new("web")
            .ipc_mode(cri::NamespaceMode::Node)
            .tcp_port(80, 8080)
            .labels(&[("k", "v")])
            .label("tier", "front")
            .log_directory("")
            .build();
        let ns = c.linux.unwrap().security_context.unwrap().namespace_options;
        assert_eq!(
            ns,
            Some(cri::NamespaceOption {
                ipc: cri::NamespaceMode::Node as i32,
                ..Default::default()
            })
        );
        assert_eq!(c.port_mappings.len(), 1);
        assert_eq!(c.port_mappings[0].protocol, cri::Protocol::Tcp as i32);
        assert_eq!(
            (
                c.port_mappings[0].container_port,
                c.port_mappings[0].host_port
            ),
            (80, 8080)
        );
        assert_eq!(c.labels, pairs(&[("k", "v"), ("tier", "front")]));
        assert!(c.log_directory.is_empty());
    }

    #[test]
    fn container_defaults_and_setters() {
        let c = ContainerBuilder::new("app", "reg/busybox:v1").build();
        assert_eq!(c.metadata.unwrap().name, "app");
        assert_eq!(c.image.unwrap().image, "reg/busybox:v1");
        assert_eq!(c.log_path, "app.log");
        assert!(c.command.is_empty() && c.args.is_empty());
        assert_eq!(c.linux, Some(cri::LinuxContainerConfig::default()));

        let c = ContainerBuilder::new("app", "i")
            .sh("echo hi")
            .memory_limit(1 << 25)
            .run_as_user(0)
            .drop_capability("NET_RAW")
            .pid_mode(cri::NamespaceMode::Target, "abc")
            .stdin_once()
            .no_log()
            .build();
        assert_eq!(c.command, ["/bin/sh", "-c", "echo hi"]);
        assert!(c.stdin && c.stdin_once && !c.tty);
        assert!(c.log_path.is_empty());
        let linux = c.linux.unwrap();
        assert_eq!(linux.resources.unwrap().memory_limit_in_bytes, 1 << 25);
        let sc = linux.security_context.unwrap();
        assert_eq!(sc.run_as_user, Some(cri::Int64Value { value: 0 }));
        assert_eq!(sc.capabilities.unwrap().drop_capabilities, ["NET_RAW"]);
        let ns = sc.namespace_options.unwrap();
        assert_eq!(
            (ns.pid, ns.target_id.as_str()),
            (cri::NamespaceMode::Target as i32, "abc")
        );
    }
}
