//! True two-way network partitions with Linux network namespaces (needs root and `ip`).
//!
//! Each member runs in its own namespace (`ip netns exec`) with two links to the root namespace:
//!
//! - a *peer* veth whose host end sits on the run's bridge A. Members talk Raft over this
//!   network (10.213.<slot>.0/24). A partition moves the host ends of one side onto bridge B: no
//!   L2 path is left between the sides, so both directions are cut and existing TCP connections
//!   stall as behind a dead link. Healing moves them back.
//! - a *client* veth, point to point (10.214.<slot>.4i+1 <-> 4i+2 /30), never cut: the workload
//!   and the checkers in the root namespace reach every member all the time.
//!
//! A run takes a free *slot* (1..=250) by creating its bridge `cnb<slot>a` (creation fails when
//! another run holds the slot, so parallel runs never share addresses); the bridge's alias names
//! the owning pid so a later run removes what a killed run left behind. Everything is removed on
//! Drop (deleting a namespace deletes its veths).
//!
//! `slow-net` degrades one member's peer link in both directions: netem (delay with jitter and
//! loss) where the kernel has it, else a token bucket (tbf) at a low rate with a short queue
//! (queueing delay under load, drops past the queue): some kernels ship without sch_netem.

use std::process::Command;

/// Errors from setting up or changing the namespaces.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("`ip {args}` failed: {stderr}")]
    Command { args: String, stderr: String },
    #[error("cannot run `{program}`: {source}")]
    Spawn {
        program: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("network namespaces need root (euid {0})")]
    NotRoot(u32),
    #[error("no free network slot (10.213.1-250.0/24 all taken by other runs)")]
    NoSlot,
}

fn run(program: &'static str, args: &[&str]) -> Result<String, NetnsError> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| NetnsError::Spawn { program, source })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NetnsError::Command {
            args: format!("{program} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn ip(args: &[&str]) -> Result<String, NetnsError> {
    run("ip", args)
}

/// The port every member's client listener uses inside its namespace (ports are per namespace).
pub const CLIENT_PORT: u16 = 2379;
/// The first peer port; a member re-added by the nemesis takes the next one (a new identity).
pub const PEER_PORT: u16 = 2380;

/// One member's place in the network.
#[derive(Debug, Clone)]
pub struct NsMember {
    pub ns: String,
    pub peer_ip: String,
    pub client_ip: String,
    host_peer: String,
}

/// A degraded link's kind, for the fault's note.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slowness {
    Netem,
    TokenBucket,
}

/// The namespaces, veths and bridges of one run.
pub struct Netns {
    slot: u8,
    pid: u32,
    pub members: Vec<NsMember>,
    bridge_a: String,
    bridge_b: String,
}

impl Netns {
    /// Checks that namespaces can be made here (root, `ip netns add` works); the reason if not.
    pub fn probe() -> Result<(), NetnsError> {
        // SAFETY: geteuid(2) reads the caller's credentials; no memory is touched.
        let euid = unsafe { libc::geteuid() };
        if euid != 0 {
            return Err(NetnsError::NotRoot(euid));
        }
        let name = format!("cairn-probe-{}", std::process::id());
        ip(&["netns", "add", &name])?;
        ip(&["netns", "del", &name])?;
        Ok(())
    }

    /// Creates `n` member namespaces wired to a fresh pair of bridges.
    pub fn create(n: usize) -> Result<Netns, NetnsError> {
        remove_stale();
        let pid = std::process::id();
        let first = u8::try_from(pid % 250).unwrap_or(0);
        let mut slot = None;
        for k in 0..250u32 {
            let s = u8::try_from((u32::from(first) + k) % 250 + 1).unwrap_or(1);
            if ip(&["link", "add", &format!("cnb{s}a"), "type", "bridge"]).is_ok() {
                slot = Some(s);
                break;
            }
        }
        let slot = slot.ok_or(NetnsError::NoSlot)?;
        let mut net = Netns {
            slot,
            pid,
            members: Vec::new(),
            bridge_a: format!("cnb{slot}a"),
            bridge_b: format!("cnb{slot}b"),
        };
        // From here on, Drop cleans up whatever was made.
        let alias = format!("cairn-torture pid={pid}");
        ip(&["link", "set", "dev", &net.bridge_a, "alias", &alias])?;
        ip(&["link", "add", &net.bridge_b, "type", "bridge"])?;
        ip(&["link", "set", "dev", &net.bridge_b, "alias", &alias])?;
        ip(&["link", "set", &net.bridge_a, "up"])?;
        ip(&["link", "set", &net.bridge_b, "up"])?;
        for i in 0..n {
            net.add_member(i)?;
        }
        Ok(net)
    }

