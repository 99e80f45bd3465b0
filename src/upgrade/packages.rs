//! The `packages@<hop>` step: the management packages at exactly the hop's version on every
//! service node.

use async_trait::async_trait;
use cs_core::{CsVersion, Step, StepError, StepState};

use super::ms::{install_all, installed_version, stop_all, switch_repos};
use super::{UpgradeContext, count_state};

#[derive(Debug)]
pub(super) struct Packages {
    pub(super) hop: CsVersion,
    pub(super) id: String,
}

#[async_trait]
impl Step<UpgradeContext> for Packages {
    fn id(&self) -> &str {
        &self.id
    }

    async fn check(&self, cx: &UpgradeContext) -> Result<StepState, StepError> {
        if cx.passed(&self.hop).await? {
            return Ok(StepState::Done);
        }
        let mut installed = Vec::new();
        for n in cx.service_nodes() {
            installed.push(installed_version(n).await?);
        }
        Ok(decide(&PackagesFacts {
            hop: self.hop,
            installed,
        }))
    }

    async fn apply(&self, cx: &UpgradeContext) -> Result<(), StepError> {
        install_all(cx, &self.hop).await
    }

    async fn rollback(&self, cx: &UpgradeContext) -> Result<(), StepError> {
        stop_all(cx).await?;
        switch_repos(cx, &cx.record.from.line()).await?;
        install_all(cx, &cx.record.from).await
    }
}

/// What the packages step's check found on a hop the run is not yet past.
#[derive(Debug, Clone)]
struct PackagesFacts {
    /// The hop.
    hop: CsVersion,
    /// The installed management-server version of each service node.
    installed: Vec<Option<CsVersion>>,
}

/// The packages step's state: `Done` when every server has exactly the hop's version,
/// `Partial` when some do.
fn decide(f: &PackagesFacts) -> StepState {
    let at = f.installed.iter().filter(|v| **v == Some(f.hop)).count();
    count_state(at, f.installed.len(), "server(s) upgraded")
}

#[cfg(test)]
mod tests {
    use cs_core::{CsVersion, StepState};

    use super::{PackagesFacts, decide};

    fn v(s: &str) -> Option<CsVersion> {
        Some(CsVersion::parse(s).expect("test versions parse"))
    }

    #[track_caller]
    fn check(installed: &[Option<CsVersion>], expected: StepState) {
        let facts = PackagesFacts {
            hop: CsVersion::parse("4.19.0.0").expect("test versions parse"),
            installed: installed.to_vec(),
        };
        assert_eq!(decide(&facts), expected);
    }

    #[test]
    fn every_server_at_the_hop_is_done() {
        check(&[v("4.19.0.0"), v("4.19.0.0")], StepState::Done);
    }

    #[test]
    fn some_servers_at_the_hop_is_partial() {
        let one_of_two = StepState::Partial("1 of 2 server(s) upgraded".into());
        check(&[v("4.19.0.0"), v("4.17.0.0")], one_of_two.clone());
        check(&[None, v("4.19.0.0")], one_of_two);
    }

    #[test]
    fn no_server_at_the_hop_is_pending() {
        check(&[v("4.17.0.0"), None], StepState::Pending);
        // Only the exact version counts.
        check(&[v("4.19.1.0"), v("4.19.1.0")], StepState::Pending);
    }
}
