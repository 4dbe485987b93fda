//! One network namespace per node, joined by veth pairs to a bridge: separate hosts on one
//! machine, for `cvmm run --netns` and the multi-host tests.
//!
//! Names carry a per-run tag so concurrent runs do not collide; [`NetnsCluster`] removes
//! everything it made when dropped, even after a failure half-way through setup.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

use thiserror::Error;

/// Why the namespaces could not be made.
#[derive(Debug, Error)]
pub enum NetnsError {
    /// `ip` could not be run at all.
    #[error("Failed to run `ip` (install iproute2; network namespaces also need root)")]
    Spawn(#[source] std::io::Error),
    /// An `ip` command failed.
    #[error("`ip {args}` failed: {stderr}")]
    Command {
        /// The arguments.
        args: String,
        /// What it printed.
        stderr: String,
    },
}

fn ip(args: &[&str]) -> Result<(), NetnsError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(NetnsError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetnsError::Command {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Namespaces `cvmm<tag>n<i>` with addresses `10.231.<subnet>.<i+1>/24` on a bridge.
#[derive(Debug)]
pub struct NetnsCluster {
    tag: u32,
    nodes: u32,
    subnet: u8,
    made_bridge: bool,
    made: Vec<u32>,
}

impl NetnsCluster {
    /// Makes `nodes` namespaces.
    pub fn create(nodes: u32) -> Result<Self, NetnsError> {
        let tag = std::process::id() % 100_000;
        let subnet = u8::try_from(tag % 250).expect("below 250");
        let mut cluster = NetnsCluster {
            tag,
            nodes,
            subnet,
            made_bridge: false,
            made: Vec::new(),
        };
        let bridge = cluster.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        cluster.made_bridge = true;
        ip(&["link", "set", &bridge, "mtu", "9000", "up"])?;
        for node in 0..nodes {
            cluster.add_node(node)?;
        }
        Ok(cluster)
    }

    fn bridge(&self) -> String {
        format!("cvmm{}br", self.tag)
    }

    /// The namespace of `node`.
    pub fn namespace(&self, node: u32) -> String {
        format!("cvmm{}n{}", self.tag, node)
    }

    /// The address of `node`.
    pub fn address(&self, node: u32) -> IpAddr {
        let host = u8::try_from(node + 1).expect("at most 16 nodes");
        IpAddr::V4(Ipv4Addr::new(10, 231, self.subnet, host))
    }

    fn add_node(&mut self, node: u32) -> Result<(), NetnsError> {
        let ns = self.namespace(node);
        let outside = format!("cv{}h{}", self.tag, node);
        let inside = format!("cv{}g{}", self.tag, node);
        ip(&["netns", "add", &ns])?;
        self.made.push(node);
        ip(&[
            "link", "add", &outside, "mtu", "9000", "type", "veth", "peer", "name", &inside, "mtu",
            "9000",
        ])?;
        ip(&["link", "set", &inside, "netns", &ns])?;
        ip(&["link", "set", &outside, "master", &self.bridge(), "up"])?;
        let addr = format!("{}/24", self.address(node));
        ip(&["-n", &ns, "addr", "add", &addr, "dev", &inside])?;
        ip(&["-n", &ns, "link", "set", &inside, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// Node count.
    pub fn nodes(&self) -> u32 {
        self.nodes
    }
}

impl Drop for NetnsCluster {
    fn drop(&mut self) {
        for node in self.made.drain(..) {
            // Deleting the namespace deletes the veth pair with it.
            let _ = ip(&["netns", "del", &format!("cvmm{}n{}", self.tag, node)]);
        }
        if self.made_bridge {
            let _ = ip(&["link", "del", &self.bridge()]);
        }
    }
}
