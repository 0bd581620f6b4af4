//! The address a connector is published at (a cluster's MQTT 5 Server References), by the
//! connector's `<publishedAddressPolicy>` as ActiveMQ's `PublishedAddressPolicy` makes it:
//! the host strategy on the host as written (a wildcard bind standing for the machine's host
//! name), then `hostMapping`, and `portMapping` on the bound port.

use std::net::{IpAddr, ToSocketAddrs};

use crate::config::{PublishedAddressPolicy, PublishedHostStrategy};

/// `(host, port)` to publish for a connector written with `host` and bound on `port`. An IPv6
/// literal comes without brackets. A name `IPADDRESS` cannot resolve stays as it is (logged):
/// publishing something beats publishing nothing, and ActiveMQ would fail the connector's
/// address update there instead.
pub fn published_address(policy: &PublishedAddressPolicy, host: &str, port: u16) -> (String, u16) {
    let host = if is_wildcard(host) {
        host_name().unwrap_or_else(|| host.to_owned())
    } else {
        host.to_owned()
    };
    let host = match policy.host_strategy {
        PublishedHostStrategy::IpAddress => ip_address_of(&host).unwrap_or_else(|| {
            tracing::warn!(%host, "publishedHostStrategy IPADDRESS: the host does not resolve; published as written");
            host.clone()
        }),
        // No reverse or canonical-name lookup (docs/compatibility.md).
        PublishedHostStrategy::Default
        | PublishedHostStrategy::HostName
        | PublishedHostStrategy::Fqdn => host,
    };
    let host = policy
        .host_mapping
        .iter()
        .find(|(from, _)| *from == host)
        .map_or(host, |(_, to)| to.clone());
    let port = policy
        .port_mapping
        .iter()
        .find(|(from, _)| *from == port)
        .map_or(port, |(_, to)| *to);
    (host, port)
}

/// `0.0.0.0`, `::` or no host: every address of the machine.
pub fn is_wildcard(host: &str) -> bool {
    host.is_empty() || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified())
}

/// The machine's host name (Linux: the kernel's; elsewhere `HOSTNAME`).
pub fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

/// `host`'s address: itself when it is an IP literal, else the first IPv4 address the
/// resolver gives (the first of any family without one), as Java's `InetAddress.getByName`
/// prefers IPv4.
fn ip_address_of(host: &str) -> Option<String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(ip.to_string());
    }
    let addrs: Vec<IpAddr> = (host, 0).to_socket_addrs().ok()?.map(|a| a.ip()).collect();
    addrs
        .iter()
        .find(|ip| ip.is_ipv4())
        .or_else(|| addrs.first())
        .map(IpAddr::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(strategy: PublishedHostStrategy) -> PublishedAddressPolicy {
        PublishedAddressPolicy {
            host_strategy: strategy,
            ..Default::default()
        }
    }

    #[test]
    fn default_publishes_as_written_and_a_wildcard_as_the_host_name() {
        let p = policy(PublishedHostStrategy::Default);
        assert_eq!(
            published_address(&p, "10.0.0.1", 1883),
            ("10.0.0.1".into(), 1883)
        );
        assert_eq!(
            published_address(&p, "localhost", 1883),
            ("localhost".into(), 1883)
        );
        let name = host_name().expect("this machine has a host name");
        assert_eq!(published_address(&p, "0.0.0.0", 1), (name.clone(), 1));
        assert_eq!(published_address(&p, "::", 1), (name, 1));
    }

    #[test]
    fn ipaddress_resolves_names_and_keeps_literals() {
        let p = policy(PublishedHostStrategy::IpAddress);
        assert_eq!(published_address(&p, "localhost", 1883).0, "127.0.0.1");
        assert_eq!(published_address(&p, "::1", 1883).0, "::1");
        let wildcard = published_address(&p, "0.0.0.0", 1883).0;
        assert!(
            wildcard.parse::<IpAddr>().is_ok(),
            "{wildcard} is an address"
        );
        let unknown = "no-such-host.invalid";
        assert_eq!(published_address(&p, unknown, 1).0, unknown);
    }

    #[test]
    fn mappings_apply_after_the_strategy() {
        let p = PublishedAddressPolicy {
            host_strategy: PublishedHostStrategy::IpAddress,
            host_mapping: vec![("127.0.0.1".into(), "broker1.example.com".into())],
            port_mapping: vec![(1883, 31883)],
        };
        assert_eq!(
            published_address(&p, "localhost", 1883),
            ("broker1.example.com".into(), 31883)
        );
        assert_eq!(
            published_address(&p, "localhost", 1884),
            ("broker1.example.com".into(), 1884)
        );
    }
}