    fn add_member(&mut self, i: usize) -> Result<(), NetnsError> {
        let s = self.slot;
        let ns = format!("cairn-s{s}-p{}-m{i}", self.pid);
        let host_peer = format!("cn{s}p{i}");
        let host_client = format!("cn{s}c{i}");
        let peer_ip = format!("10.213.{s}.{}", 10 + i);
        let client_host_ip = format!("10.214.{s}.{}", 4 * i + 1);
        let client_ip = format!("10.214.{s}.{}", 4 * i + 2);
        ip(&["netns", "add", &ns])?;
        self.members.push(NsMember {
            ns: ns.clone(),
            peer_ip: peer_ip.clone(),
            client_ip: client_ip.clone(),
            host_peer: host_peer.clone(),
        });
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&[
            "link", "add", &host_peer, "type", "veth", "peer", "name", "peer", "netns", &ns,
        ])?;
        ip(&["link", "set", &host_peer, "master", &self.bridge_a])?;
        ip(&["link", "set", &host_peer, "up"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{peer_ip}/24"),
            "dev",
            "peer",
        ])?;
        ip(&["-n", &ns, "link", "set", "peer", "up"])?;
        ip(&[
            "link",
            "add",
            &host_client,
            "type",
            "veth",
            "peer",
            "name",
            "client",
            "netns",
            &ns,
        ])?;
        ip(&[
            "addr",
            "add",
            &format!("{client_host_ip}/30"),
            "dev",
            &host_client,
        ])?;
        ip(&["link", "set", &host_client, "up"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{client_ip}/30"),
            "dev",
            "client",
        ])?;
        ip(&["-n", &ns, "link", "set", "client", "up"])?;
        Ok(())
    }

    /// Cuts the members in `side` off from the others, both ways. Members not named stay on
    /// bridge A; the named ones move to bridge B (so they still reach each other).
    pub fn partition(&self, side: &[usize]) -> Result<(), NetnsError> {
        for (i, m) in self.members.iter().enumerate() {
            let bridge = if side.contains(&i) {
                &self.bridge_b
            } else {
                &self.bridge_a
            };
            ip(&["link", "set", &m.host_peer, "master", bridge])?;
        }
        Ok(())
    }

    /// Every member back on one bridge, every link at full speed.
    pub fn heal(&self) -> Result<(), NetnsError> {
        self.partition(&[])?;
        for i in 0..self.members.len() {
            self.fast(i);
        }
        Ok(())
    }

    /// Degrades member `i`'s peer link in both directions (see the module comment).
    pub fn slow(&self, i: usize) -> Result<Slowness, NetnsError> {
        let Some(m) = self.members.get(i) else {
            return Ok(Slowness::Netem);
        };
        let netem = [
            "root", "netem", "delay", "80ms", "40ms", "loss", "3%", "limit", "10000",
        ];
        let tbf = [
            "root", "tbf", "rate", "256kbit", "burst", "4kb", "latency", "150ms",
        ];
        let host = |q: &[&str]| {
            let mut a = vec!["qdisc", "replace", "dev", m.host_peer.as_str()];
            a.extend_from_slice(q);
            run("tc", &a)
        };
        let inside = |q: &[&str]| {
            let mut a = vec!["-n", m.ns.as_str(), "qdisc", "replace", "dev", "peer"];
            a.extend_from_slice(q);
            run("tc", &a)
        };
        if host(&netem).is_ok() {
            inside(&netem)?;
            return Ok(Slowness::Netem);
        }
        host(&tbf)?;
        inside(&tbf)?;
        Ok(Slowness::TokenBucket)
    }

    /// Removes what `slow` added (a link without a root qdisc is already fast).
    pub fn fast(&self, i: usize) {
        if let Some(m) = self.members.get(i) {
            let _ = run("tc", &["qdisc", "del", "dev", &m.host_peer, "root"]);
            let _ = run("tc", &["-n", &m.ns, "qdisc", "del", "dev", "peer", "root"]);
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for m in &self.members {
            let _ = ip(&["netns", "del", &m.ns]);
        }
        let _ = ip(&["link", "del", &self.bridge_a]);
        let _ = ip(&["link", "del", &self.bridge_b]);
    }
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The pid in a namespace name `cairn-s<slot>-p<pid>-m<i>`.
fn ns_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("cairn-s")?;
    let (_, rest) = rest.split_once("-p")?;
    let (pid, _) = rest.split_once("-m")?;
    pid.parse().ok()
}

/// The pid in a bridge alias `cairn-torture pid=<pid>`.
fn alias_owner(line: &str) -> Option<u32> {
    let (_, rest) = line.split_once("alias cairn-torture pid=")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// Removes namespaces and bridges left by runs whose process is gone (a killed run cannot
/// clean up; its slot would stay taken and its namespaces would pile up).
pub fn remove_stale() {
    if let Ok(list) = ip(&["netns", "list"]) {
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if ns_owner(name).is_some_and(|p| !pid_alive(p)) {
                let _ = ip(&["netns", "del", name]);
            }
        }
    }
    if let Ok(links) = ip(&["-o", "link", "show", "type", "bridge"]) {
        for line in links.lines() {
            let Some(name) = line.split(':').nth(1).map(str::trim) else {
                continue;
            };
            if name.starts_with("cnb") && alias_owner(line).is_some_and(|p| !pid_alive(p)) {
                let _ = ip(&["link", "del", name]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_read_back_from_names_and_aliases() {
        assert_eq!(ns_owner("cairn-s12-p4567-m0"), Some(4567));
        assert_eq!(ns_owner("cairn-probe-1"), None);
        assert_eq!(ns_owner("other"), None);
        let line =
            "9: cnb3a: <BROADCAST,MULTICAST,UP> mtu 1500 ... \\    alias cairn-torture pid=77";
        assert_eq!(alias_owner(line), Some(77));
        assert_eq!(alias_owner("9: cnb3a: <UP> mtu 1500"), None);
    }
}
