//! Which address a worker binds and which it prints: the node's, one that
//! other machines can dial, never `0.0.0.0` nor a loopback address while
//! the node has another.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};

use super::error::ClusterError;

/// The environment variable Slurm sets in every task: the node's name,
/// which resolves to the address Slurm itself reaches the node by.
pub const SLURM_NODE_ENV: &str = "SLURMD_NODENAME";

/// The address to bind when none is given: under Slurm the node's address
/// (its name, [`SLURM_NODE_ENV`], resolved), with a port the kernel picks;
/// elsewhere every interface (`0.0.0.0:0`).
pub(crate) fn default_listen() -> Result<SocketAddr, ClusterError> {
    match std::env::var(SLURM_NODE_ENV) {
        Ok(node) if !node.is_empty() => Ok(SocketAddr::new(resolve_one(&node)?, 0)),
        _ => Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)),
    }
}

/// The `HOST:PORT` to print for a server bound to `bound`.
///
/// * `advertise` given (`--advertise`, `MINIRAY_ADVERTISE`): that host (a
///   name or an address; an unspecified address is refused).
/// * bound to one address: that address.
/// * bound to every interface: the node's address, the first of: the
///   Slurm node's name resolved ([`SLURM_NODE_ENV`]); the host name
///   resolved, skipping loopback addresses (Debian maps it to
///   `127.0.1.1`; a Kubernetes pod's to its pod IP); the source address of
///   the default route (a UDP `connect`, which sends nothing). Only a node
///   with no other address advertises loopback.
///
/// System calls: `getaddrinfo` (may wait on the resolver), `gethostname`,
/// and for the last resort `socket`, `connect`, `getsockname`.
pub fn advertised(bound: SocketAddr, advertise: Option<&str>) -> Result<String, ClusterError> {
    let port = bound.port();
    if let Some(host) = advertise {
        let host = host.trim();
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(ClusterError::config(
                "--advertise",
                format!("{host:?} is not a host"),
            ));
        }
        return match host.parse::<IpAddr>() {
            Ok(ip) if ip.is_unspecified() => Err(ClusterError::config(
                "--advertise",
                format!("{ip} is no address anyone can dial"),
            )),
            Ok(ip) => Ok(SocketAddr::new(ip, port).to_string()),
            // A name: printed as given, dialled after resolution.
            Err(_) => Ok(format!("{host}:{port}")),
        };
    }
    if !bound.ip().is_unspecified() {
        return Ok(bound.to_string());
    }
    Ok(SocketAddr::new(node_address()?, port).to_string())
}

/// The node's address, as [`advertised`] picks it for a wildcard bind.
pub fn node_address() -> Result<IpAddr, ClusterError> {
    if let Ok(node) = std::env::var(SLURM_NODE_ENV) {
        if !node.is_empty() {
            return resolve_one(&node);
        }
    }
    if let Ok(name) = dns_lookup::get_hostname() {
        if let Ok(ips) = dns_lookup::lookup_host(&name) {
            let ips: Vec<IpAddr> = ips.collect();
            if let Some(ip) = pick(&ips) {
                return Ok(ip);
            }
        }
    }
    if let Some(ip) = default_route_source() {
        return Ok(ip);
    }
    Ok(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// The first IPv4 address that is neither loopback nor unspecified, else
/// the first such IPv6 one.
fn pick(ips: &[IpAddr]) -> Option<IpAddr> {
    let usable = |ip: &&IpAddr| !ip.is_loopback() && !ip.is_unspecified();
    ips.iter()
        .filter(usable)
        .find(|ip| ip.is_ipv4())
        .or_else(|| ips.iter().find(usable))
        .copied()
}

/// `name`'s first address (IPv4 first), or why not.
fn resolve_one(name: &str) -> Result<IpAddr, ClusterError> {
    let ips: Vec<IpAddr> = dns_lookup::lookup_host(name)
        .map_err(|e| ClusterError::Resolve {
            name: name.to_string(),
            reason: std::io::Error::from(e).to_string(),
        })?
        .collect();
    ips.iter()
        .find(|ip| ip.is_ipv4())
        .or(ips.first())
        .copied()
        .ok_or_else(|| ClusterError::Resolve {
            name: name.to_string(),
            reason: "no address".to_string(),
        })
}

/// The local address the kernel would send from towards a documentation
/// address (192.0.2.1, TEST-NET-1): a UDP `connect` only picks a route,
/// no packet leaves. `None` without a route or with only loopback.
fn default_route_source() -> Option<IpAddr> {
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    s.connect((Ipv4Addr::new(192, 0, 2, 1), 9)).ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_advertise_wins_and_a_wildcard_one_is_refused() {
        let bound: SocketAddr = "0.0.0.0:7000".parse().expect("addr");
        assert_eq!(
            advertised(bound, Some("10.0.0.5")).expect("ip"),
            "10.0.0.5:7000"
        );
        assert_eq!(
            advertised(bound, Some("worker-3.svc")).expect("name"),
            "worker-3.svc:7000"
        );
        assert_eq!(advertised(bound, Some("::1")).expect("v6"), "[::1]:7000");
        assert!(advertised(bound, Some("0.0.0.0")).is_err());
        assert!(advertised(bound, Some(" ")).is_err());
    }

    #[test]
    fn a_bound_address_is_printed_as_bound() {
        let bound: SocketAddr = "127.0.0.11:34325".parse().expect("addr");
        assert_eq!(advertised(bound, None).expect("bound"), "127.0.0.11:34325");
    }

    #[test]
    fn a_wildcard_bind_never_prints_the_wildcard() {
        let bound: SocketAddr = "0.0.0.0:7000".parse().expect("addr");
        let shown = advertised(bound, None).expect("node address");
        assert!(!shown.starts_with("0.0.0.0"), "{shown}");
        let ip: SocketAddr = shown.parse().expect("an address");
        // Loopback only when the node has nothing else.
        if ip.ip().is_loopback() {
            assert!(default_route_source().is_none());
        }
    }

    #[test]
    fn pick_skips_loopback_and_prefers_ipv4() {
        let ips: Vec<IpAddr> = ["127.0.1.1", "fe80::1", "10.1.1.1"]
            .iter()
            .map(|s| s.parse().expect("ip"))
            .collect();
        assert_eq!(pick(&ips), Some("10.1.1.1".parse().expect("ip")));
        assert_eq!(pick(&ips[..1]), None);
    }
}
