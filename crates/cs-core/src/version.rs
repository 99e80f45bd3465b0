//! CloudStack release versions, as `CloudStackVersion` parses and orders them.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

/// The first major release of the `major.minor.security` scheme, after 4.23
/// (apache/cloudstack #14033, #14041).
pub const FIRST_NEW_SCHEME_MAJOR: u32 = 24;

/// A CloudStack version: `4.19.1.0`, `4.2.0` or, from 24.0.0 on, `24.0.0`.
///
/// Parsing follows `org.apache.cloudstack.utils.CloudStackVersion.parse`: anything after the
/// first `-` is dropped (`4.18.0.0-SNAPSHOT` is `4.18.0.0`), then the value must be three or four
/// dot-separated decimal numbers, for any major (its `VERSION_FORMAT` is
/// `(\d+\.){2}(\d+\.)?\d+` and nothing checks the major: `24.0.0.0` parses as CloudStack
/// parses it, though releases from 24 on are written with three parts). Each part must fit a
/// Java `int` (`Integer.valueOf`).
///
/// Ordering and equality pad a three-part version with `.0`, so `4.2.0 == 4.2.0.0`, as
/// `CloudStackVersion.compareTo` does. CloudStack's `equals` is stricter (the written number of
/// parts counts); [`CsVersion::is_identical`] gives that, and the upgrade path needs it. Display
/// keeps the form as written (`4.2.0` stays `4.2.0`).
///
/// ```
/// use cs_core::CsVersion;
/// let v: CsVersion = "4.19.1.0".parse()?;
/// assert_eq!(v.line(), "4.19");
/// assert!(v < "4.20.0.0".parse()?);
/// assert_eq!("24.0.0".parse::<CsVersion>()?.line(), "24.0");
/// assert_eq!("24.0.0.0".parse::<CsVersion>()?, "24.0.0".parse()?);
/// # Ok::<(), cs_core::VersionError>(())
/// ```
#[derive(Clone, Copy)]
pub struct CsVersion {
    parts: [u32; 4],
    written: u8,
}

/// A string that is not a CloudStack version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CloudStack version `{input}`: {reason}")]
pub struct VersionError {
    /// The input as given.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

impl CsVersion {
    /// Parses a version (see the type's documentation for the accepted forms).
    ///
    /// # Errors
    /// [`VersionError`] naming the input and what is wrong.
    pub fn parse(input: &str) -> Result<Self, VersionError> {
        let err = |reason: &str| VersionError {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = input.split('-').next().unwrap_or("");
        if trimmed.is_empty() {
            return Err(err("empty version"));
        }
        let fields: Vec<&str> = trimmed.split('.').collect();
        if fields.len() != 3 && fields.len() != 4 {
            return Err(err(
                "expected 3 or 4 dot-separated numbers (4.19.1.0, 4.2.0, 24.0.0)",
            ));
        }
        let mut parts = [0u32; 4];
        for (i, f) in fields.iter().enumerate() {
            if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err("every part must be a decimal number"));
            }
            // `Integer.valueOf` in `CloudStackVersion.parse`: a part must fit a Java int.
            parts[i] = f
                .parse::<i32>()
                .ok()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| err("a part is too large"))?;
        }
        Ok(CsVersion {
            parts,
            written: fields.len() as u8,
        })
    }

    /// A four-part version `a.b.c.d`.
    ///
    /// # Errors
    /// [`VersionError`] when a part does not fit a Java `int` (as `CloudStackVersion.parse`
    /// refuses it).
    pub fn new4(a: u32, b: u32, c: u32, d: u32) -> Result<Self, VersionError> {
        Self::parse(&format!("{a}.{b}.{c}.{d}"))
    }

    /// A three-part version `a.b.c`.
    pub fn new3(a: u32, b: u32, c: u32) -> Self {
        CsVersion {
            parts: [a, b, c, 0],
            written: 3,
        }
    }

    /// Major release (`4`, `24`).
    pub fn major(&self) -> u32 {
        self.parts[0]
    }

    /// Minor release (`19` in `4.19.1.0`).
    pub fn minor(&self) -> u32 {
        self.parts[1]
    }

    /// Third part: the patch release (`1` in `4.19.1.0`), or the security release in the
    /// 24.x scheme.
    pub fn patch(&self) -> u32 {
        self.parts[2]
    }

    /// Fourth part when written (`0` in `4.19.1.0`), `None` for three-part versions.
    pub fn security(&self) -> Option<u32> {
        (self.written == 4).then_some(self.parts[3])
    }

    /// The four parts used for ordering (three-part versions padded with `0`).
    pub fn padded(&self) -> [u32; 4] {
        self.parts
    }

    /// Whether this version uses the `major.minor.security` scheme (24.0.0 and later).
    pub fn is_new_scheme(&self) -> bool {
        self.parts[0] >= FIRST_NEW_SCHEME_MAJOR
    }

    /// The release line, which is also the package repository's component or path segment:
    /// `4.19` for `4.19.1.0`, `24.0` for `24.0.1`.
    pub fn line(&self) -> String {
        format!("{}.{}", self.parts[0], self.parts[1])
    }

    /// Equality as CloudStack's `CloudStackVersion.equals`: same parts *and* the same number of
    /// written parts (`4.2.0` is not identical to `4.2.0.0`, though they compare equal).
    pub fn is_identical(&self, other: &CsVersion) -> bool {
        self.written == other.written && self.parts == other.parts
    }

    /// The version as `semver` (`major.minor.patch`; the fourth part is dropped), for requirements
    /// such as `>=4.18, <4.21`.
    pub fn to_semver(&self) -> semver::Version {
        semver::Version::new(
            u64::from(self.parts[0]),
            u64::from(self.parts[1]),
            u64::from(self.parts[2]),
        )
    }

    /// Whether the version satisfies a `semver` requirement (`>=4.18, <4.21`). The fourth part
    /// takes no part in the comparison.
    pub fn matches(&self, req: &semver::VersionReq) -> bool {
        req.matches(&self.to_semver())
    }
}

