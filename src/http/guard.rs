//! Which hosts an `http` node may call (server-side request forgery): the
//! `http.allow_hosts` list, and without it every host but link-local and cloud-metadata
//! addresses. A flow's URL is a template, so a user's answer can steer it; the metadata
//! service of the machine the bot runs on hands out its cloud credentials.
//!
//! Checked three times: the URL before anything is sent ([`HostPolicy::check_url`], which
//! also covers a literal IP, never resolved), every redirect hop (the same check, from the
//! client's redirect policy), and the addresses a name resolves to, at connect time
//! ([`GuardedResolver`]), so a name pointing at 169.254.169.254 is refused too.
//!
//! Loopback and private ranges are allowed by default: a bot's backend often runs on the
//! same machine or network, and a bot that may call them is what its designer wrote.
//! `allow_hosts` narrows that down.

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// Names of cloud metadata services (Google Cloud; `metadata` is its short form).
const METADATA_NAMES: [&str; 2] = ["metadata.google.internal", "metadata"];
/// Cloud metadata addresses outside link-local: AWS over IPv6, Alibaba Cloud.
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);
const METADATA_V4: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 200);

/// One `http.allow_hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedHost {
    /// A host name, lower-case, without a trailing dot (IDNs in punycode).
    Name(String),
    Ip(IpAddr),
}

/// Why an `allow_hosts` entry is not a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadHost {
    pub message: String,
    pub hint: String,
}

/// Reads an `allow_hosts` entry: a host name or an IP address (IPv6 with or without
/// brackets), nothing else.
pub fn parse_allowed_host(entry: &str) -> Result<AllowedHost, BadHost> {
    let bad = |message: String, hint: &str| BadHost {
        message,
        hint: hint.to_string(),
    };
    let trimmed = entry.trim();
    if trimmed.is_empty() {
        return Err(bad(
            "an empty host".into(),
            "write a host name like api.example.com, or an IP address",
        ));
    }
    if trimmed.contains("://") || trimmed.contains('/') {
        return Err(bad(
            format!("\"{entry}\" is a URL, not a host"),
            "list hosts only, e.g. api.example.com for https://api.example.com/v1 (any port and path is allowed)",
        ));
    }
    if trimmed.contains('*') {
        return Err(bad(
            format!("\"{entry}\" has a wildcard"),
            "wildcards are not supported; list each host",
        ));
    }
    let bare = trimmed
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(trimmed);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(AllowedHost::Ip(ip.to_canonical()));
    }
    if trimmed.contains(':') {
        return Err(bad(
            format!("\"{entry}\" has a port"),
            "any port of a listed host may be called; write the host alone, e.g. api.example.com",
        ));
    }
    // The URL parser normalises a name the way it will be compared: lower-case, IDNA.
    let host = Url::parse(&format!("http://{trimmed}/"))
        .ok()
        .filter(|u| u.username().is_empty() && u.password().is_none())
        .and_then(|u| u.host().map(|h| h.to_owned()));
    match host {
        Some(url::Host::Domain(name)) => Ok(AllowedHost::Name(normal_name(&name))),
        Some(url::Host::Ipv4(ip)) => Ok(AllowedHost::Ip(IpAddr::V4(ip))),
        Some(url::Host::Ipv6(ip)) => Ok(AllowedHost::Ip(IpAddr::V6(ip).to_canonical())),
        None => Err(bad(
            format!("\"{entry}\" is not a host name"),
            "write a host name like api.example.com, or an IP address",
        )),
    }
}

fn normal_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Why a call was refused; no connection was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// What makes an address special: link-local or cloud metadata, callable only when
/// listed. `None` for every other address.
fn special(ip: IpAddr) -> Option<&'static str> {
    match ip.to_canonical() {
        IpAddr::V4(v4) if v4.is_link_local() || v4 == METADATA_V4 => Some(
            if v4 == Ipv4Addr::new(169, 254, 169, 254) || v4 == METADATA_V4 {
                "a cloud metadata address"
            } else {
                "a link-local address"
            },
        ),
        IpAddr::V4(_) => None,
        IpAddr::V6(v6) if v6 == METADATA_V6 => Some("a cloud metadata address"),
        IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80 => Some("a link-local address"),
        IpAddr::V6(_) => None,
    }
}

