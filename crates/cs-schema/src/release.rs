//! Release facts per line: LTS or not, Java major, supported databases, system VM templates.
//!
//! From `data/upgrade-graph.json` (`release_lines`: apache/cloudstack-documentation release
//! notes and `compat.rst`, Java from `debian/control` and the RPM specs), plus the MariaDB
//! floor of the project's CHECKS.md (`db.server.compat`: MariaDB >= 10.6 for 4.20+). Lines
//! 4.23 and 24.0 are not in the facts and are marked unverified.

use std::fmt;
use std::sync::OnceLock;

use cs_core::CsVersion;
use serde::Serialize;

use crate::graph::facts;

/// Whether a release line is a long-term-support line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Lts {
    /// The release notes call it LTS.
    Yes,
    /// The release notes call it a regular (non-LTS) release.
    No,
    /// Believed LTS, not confirmed in the text read.
    Likely,
    /// Not known.
    Unknown,
}

impl fmt::Display for Lts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lts::Yes => "LTS",
            Lts::No => "regular",
            Lts::Likely => "LTS?",
            Lts::Unknown => "?",
        })
    }
}

/// Facts about one release line (`4.18`, `24.0`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReleaseLine {
    /// The line (`4.18`), which is also the package repository component.
    pub line: String,
    /// LTS or not.
    pub lts: Lts,
    /// The Java major the management server and agent packages need.
    pub java: u32,
    /// MySQL versions the release notes list (empty when the facts do not say).
    pub mysql: Vec<String>,
    /// The oldest supported MariaDB, when known.
    pub mariadb_min: Option<String>,
    /// The newest published release of the line the facts know.
    pub latest: CsVersion,
    /// Whether these facts were read (false for lines newer than the facts).
    pub verified: bool,
}

impl ReleaseLine {
    /// Whether the line counts as a stepping stone (LTS or likely LTS).
    pub fn is_lts(&self) -> bool {
        matches!(self.lts, Lts::Yes | Lts::Likely)
    }

    /// `(major, minor)` of the line.
    pub fn key(&self) -> (u32, u32) {
        let v = CsVersion::parse(&format!("{}.0", self.line)).expect("line parses");
        (v.major(), v.minor())
    }

    /// The system VM template names the newest release of the line expects, per hypervisor.
    pub fn systemvm_templates(&self) -> Vec<(Hypervisor, String)> {
        Hypervisor::ALL
            .iter()
            .map(|h| (*h, systemvm_template_name(&self.latest, *h)))
            .collect()
    }
}

/// Hypervisor types as CloudStack names them in `host.hypervisor_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[non_exhaustive]
pub enum Hypervisor {
    /// `KVM`.
    Kvm,
    /// `VMware`.
    VMware,
    /// `XenServer`.
    XenServer,
    /// `Hyperv`.
    Hyperv,
    /// `LXC`.
    Lxc,
    /// `Ovm3`.
    Ovm3,
}

impl Hypervisor {
    /// Every hypervisor with a system VM template.
    pub const ALL: [Hypervisor; 6] = [
        Hypervisor::Kvm,
        Hypervisor::VMware,
        Hypervisor::XenServer,
        Hypervisor::Hyperv,
        Hypervisor::Lxc,
        Hypervisor::Ovm3,
    ];

    /// The name in the database (`KVM`, `VMware`).
    pub fn as_db(self) -> &'static str {
        match self {
            Hypervisor::Kvm => "KVM",
            Hypervisor::VMware => "VMware",
            Hypervisor::XenServer => "XenServer",
            Hypervisor::Hyperv => "Hyperv",
            Hypervisor::Lxc => "LXC",
            Hypervisor::Ovm3 => "Ovm3",
        }
    }

    /// Parses a database name, ignoring case.
    pub fn from_db(s: &str) -> Option<Hypervisor> {
        Hypervisor::ALL
            .into_iter()
            .find(|h| h.as_db().eq_ignore_ascii_case(s))
    }

    fn template_token(self) -> &'static str {
        match self {
            Hypervisor::Kvm => "kvm",
            Hypervisor::VMware => "vmware",
            Hypervisor::XenServer => "xenserver",
            Hypervisor::Hyperv => "hyperv",
            Hypervisor::Lxc => "lxc",
            Hypervisor::Ovm3 => "ovm3",
        }
    }
}

impl fmt::Display for Hypervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_db())
    }
}

/// The system VM template name a release registers for a hypervisor, as
/// `SystemVmTemplateRegistration.NewTemplateNameList` builds it:
/// `systemvm-<hypervisor>-<major>.<minor>.<patch>`.
///
/// ```
/// use cs_schema::{Hypervisor, systemvm_template_name};
/// assert_eq!(systemvm_template_name(&"4.18.1.0".parse()?, Hypervisor::Kvm), "systemvm-kvm-4.18.1");
/// assert_eq!(systemvm_template_name(&"24.0.1".parse()?, Hypervisor::VMware), "systemvm-vmware-24.0.1");
/// # Ok::<(), cs_core::VersionError>(())
/// ```
pub fn systemvm_template_name(version: &CsVersion, hypervisor: Hypervisor) -> String {
    format!(
        "systemvm-{}-{}.{}.{}",
        hypervisor.template_token(),
        version.major(),
        version.minor(),
        version.patch()
    )
}

