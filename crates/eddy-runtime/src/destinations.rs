//! Which addresses a function's outgoing requests may reach, checked on the addresses a
//! connection really goes to (after name resolution, so a name whose DNS the function's
//! author controls cannot point it inside), not on the host name the guest wrote.
//!
//! Refused unless the node's operator allows the network (`outbound_allow_networks`):
//! loopback, private (RFC 1918, IPv6 unique-local), link-local (cloud metadata at
//! 169.254.169.254), shared address space (100.64.0.0/10), unspecified, multicast,
//! broadcast and reserved addresses, and IPv6 forms that embed such an IPv4 address.
//! Refused always: the node's own control API. A deployer's allowlist cannot change either.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub use ipnet::IpNet;

/// What outgoing requests may not reach, and the networks the operator opened anyway.
#[derive(Clone, Debug, Default)]
pub struct DestinationPolicy {
    /// Networks functions may reach although their addresses are of a refused kind.
    pub allow_networks: Vec<IpNet>,
    /// The node's control API listener: never reachable.
    pub control_api: Option<SocketAddr>,
}

/// Why a destination was refused; shown in the guest's log and in `eddy logs`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub addr: SocketAddr,
    /// What kind of address it is (`loopback`, `private`, ...), or `None` for the control API.
    pub kind: Option<&'static str>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Some(kind) => write!(
                f,
                "{} is a {kind} address, which functions may not reach unless the node's operator allows its network (outbound_allow_networks = [\"{}\"] in the node's config)",
                self.addr.ip(),
                host_network(self.addr.ip())
            ),
            None => write!(
                f,
                "{} is this node's control API, which functions may never reach",
                self.addr
            ),
        }
    }
}

impl std::error::Error for Refusal {}

impl DestinationPolicy {
    /// Whether an outgoing connection may go to `ip` (any port but the control API's).
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), &'static str> {
        match refused_kind(ip) {
            Some(kind) if !self.allow_networks.iter().any(|net| net.contains(&ip)) => Err(kind),
            _ => Ok(()),
        }
    }

    /// Whether an outgoing connection may go to `addr`. `local` is the connection's own
    /// address when it is already open: a peer on this machine's own address is this machine.
    pub fn check(&self, addr: SocketAddr, local: Option<SocketAddr>) -> Result<(), Refusal> {
        let addr = SocketAddr::new(canonical(addr.ip()), addr.port());
        if let Err(kind) = self.check_ip(addr.ip()) {
            return Err(Refusal {
                addr,
                kind: Some(kind),
            });
        }
        if let Some(api) = self.control_api {
            let this_machine = addr.ip().is_loopback()
                || local.is_some_and(|local| canonical(local.ip()) == addr.ip());
            let same = addr == api
                || (api.port() == addr.port() && api.ip().is_unspecified() && this_machine);
            if same {
                return Err(Refusal { addr, kind: None });
            }
        }
        Ok(())
    }
}

/// An IPv4 address written as IPv6 (`::ffff:a.b.c.d`) is that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The kind of address functions may not reach by default, if `ip` is one.
pub fn refused_kind(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => refused_v6(v6),
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(if ip.is_loopback() {
        "loopback"
    } else if ip.is_private() {
        "private"
    } else if ip.is_link_local() {
        "link-local"
    } else if a == 100 && (64..128).contains(&b) {
        "shared (carrier-grade NAT)"
    } else if a == 0 {
        "unspecified"
    } else if ip.is_multicast() {
        "multicast"
    } else if ip.is_broadcast() || a >= 240 {
        "reserved"
    } else {
        return None;
    })
}

fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    // Forms that carry an IPv4 address: NAT64 (64:ff9b::/96), 6to4 (2002::/16) and the
    // deprecated IPv4-compatible ::a.b.c.d.
    let embedded = if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        Some(Ipv4Addr::from_bits(ip.to_bits() as u32))
    } else if segments[0] == 0x2002 {
        Some(Ipv4Addr::from_bits((ip.to_bits() >> 80) as u32))
    } else if segments[..6] == [0; 6] && segments[6] != 0 {
        Some(Ipv4Addr::from_bits(ip.to_bits() as u32))
    } else {
        None
    };
    if let Some(v4) = embedded {
        return refused_v4(v4);
    }
    Some(if ip.is_loopback() {
        "loopback"
    } else if ip.is_unspecified() {
        "unspecified"
    } else if ip.is_unique_local() {
        "private (unique-local)"
    } else if ip.is_unicast_link_local() {
        "link-local"
    } else if ip.is_multicast() {
        "multicast"
    } else if segments[0] & 0xffc0 == 0xfec0 {
        "private (site-local)"
    } else {
        return None;
    })
}

/// The narrowest network to allow for `ip`: the address itself.
fn host_network(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

/// Resolves names with the system resolver and keeps only the addresses the policy allows;
/// a name with none left fails with the `Refusal` of its first address.
#[derive(Clone)]
pub(crate) struct GuardedResolver {
    inner: GaiResolver,
    policy: Arc<DestinationPolicy>,
}

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let resolving = self.inner.call(name);
        let policy = self.policy.clone();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> = resolving.await?.collect();
            let allowed: Vec<SocketAddr> = resolved
                .iter()
                .copied()
                .filter(|addr| policy.check_ip(addr.ip()).is_ok())
                .collect();
            match resolved.first() {
                Some(&first) if allowed.is_empty() => {
                    let refusal = policy.check(first, None).expect_err("no address allowed");
                    Err(std::io::Error::new(
                        std::io::ErrorKind::PermissionDenied,
                        refusal,
                    ))
                }
                _ => Ok(allowed.into_iter()),
            }
        })
    }
}

