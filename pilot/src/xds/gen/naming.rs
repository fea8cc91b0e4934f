//! Names of generated resources, exactly as upstream istiod writes them.

/// Traffic direction of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Outbound,
    Inbound,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

/// `outbound|<port>|<subset>|<host>`.
pub fn cluster_name(direction: Direction, port: u16, subset: &str, host: &str) -> String {
    format!("{}|{port}|{subset}|{host}", direction.as_str())
}

/// `inbound|<port>||`.
pub fn inbound_cluster_name(port: u16) -> String {
    format!("inbound|{port}||")
}

/// A parsed cluster name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterKey<'a> {
    pub direction: Direction,
    pub port: u16,
    pub subset: &'a str,
    pub host: &'a str,
}

/// Parses `direction|port|subset|host`; `None` for other names (`BlackHoleCluster`).
pub fn parse_cluster_name(name: &str) -> Option<ClusterKey<'_>> {
    let mut parts = name.splitn(4, '|');
    let direction = match parts.next()? {
        "outbound" => Direction::Outbound,
        "inbound" => Direction::Inbound,
        _ => return None,
    };
    let port = parts.next()?.parse().ok()?;
    let subset = parts.next()?;
    let host = parts.next()?;
    Some(ClusterKey {
        direction,
        port,
        subset,
        host,
    })
}

/// Parses an outbound cluster name in either form: `outbound|port|subset|host`, or the
/// `sni-dnat` form `outbound_.<port>_.<subset>_.<host>` (a gateway's `AUTO_PASSTHROUGH`
/// clusters, named like the SNI they are reached by).
pub fn parse_any_cluster_name(name: &str) -> Option<ClusterKey<'_>> {
    parse_cluster_name(name).or_else(|| parse_sni_dnat_name(name))
}

/// Parses `outbound_.<port>_.<subset>_.<host>`.
pub fn parse_sni_dnat_name(name: &str) -> Option<ClusterKey<'_>> {
    let rest = name.strip_prefix("outbound_.")?;
    let (port, rest) = rest.split_once("_.")?;
    let (subset, host) = rest.split_once("_.")?;
    Some(ClusterKey {
        direction: Direction::Outbound,
        port: port.parse().ok()?,
        subset,
        host,
    })
}

pub const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
pub const INBOUND_PASSTHROUGH_CLUSTER: &str = "InboundPassthroughCluster";
pub const VIRTUAL_OUTBOUND: &str = "virtualOutbound";
pub const VIRTUAL_INBOUND: &str = "virtualInbound";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_round_trip() {
        let n = cluster_name(
            Direction::Outbound,
            9080,
            "v1",
            "reviews.default.svc.cluster.local",
        );
        assert_eq!(n, "outbound|9080|v1|reviews.default.svc.cluster.local");
        let k = parse_cluster_name(&n).unwrap();
        assert_eq!(
            (k.port, k.subset, k.host),
            (9080, "v1", "reviews.default.svc.cluster.local")
        );
        assert_eq!(inbound_cluster_name(8080), "inbound|8080||");
        assert!(parse_cluster_name(BLACKHOLE_CLUSTER).is_none());
        assert!(parse_cluster_name("outbound|x||h").is_none());
        let k = parse_any_cluster_name("outbound_.9080_.v1_.reviews.default.svc.cluster.local")
            .expect("sni-dnat names parse");
        assert_eq!(
            (k.port, k.subset, k.host),
            (9080, "v1", "reviews.default.svc.cluster.local")
        );
        let k = parse_any_cluster_name("outbound_.80_._.a.example.com").expect("no subset");
        assert_eq!((k.port, k.subset, k.host), (80, "", "a.example.com"));
        assert!(parse_sni_dnat_name("outbound_.x_._.h").is_none());
    }
}