/// `http.allow_hosts`, parsed.
#[derive(Debug, Clone, Default)]
pub struct HostPolicy {
    allowed: Option<Vec<AllowedHost>>,
}

impl HostPolicy {
    /// Fails on an entry that is not a host (the loader reports those first).
    pub fn new(allow_hosts: Option<&[String]>) -> Result<HostPolicy, String> {
        let allowed = match allow_hosts {
            None => None,
            Some(list) => Some(
                list.iter()
                    .map(|e| {
                        parse_allowed_host(e).map_err(|b| {
                            format!("http.allow_hosts: {}; hint: {}", b.message, b.hint)
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        Ok(HostPolicy { allowed })
    }

    fn lists(&self, host: &AllowedHost) -> bool {
        self.allowed.as_ref().is_some_and(|l| l.contains(host))
    }

    /// Whether `url` may be called: http or https, and its host allowed. A literal IP is
    /// checked here, since it is never resolved.
    pub fn check_url(&self, url: &Url) -> Result<(), Refused> {
        match url.scheme() {
            "http" | "https" => {}
            other => {
                return Err(Refused(format!(
                    "only http and https URLs may be called, not {other}:"
                )));
            }
        }
        let host = match url.host() {
            Some(url::Host::Domain(name)) => AllowedHost::Name(normal_name(name)),
            Some(url::Host::Ipv4(ip)) => AllowedHost::Ip(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => AllowedHost::Ip(IpAddr::V6(ip).to_canonical()),
            None => return Err(Refused("the URL has no host".into())),
        };
        let shown = url.host_str().unwrap_or_default();
        if self.allowed.is_some() {
            return if self.lists(&host) {
                Ok(())
            } else {
                Err(Refused(format!("{shown} is not in http.allow_hosts")))
            };
        }
        match &host {
            AllowedHost::Name(name) if METADATA_NAMES.contains(&name.as_str()) => {
                Err(Refused(format!(
                    "{shown} is a cloud metadata service; list it in http.allow_hosts to call it"
                )))
            }
            AllowedHost::Name(_) => Ok(()),
            AllowedHost::Ip(ip) => match special(*ip) {
                Some(what) => Err(Refused(format!(
                    "{shown} is {what}; list it in http.allow_hosts to call it"
                ))),
                None => Ok(()),
            },
        }
    }

    /// The addresses `name` resolved to that may be connected to. A link-local or
    /// metadata address is kept only when it, or the name, is listed in `allow_hosts`;
    /// with `allow_hosts`, an unlisted name keeps nothing. Refused when nothing is left.
    pub fn filter_addrs(
        &self,
        name: &str,
        addrs: Vec<SocketAddr>,
    ) -> Result<Vec<SocketAddr>, Refused> {
        let name = normal_name(name);
        let name_listed = self.lists(&AllowedHost::Name(name.clone()));
        if self.allowed.is_some() && !name_listed {
            return Err(Refused(format!("{name} is not in http.allow_hosts")));
        }
        let mut refused = None;
        let kept: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| {
                let ip = a.ip().to_canonical();
                match special(ip) {
                    None => true,
                    Some(_) if name_listed || self.lists(&AllowedHost::Ip(ip)) => true,
                    Some(what) => {
                        refused = Some(format!(
                            "{name} resolves to {ip}, {what}; list it in http.allow_hosts to call it"
                        ));
                        false
                    }
                }
            })
            .collect();
        if kept.is_empty() {
            return Err(Refused(
                refused.unwrap_or_else(|| format!("{name} resolved to no address")),
            ));
        }
        Ok(kept)
    }
}

/// The system resolver, with every answer filtered through [`HostPolicy::filter_addrs`]:
/// the check happens on the addresses actually connected to (DNS rebinding).
pub(crate) struct GuardedResolver {
    pub policy: Arc<HostPolicy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = Arc::clone(&self.policy);
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept = policy.filter_addrs(&host, found)?;
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).expect("a test URL")
    }

    fn addr(s: &str) -> SocketAddr {
        SocketAddr::new(s.parse().expect("a test address"), 0)
    }

    #[test]
    fn entries_must_be_bare_hosts() {
        assert_eq!(
            parse_allowed_host("API.Example.com."),
            Ok(AllowedHost::Name("api.example.com".into()))
        );
        assert_eq!(
            parse_allowed_host("[::1]"),
            Ok(AllowedHost::Ip("::1".parse().unwrap()))
        );
        assert_eq!(
            parse_allowed_host("10.0.0.5"),
            Ok(AllowedHost::Ip("10.0.0.5".parse().unwrap()))
        );
        for (entry, says) in [
            ("https://api.example.com/v1", "is a URL"),
            ("api.example.com:8443", "has a port"),
            ("*.example.com", "wildcard"),
            ("", "empty"),
            ("bad host", "not a host name"),
        ] {
            let e = parse_allowed_host(entry).expect_err(entry);
            assert!(e.message.contains(says), "{entry}: {e:?}");
        }
    }

    #[test]
    fn by_default_only_link_local_and_metadata_are_refused() {
        let p = HostPolicy::default();
        for ok in [
            "http://127.0.0.1:8080/x",
            "https://10.1.2.3/",
            "http://[::1]/",
            "http://api.example.com/",
        ] {
            assert_eq!(p.check_url(&url(ok)), Ok(()), "{ok}");
        }
        for no in [
            "http://169.254.169.254/latest/meta-data",
            "http://169.254.1.1/",
            "http://[fe80::1]/",
            "http://[fd00:ec2::254]/",
            "http://100.100.100.200/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://METADATA./",
            "http://[::ffff:169.254.169.254]/",
            "http://2852039166/",
            "ftp://example.com/",
            "file:///etc/passwd",
        ] {
            assert!(p.check_url(&url(no)).is_err(), "{no}");
        }
    }

    #[test]
    fn allow_hosts_allows_only_those_and_may_list_metadata() {
        let p =
            HostPolicy::new(Some(&["api.example.com".into(), "169.254.169.254".into()])).unwrap();
        assert_eq!(p.check_url(&url("https://api.example.com:9/x")), Ok(()));
        assert_eq!(p.check_url(&url("http://169.254.169.254/")), Ok(()));
        let e = p.check_url(&url("http://127.0.0.1/")).unwrap_err();
        assert!(e.0.contains("not in http.allow_hosts"), "{e}");
        assert!(p.check_url(&url("http://other.example.com/")).is_err());
    }

    #[test]
    fn resolved_addresses_are_filtered() {
        let p = HostPolicy::default();
        // A name pointing at the metadata address (DNS rebinding) keeps nothing.
        let e = p
            .filter_addrs("evil.example.com", vec![addr("169.254.169.254")])
            .unwrap_err();
        assert!(e.0.contains("cloud metadata"), "{e}");
        assert!(
            p.filter_addrs("x.example.com", vec![addr("fe80::1")])
                .is_err()
        );
        assert!(
            p.filter_addrs("x.example.com", vec![addr("::ffff:169.254.169.254")])
                .is_err()
        );
        // The refused address is dropped, the others kept.
        assert_eq!(
            p.filter_addrs(
                "mixed.example.com",
                vec![addr("169.254.169.254"), addr("10.0.0.7")]
            ),
            Ok(vec![addr("10.0.0.7")])
        );
        assert_eq!(
            p.filter_addrs("localhost", vec![addr("127.0.0.1")]),
            Ok(vec![addr("127.0.0.1")])
        );
        // Listed, a metadata name may resolve to its address; an unlisted name may not
        // be resolved at all.
        let listed = HostPolicy::new(Some(&["metadata.google.internal".into()])).unwrap();
        assert!(
            listed
                .filter_addrs("metadata.google.internal", vec![addr("169.254.169.254")])
                .is_ok()
        );
        assert!(
            listed
                .filter_addrs("api.example.com", vec![addr("10.0.0.7")])
                .is_err()
        );
    }
}