/// The pooled client's TCP connector: connects only to addresses the policy allows. Names
/// are filtered when resolved; an IP address in the URL is checked before connecting; and
/// the address a connection really reached is checked once more (with its port, for the
/// control API) before any byte is sent.
#[derive(Clone)]
pub(crate) struct GuardedConnector {
    inner: HttpConnector<GuardedResolver>,
    policy: Arc<DestinationPolicy>,
}

impl GuardedConnector {
    /// `configure` sets the connector's timeouts and socket options.
    pub(crate) fn new(
        policy: Arc<DestinationPolicy>,
        configure: impl FnOnce(&mut HttpConnector<GuardedResolver>),
    ) -> GuardedConnector {
        let mut inner = HttpConnector::new_with_resolver(GuardedResolver {
            inner: GaiResolver::new(),
            policy: policy.clone(),
        });
        configure(&mut inner);
        GuardedConnector { inner, policy }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<http::Uri> for GuardedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let literal = uri
            .host()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .and_then(|h| h.parse::<IpAddr>().ok());
        if let Some(ip) = literal {
            let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
                Some("http") => 80,
                _ => 443,
            });
            if let Err(refusal) = self.policy.check(SocketAddr::new(ip, port), None) {
                return Box::pin(async move { Err(refusal.into()) });
            }
        }
        let connecting = self.inner.call(uri);
        let policy = self.policy.clone();
        Box::pin(async move {
            let stream = connecting.await?;
            let peer = stream.inner().peer_addr()?;
            let local = stream.inner().local_addr().ok();
            policy.check(peer, local)?;
            Ok(stream)
        })
    }
}

/// The refusal behind a failed connection, if that is why it failed.
pub(crate) fn refusal_in(error: &(dyn std::error::Error + 'static)) -> Option<Refusal> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(refusal) = e.downcast_ref::<Refusal>() {
            return Some(refusal.clone());
        }
        if let Some(refusal) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<Refusal>())
        {
            return Some(refusal.clone());
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(ip: &str) -> Option<&'static str> {
        refused_kind(ip.parse().unwrap())
    }

    #[test]
    fn internal_addresses_are_refused_and_public_ones_are_not() {
        for (ip, expected) in [
            ("127.0.0.1", "loopback"),
            ("127.5.6.7", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.100.100.200", "shared (carrier-grade NAT)"),
            ("0.0.0.0", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "reserved"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fd00::1", "private (unique-local)"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("2002:0a00:0001::1", "private"),
            ("::10.0.0.1", "private"),
        ] {
            assert_eq!(kind(ip), Some(expected), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "172.32.0.1",
            "100.128.0.1",
        ] {
            assert_eq!(kind(ip), None, "{ip}");
        }
    }

    #[test]
    fn the_operator_opens_networks_and_never_the_control_api() {
        let api: SocketAddr = "127.0.0.1:8081".parse().unwrap();
        let policy = DestinationPolicy {
            allow_networks: vec!["127.0.0.0/8".parse().unwrap()],
            control_api: Some(api),
        };
        assert!(
            policy
                .check("127.0.0.1:9000".parse().unwrap(), None)
                .is_ok()
        );
        assert!(
            policy
                .check("[::ffff:127.0.0.1]:9000".parse().unwrap(), None)
                .is_ok()
        );
        assert!(policy.check("10.0.0.1:80".parse().unwrap(), None).is_err());
        let refusal = policy.check(api, None).unwrap_err();
        assert_eq!(refusal.kind, None);
        assert!(refusal.to_string().contains("control API"), "{refusal}");

        // A control API on every address: its port on this machine's addresses.
        let everywhere = DestinationPolicy {
            allow_networks: vec!["0.0.0.0/0".parse().unwrap()],
            control_api: Some("0.0.0.0:8081".parse().unwrap()),
        };
        let own: SocketAddr = "192.0.2.10:8081".parse().unwrap();
        assert!(
            everywhere
                .check(own, Some("192.0.2.10:40000".parse().unwrap()))
                .is_err()
        );
        assert!(
            everywhere
                .check("127.0.0.1:8081".parse().unwrap(), None)
                .is_err()
        );
        assert!(
            everywhere
                .check(own, Some("192.0.2.99:40000".parse().unwrap()))
                .is_ok()
        );
        assert!(
            everywhere
                .check("192.0.2.10:8080".parse().unwrap(), None)
                .is_ok()
        );
    }

    #[test]
    fn a_refusal_says_which_address_and_how_to_allow_it() {
        let refusal = DestinationPolicy::default()
            .check("169.254.169.254:80".parse().unwrap(), None)
            .unwrap_err();
        let text = refusal.to_string();
        assert!(
            text.contains("169.254.169.254 is a link-local address"),
            "{text}"
        );
        assert!(
            text.contains("outbound_allow_networks = [\"169.254.169.254/32\"]"),
            "{text}"
        );
        let wrapped = std::io::Error::new(std::io::ErrorKind::PermissionDenied, refusal.clone());
        assert_eq!(refusal_in(&wrapped), Some(refusal));
    }
}