impl PartialEq for CsVersion {
    fn eq(&self, other: &Self) -> bool {
        self.parts == other.parts
    }
}

impl Eq for CsVersion {}

impl Hash for CsVersion {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parts.hash(state);
    }
}

impl PartialOrd for CsVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for CsVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.parts.cmp(&other.parts)
    }
}

impl fmt::Display for CsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.parts;
        if self.written == 4 {
            write!(f, "{a}.{b}.{c}.{d}")
        } else {
            write!(f, "{a}.{b}.{c}")
        }
    }
}

impl fmt::Debug for CsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CsVersion({self})")
    }
}

impl FromStr for CsVersion {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CsVersion::parse(s)
    }
}

impl TryFrom<&str> for CsVersion {
    type Error = VersionError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        CsVersion::parse(s)
    }
}

impl serde::Serialize for CsVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for CsVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CsVersion::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[track_caller]
    fn ok(input: &str, display: &str, padded: [u32; 4]) {
        let v = CsVersion::parse(input).unwrap();
        assert_eq!(v.to_string(), display);
        assert_eq!(v.padded(), padded);
    }

    #[track_caller]
    fn bad(input: &str, reason_contains: &str) {
        let e = CsVersion::parse(input).unwrap_err();
        assert_eq!(e.input, input);
        assert!(e.reason.contains(reason_contains), "{input}: {}", e.reason);
    }

    #[test]
    fn parses_the_forms_cloudstack_accepts() {
        ok("4.19.1.0", "4.19.1.0", [4, 19, 1, 0]);
        ok("4.2.0", "4.2.0", [4, 2, 0, 0]);
        ok("4.18.0.0-SNAPSHOT", "4.18.0.0", [4, 18, 0, 0]);
        ok("4.9.3.1-rc2-x", "4.9.3.1", [4, 9, 3, 1]);
        ok("24.0.0", "24.0.0", [24, 0, 0, 0]);
        ok("24.1.3", "24.1.3", [24, 1, 3, 0]);
        ok("2.1.7", "2.1.7", [2, 1, 7, 0]);
    }

    #[test]
    fn rejects_malformed_versions_with_a_reason() {
        bad("", "empty");
        bad("-SNAPSHOT", "empty");
        bad("4.19", "3 or 4");
        bad("4.19.1.0.0", "3 or 4");
        bad("4.x.1.0", "decimal");
        bad("4..1.0", "decimal");
        bad(" 4.19.1.0", "decimal");
        bad("4.19.1.+1", "decimal");
        bad("99999999999.0.0", "too large");
        bad("2147483648.0.0", "too large");
        bad("4.19.0.2147483648", "too large");
    }

    #[test]
    fn four_parts_parse_for_every_major_as_cloudstack_parses_them() {
        // CloudStackVersion.VERSION_FORMAT does not look at the major.
        ok("24.0.0.0", "24.0.0.0", [24, 0, 0, 0]);
        ok("25.1.0.2-rc1", "25.1.0.2", [25, 1, 0, 2]);
        ok("2147483647.0.0", "2147483647.0.0", [2147483647, 0, 0, 0]);
        assert_eq!(
            CsVersion::parse("24.0.0.0").unwrap(),
            CsVersion::parse("24.0.0").unwrap()
        );
    }

    #[test]
    fn three_parts_compare_equal_to_padded_four_but_are_not_identical() {
        let a: CsVersion = "4.2.0".parse().unwrap();
        let b: CsVersion = "4.2.0.0".parse().unwrap();
        assert_eq!(a, b);
        assert!(!a.is_identical(&b));
        assert!(a.is_identical(&CsVersion::new3(4, 2, 0)));
    }

    #[test]
    fn the_new_scheme_sorts_after_the_legacy_one() {
        let old: CsVersion = "4.23.0.0".parse().unwrap();
        let new: CsVersion = "24.0.0".parse().unwrap();
        assert!(old < new);
        assert!(new.is_new_scheme() && !old.is_new_scheme());
        assert_eq!(new.line(), "24.0");
    }

    #[test]
    fn semver_requirements_use_the_first_three_parts() {
        let req = semver::VersionReq::parse(">=4.18, <4.21").unwrap();
        assert!(CsVersion::parse("4.20.1.0").unwrap().matches(&req));
        assert!(CsVersion::parse("4.18.0.0").unwrap().matches(&req));
        assert!(!CsVersion::parse("4.21.0.0").unwrap().matches(&req));
        assert!(!CsVersion::parse("24.0.0").unwrap().matches(&req));
    }

    #[test]
    fn serde_uses_the_written_form() {
        let v: CsVersion = serde_json::from_str("\"4.19.0.0\"").unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"4.19.0.0\"");
        assert!(serde_json::from_str::<CsVersion>("\"4.19\"").is_err());
    }

    fn any_version() -> impl Strategy<Value = (Vec<u32>, String)> {
        prop_oneof![
            (0u32..40, 0u32..40, 0u32..10, 0u32..5).prop_map(|(a, b, c, d)| vec![a, b, c, d]),
            (0u32..40, 0u32..40, 0u32..10).prop_map(|(a, b, c)| vec![a, b, c]),
        ]
        .prop_flat_map(|parts| {
            let text = parts
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(".");
            (Just(parts), Just(text))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn display_round_trips((_parts, text) in any_version(), suffix in "(-[A-Za-z0-9.-]{0,8})?") {
            let v = CsVersion::parse(&format!("{text}{suffix}")).unwrap();
            prop_assert_eq!(v.to_string(), text.clone());
            prop_assert!(CsVersion::parse(&v.to_string()).unwrap().is_identical(&v));
        }

        #[test]
        fn ordering_is_numeric_tuple_ordering((pa, ta) in any_version(), (pb, tb) in any_version()) {
            let pad = |p: &Vec<u32>| { let mut q = p.clone(); q.resize(4, 0); q };
            let a = CsVersion::parse(&ta).unwrap();
            let b = CsVersion::parse(&tb).unwrap();
            prop_assert_eq!(a.cmp(&b), pad(&pa).cmp(&pad(&pb)));
            prop_assert_eq!(a == b, pad(&pa) == pad(&pb));
        }
    }
}
