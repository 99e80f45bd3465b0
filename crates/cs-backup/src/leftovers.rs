//! The schemas restores and rehearsals leave behind: the parking schemas of a swap restore
//! (`<live>__parked_<stamp>`, the replaced tables, kept until [`crate::drop_parked`]) and the
//! scratch schemas of a scratch-only restore or a rehearsal (`<live>__restore_<stamp>`, kept
//! with `--keep-scratch` or left by a run that was stopped). Each is a full copy of a
//! database; this lists them with their size and age and drops the ones asked for, never any
//! other schema.

use std::time::{Duration, SystemTime};

use cs_core::DbUrl;
use serde::Serialize;

use crate::backup::blocking;
use crate::{Error, Result, db};

/// What made a leftover schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum LeftoverKind {
    /// A swap restore's parking schema: the tables it replaced.
    Parked,
    /// A scratch-only restore's or a rehearsal's scratch copy.
    Scratch,
}

impl LeftoverKind {
    /// `parked` or `scratch`.
    pub fn label(self) -> &'static str {
        match self {
            LeftoverKind::Parked => "parked",
            LeftoverKind::Scratch => "scratch",
        }
    }
}

/// A schema left by a restore or a rehearsal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct LeftoverSchema {
    /// Its name (`cloud__parked_20260124t070102`).
    pub name: String,
    /// Parked or scratch.
    pub kind: LeftoverKind,
    /// The live schema it was made for (`cloud`; shortened with a hash for long names, as the
    /// restore names it).
    pub live: String,
    /// When it was made: the UTC stamp in its name.
    #[serde(with = "unix_seconds")]
    pub created: SystemTime,
    /// Its tables' data and index length as `information_schema.TABLES` reports it.
    pub bytes: u64,
    /// Its tables.
    pub tables: u64,
}

impl LeftoverSchema {
    /// How long ago it was made (zero for a stamp in the future).
    pub fn age(&self, now: SystemTime) -> Duration {
        now.duration_since(self.created).unwrap_or_default()
    }
}

/// Serialises a time as seconds since the Unix epoch.
mod unix_seconds {
    use std::time::SystemTime;

    pub(super) fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let secs = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        s.serialize_u64(secs)
    }
}

/// The kind, live schema and time of a schema named as a restore names its parking and
/// scratch schemas (`restore.rs`: `<live>__parked_<stamp>` or `<live>__restore_<stamp>`,
/// where `<stamp>` is `YYYYMMDDtHHMMSS` in UTC, maybe followed by `_<n>` for a second restore
/// in the same second, 2 to 99); `None` for any other name, so that a look-alike
/// (`cloud__parked_old`, `cloud__restore_20260124t070102x`) or a live schema is never taken
/// for one.
pub fn parse_leftover_name(name: &str) -> Option<(LeftoverKind, String, SystemTime)> {
    let (kind, live, rest) = [
        ("__parked_", LeftoverKind::Parked),
        ("__restore_", LeftoverKind::Scratch),
    ]
    .into_iter()
    .find_map(|(tag, kind)| {
        let (live, rest) = name.rsplit_once(tag)?;
        Some((kind, live, rest))
    })?;
    if live.is_empty() {
        return None;
    }
    let (stamp, n) = match rest.split_once('_') {
        Some((s, n)) => (s, Some(n)),
        None => (rest, None),
    };
    if let Some(n) = n {
        let ok = (1..=2).contains(&n.len())
            && n.bytes().all(|b| b.is_ascii_digit())
            && n.parse::<u32>().is_ok_and(|n| (2..=99).contains(&n));
        if !ok {
            return None;
        }
    }
    Some((kind, live.to_string(), parse_stamp(stamp)?))
}