/// Every release line the crate knows, oldest first.
pub fn release_lines() -> &'static [ReleaseLine] {
    static LINES: OnceLock<Vec<ReleaseLine>> = OnceLock::new();
    LINES.get_or_init(build)
}

/// The facts of `version`'s line, if known.
pub fn release_line(version: &CsVersion) -> Option<&'static ReleaseLine> {
    release_lines()
        .iter()
        .find(|l| l.key() == (version.major(), version.minor()))
}

/// The facts of `version`'s line; for a line the data lacks, facts carried over from the
/// newest known line below it (or the oldest known line), marked unverified, with `version`
/// as its newest release.
///
/// ```
/// let l = cs_schema::release_facts(&"4.25.0.0".parse()?);
/// assert_eq!((l.line.as_str(), l.verified, l.java), ("4.25", false, 17));
/// assert!(cs_schema::release_facts(&"4.18.0.0".parse()?).verified);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn release_facts(version: &CsVersion) -> ReleaseLine {
    if let Some(l) = release_line(version) {
        return l.clone();
    }
    let lines = release_lines();
    let key = (version.major(), version.minor());
    let near = lines
        .iter()
        .rev()
        .find(|l| l.key() < key)
        .or_else(|| lines.first())
        .expect("the embedded facts list release lines");
    ReleaseLine {
        line: version.line(),
        lts: Lts::Unknown,
        java: near.java,
        mysql: near.mysql.clone(),
        mariadb_min: near.mariadb_min.clone(),
        latest: *version,
        verified: false,
    }
}

fn build() -> Vec<ReleaseLine> {
    let raw = &facts().raw.release_lines;
    let releases: Vec<CsVersion> = raw
        .documented_release_versions
        .iter()
        .filter_map(|s| CsVersion::parse(s).ok())
        .collect();
    let mut lines: Vec<ReleaseLine> = raw
        .lines
        .iter()
        .map(|l| {
            let lts = match &l.lts {
                serde_json::Value::Bool(true) => Lts::Yes,
                serde_json::Value::Bool(false) => Lts::No,
                serde_json::Value::String(s) if s.starts_with("likely") => Lts::Likely,
                _ => Lts::Unknown,
            };
            let latest = releases
                .iter()
                .filter(|v| v.line() == l.line)
                .max()
                .copied()
                .unwrap_or_else(|| CsVersion::parse(&format!("{}.0.0", l.line)).expect("line"));
            let minor = latest.minor();
            ReleaseLine {
                line: l.line.clone(),
                lts,
                java: l.java,
                mysql: l
                    .mysql
                    .as_deref()
                    .map(|m| m.split(',').map(|s| s.trim().to_string()).collect())
                    .unwrap_or_default(),
                mariadb_min: (latest.major() == 4 && minor >= 20).then(|| "10.6".to_string()),
                latest,
                verified: true,
            }
        })
        .collect();
    for (line, latest) in [("4.23", "4.23.0.0"), ("24.0", "24.0.0")] {
        lines.push(ReleaseLine {
            line: line.to_string(),
            lts: Lts::Unknown,
            java: 17,
            mysql: vec!["8.0".to_string()],
            mariadb_min: Some("10.6".to_string()),
            latest: CsVersion::parse(latest).expect("static"),
            verified: false,
        });
    }
    lines.sort_by_key(ReleaseLine::key);
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(v: &str, line: &str, lts: Lts, java: u32, mysql: &[&str], latest: &str) {
        let l = release_line(&CsVersion::parse(v).unwrap()).unwrap();
        assert_eq!(
            (l.line.as_str(), l.lts, l.java, l.latest.to_string()),
            (line, lts, java, latest.to_string())
        );
        assert_eq!(l.mysql, mysql);
    }

    #[test]
    fn release_facts_per_line() {
        check(
            "4.18.1.3",
            "4.18",
            Lts::Yes,
            11,
            &["5.6", "5.7", "8.0"],
            "4.18.2.5",
        );
        check("4.20.0.0", "4.20", Lts::Yes, 17, &["8.0"], "4.20.3.0");
        check("4.21.0.0", "4.21", Lts::No, 17, &["8.0"], "4.21.0.0");
        check("4.12.0.0", "4.12", Lts::No, 8, &[], "4.12.0.0");
        check("4.11.3.0", "4.11", Lts::Likely, 8, &[], "4.11.3.0");
        assert!(!release_line(&"24.0.0".parse().unwrap()).unwrap().verified);
        assert!(release_line(&"4.9.0".parse().unwrap()).is_none());
    }

    #[test]
    fn template_names_per_hypervisor() {
        let l = release_line(&"4.19.0.0".parse().unwrap()).unwrap();
        let t = l.systemvm_templates();
        assert_eq!(t[0], (Hypervisor::Kvm, "systemvm-kvm-4.19.3".to_string()));
        assert_eq!(Hypervisor::from_db("vmware"), Some(Hypervisor::VMware));
    }
}
