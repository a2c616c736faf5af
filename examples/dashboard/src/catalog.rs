//! The service catalog a login stores in the session, shaped like the one
//! Keystone hands Horizon: services, each with public, internal and admin
//! endpoints in every region. Its size is set by `DASHBOARD_CATALOG_BYTES`,
//! so the engines' handling of large sessions gets exercised.

use ring::digest;
use serde::{Deserialize, Serialize};

/// The regions of the demo cloud; a login starts in the first.
pub const REGIONS: [&str; 2] = ["RegionOne", "RegionTwo"];

/// The three interfaces Keystone lists for each endpoint.
const INTERFACES: [&str; 3] = ["public", "internal", "admin"];

/// Service types of an OpenStack cloud: (type, name, port, path).
const SERVICES: [(&str, &str, u16, &str); 16] = [
    ("identity", "keystone", 5000, "/v3"),
    ("compute", "nova", 8774, "/v2.1"),
    ("network", "neutron", 9696, ""),
    ("image", "glance", 9292, ""),
    ("volumev3", "cinderv3", 8776, "/v3"),
    ("object-store", "swift", 8080, "/v1"),
    ("orchestration", "heat", 8004, "/v1"),
    ("placement", "placement", 8778, ""),
    ("load-balancer", "octavia", 9876, ""),
    ("dns", "designate", 9001, ""),
    ("key-manager", "barbican", 9311, ""),
    ("metric", "gnocchi", 8041, ""),
    ("alarming", "aodh", 8042, ""),
    ("container-infra", "magnum", 9511, "/v1"),
    ("sharev2", "manila", 8786, "/v2"),
    ("baremetal", "ironic", 6385, ""),
];

/// One service of the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// Keystone's id of the service.
    pub id: String,
    /// The service type (`compute`, `identity`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// The service name (`nova`, `keystone`, ...).
    pub name: String,
    /// Where it answers.
    pub endpoints: Vec<Endpoint>,
}

/// One endpoint of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Keystone's id of the endpoint.
    pub id: String,
    /// `public`, `internal` or `admin`.
    pub interface: String,
    /// The region name.
    pub region: String,
    /// The region id (the same as the name, as in most clouds).
    pub region_id: String,
    /// The endpoint's URL.
    pub url: String,
}

/// A catalog whose JSON is as large as fits in `target_bytes` (within one
/// endpoint's size, about 200 bytes, below it). The same for every call with
/// the same target, so it is built once per process.
pub fn build(target_bytes: usize) -> Vec<Service> {
    // Sizes are counted as the catalog grows: serializing the whole of it
    // after each endpoint would be quadratic in a multi-megabyte catalog.
    let mut catalog: Vec<Service> = Vec::new();
    let mut total = 2; // `[]`
    for n in 0.. {
        let (kind, name, port, path) = SERVICES[n % SERVICES.len()];
        // Past the list, further copies of each service (a second Swift, ...).
        let round = n / SERVICES.len();
        let (kind, name) = if round == 0 {
            (kind.to_owned(), name.to_owned())
        } else {
            (
                format!("{kind}-{}", round + 1),
                format!("{name}-{}", round + 1),
            )
        };
        let mut service = Service {
            id: ident(&format!("service/{n}")),
            kind,
            name,
            endpoints: Vec::new(),
        };
        let mut size = json_len(&service) + usize::from(!catalog.is_empty());
        let mut complete = true;
        'endpoints: for region in REGIONS {
            for interface in INTERFACES {
                let endpoint = endpoint(n, region, interface, port, path, round);
                let extra = json_len(&endpoint) + usize::from(!service.endpoints.is_empty());
                if total + size + extra > target_bytes {
                    complete = false;
                    break 'endpoints;
                }
                size += extra;
                service.endpoints.push(endpoint);
            }
        }
        // A service is listed only with at least one endpoint, as Keystone
        // lists them in a token's catalog.
        if !service.endpoints.is_empty() {
            total += size;
            catalog.push(service);
        }
        if !complete {
            break;
        }
    }
    catalog
}

fn endpoint(
    n: usize,
    region: &str,
    interface: &str,
    port: u16,
    path: &str,
    round: usize,
) -> Endpoint {
    let host = region.to_ascii_lowercase();
    let url = match interface {
        "public" => format!("https://{host}.cloud.example.test:{port}{path}"),
        _ => format!(
            "http://{host}-{interface}.cloud.example.test:{}{path}",
            usize::from(port) + round
        ),
    };
    Endpoint {
        id: ident(&format!("endpoint/{n}/{region}/{interface}")),
        interface: interface.to_owned(),
        region: region.to_owned(),
        region_id: region.to_owned(),
        url,
    }
}

/// A Keystone-style id (32 hex digits), the same for the same name.
pub(crate) fn ident(name: &str) -> String {
    let hash = digest::digest(&digest::SHA256, name.as_bytes());
    hash.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The length of `value` as compact JSON.
pub(crate) fn json_len(value: &impl Serialize) -> usize {
    serde_json::to_vec(value).map_or(0, |v| v.len())
}

/// The public endpoint of each service in `region`: what the overview lists.
pub(crate) fn public_in<'a>(
    catalog: &'a [Service],
    region: &'a str,
) -> impl Iterator<Item = (&'a Service, &'a Endpoint)> + 'a {
    catalog.iter().filter_map(move |s| {
        s.endpoints
            .iter()
            .find(|e| e.interface == "public" && e.region == region)
            .map(|e| (s, e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_follows_the_target() {
        for target in [0, 2, 300, 1000, 6 * 1024, 10 * 1024, 40 * 1024, 1 << 20] {
            let catalog = build(target);
            let len = json_len(&catalog);
            assert!(len <= target.max(2), "{target}: {len}");
            if target >= 1000 {
                assert!(len + 400 > target, "{target}: only {len}");
            }
        }
        assert!(build(0).is_empty());
    }

    #[test]
    fn default_catalog_looks_like_keystones() {
        let catalog = build(10 * 1024);
        assert!(catalog.len() >= 8, "{} services", catalog.len());
        let nova = catalog
            .iter()
            .find(|s| s.kind == "compute")
            .expect("a compute service");
        assert_eq!(nova.endpoints.len(), 6);
        assert_eq!(nova.id.len(), 32);
        let json = serde_json::to_value(nova).expect("json");
        assert_eq!(json["type"], "compute");
        assert_eq!(json["endpoints"][0]["interface"], "public");
        assert_eq!(build(10 * 1024), catalog, "the same for the same target");
        let public: Vec<_> = public_in(&catalog, "RegionOne").collect();
        assert_eq!(public.len(), catalog.len());
        assert!(
            public
                .iter()
                .all(|(_, e)| e.url.starts_with("https://regionone."))
        );
    }

    #[test]
    fn large_catalogs_repeat_services_under_new_names() {
        let catalog = build(64 * 1024);
        assert!(catalog.len() > SERVICES.len());
        let mut names: Vec<&str> = catalog.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), catalog.len());
    }
}