/// `YYYYMMDDtHHMMSS` (UTC) as a time.
fn parse_stamp(stamp: &str) -> Option<SystemTime> {
    let b = stamp.as_bytes();
    if b.len() != 15 || b[8] != b't' {
        return None;
    }
    if !b[..8].iter().chain(&b[9..]).all(u8::is_ascii_digit) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| stamp[r].parse::<u32>().ok();
    let month = time::Month::try_from(u8::try_from(num(4..6)?).ok()?).ok()?;
    let date = time::Date::from_calendar_date(
        i32::try_from(num(0..4)?).ok()?,
        month,
        u8::try_from(num(6..8)?).ok()?,
    )
    .ok()?;
    let clock = time::Time::from_hms(
        u8::try_from(num(9..11)?).ok()?,
        u8::try_from(num(11..13)?).ok()?,
        u8::try_from(num(13..15)?).ok()?,
    )
    .ok()?;
    let secs = time::PrimitiveDateTime::new(date, clock)
        .assume_utc()
        .unix_timestamp();
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// The parking and scratch schemas on the server, oldest first, with their size.
///
/// # Errors
/// [`Error::Connect`] and database errors (reading `information_schema`).
pub async fn leftover_schemas(url: &DbUrl) -> Result<Vec<LeftoverSchema>> {
    let url = url.clone();
    blocking(move || {
        let mut db = db::connect_short(&url)?;
        // Narrowed by the server to the two tags' names, then matched exactly here.
        const LIKE: &str = "LIKE '%\\_\\_parked\\_%' OR {} LIKE '%\\_\\_restore\\_%'";
        let names = db.rows(
            "list the parking and scratch schemas",
            &format!(
                "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME {}",
                LIKE.replace("{}", "SCHEMA_NAME")
            ),
        )?;
        // Summed here, not by the server: information_schema compares names without regard
        // to case, and `cloud__parked_…t…` and a look-alike `…T…` are two schemas.
        let tables = db.rows(
            "read the parking and scratch schemas' sizes",
            &format!(
                "SELECT TABLE_SCHEMA, COALESCE(DATA_LENGTH, 0) + COALESCE(INDEX_LENGTH, 0) \
                 FROM information_schema.TABLES WHERE TABLE_SCHEMA {}",
                LIKE.replace("{}", "TABLE_SCHEMA")
            ),
        )?;
        let text =
            |r: &Vec<Option<String>>, i: usize| r.get(i).cloned().flatten().unwrap_or_default();
        let mut sizes: std::collections::HashMap<String, (u64, u64)> =
            std::collections::HashMap::new();
        for r in &tables {
            let e = sizes.entry(text(r, 0)).or_default();
            e.0 += text(r, 1).parse::<u64>().unwrap_or(0);
            e.1 += 1;
        }
        let mut out: Vec<LeftoverSchema> = names
            .iter()
            .filter_map(|r| {
                let name = text(r, 0);
                let (kind, live, created) = parse_leftover_name(&name)?;
                let (bytes, tables) = sizes.get(&name).copied().unwrap_or_default();
                Some(LeftoverSchema {
                    name,
                    kind,
                    live,
                    created,
                    bytes,
                    tables,
                })
            })
            .collect();
        out.sort_by(|a, b| a.created.cmp(&b.created).then(a.name.cmp(&b.name)));
        Ok(out)
    })
    .await
}

/// Drops the named parking and scratch schemas. Every name is checked first: one that is not
/// a parking or scratch schema's name (see [`parse_leftover_name`]) is refused, and nothing
/// is dropped.
///
/// # Errors
/// [`Error::Invalid`] naming a schema that is not a leftover's; [`Error::Connect`] and
/// database errors (a failed drop: the ones before it are gone).
pub async fn drop_leftover_schemas(url: &DbUrl, names: &[String]) -> Result<()> {
    if let Some(bad) = names.iter().find(|n| parse_leftover_name(n).is_none()) {
        return Err(Error::invalid(format!(
            "`{bad}` is not a parking or scratch schema of a restore; not dropping it"
        )));
    }
    crate::restore::drop_schemas(url, names).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_a_restore_gives_are_leftovers() {
        let (kind, live, at) = parse_leftover_name("cloud__parked_20260124t070102").unwrap();
        assert_eq!((kind, live.as_str()), (LeftoverKind::Parked, "cloud"));
        assert_eq!(
            at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            1_769_238_062
        );
        let (kind, live, _) =
            parse_leftover_name("cloud_usage__restore_20260124t070102_2").unwrap();
        assert_eq!(
            (kind, live.as_str()),
            (LeftoverKind::Scratch, "cloud_usage")
        );
        for other in [
            "cloud",
            "cloud_usage",
            "cloud__parked_",
            "cloud__parked_old",
            "cloud__parked_20260124T070102",
            "cloud__restore_20260124t070102x",
            "cloud__restore_20260124t070102_1",
            "cloud__restore_20260124t070102_100",
            "cloud__restore_20260124t070102_",
            "cloud__restore_20261324t070102",
            "cloud__restore_2026012t4070102",
            "__parked_20260124t070102",
            "cloud_parked_20260124t070102",
        ] {
            assert_eq!(parse_leftover_name(other), None, "{other}");
        }
    }
}
