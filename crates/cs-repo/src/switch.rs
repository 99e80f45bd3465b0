//! [`RepoSwitcher`]: the `cs_core::RepoSwitch` the orchestrator hands to other crates.

use async_trait::async_trait;
use cs_core::{BoxError, Host, Layout, RepoSwitch, RepoSwitchReport};

use crate::{Error, Result, Rules, files};

/// Switches a host's CloudStack repositories to a release line: discover, plan, apply (with
/// backups). Idempotent; switching back restores the files byte for byte.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use cs_core::{Layout, RepoSwitch, fake::FakeHost};
/// use cs_repo::RepoSwitcher;
/// let host = FakeHost::new("kvm1").with_file(
///     "/etc/apt/sources.list.d/cloudstack.list",
///     "deb https://download.cloudstack.org/ubuntu noble 4.19\n",
/// );
/// let report = RepoSwitcher::default().switch(&host, "4.20").await.unwrap();
/// assert_eq!(report.changes, ["/etc/apt/sources.list.d/cloudstack.list:1: 4.19 -> 4.20"]);
/// # });
/// ```
#[derive(Debug, Clone, Default)]
pub struct RepoSwitcher {
    /// Where the repository directories are.
    pub layout: Layout,
    /// Which URLs are CloudStack's.
    pub rules: Rules,
}

impl RepoSwitcher {
    /// Switches `host` to `line`, returning what changed.
    ///
    /// # Errors
    /// [`Error::NothingFound`] when no file has a CloudStack entry; what [`files::plan`] and
    /// [`files::apply`] return otherwise.
    pub async fn switch_to(&self, host: &dyn Host, line: &str) -> Result<RepoSwitchReport> {
        let paths = files::discover(host, &self.layout).await?;
        let plan = files::plan(host, &paths, line, &self.rules).await?;
        if !plan.has_cloudstack_entries() {
            return Err(Error::NothingFound {
                host: host.name().to_string(),
                searched: format!(
                    "{}, {}, {}, {}",
                    self.layout.apt_sources_list.display(),
                    self.layout.apt_sources_dir.display(),
                    self.layout.yum_repos_dir.display(),
                    self.layout.zypp_repos_dir.display()
                ),
            });
        }
        let applied = files::apply(host, &plan).await?;
        Ok(RepoSwitchReport {
            changed_files: applied.into_iter().map(|a| a.path).collect(),
            changes: plan
                .files
                .iter()
                .flat_map(files::FilePlan::summary)
                .collect(),
        })
    }
}

#[async_trait]
impl RepoSwitch for RepoSwitcher {
    async fn switch(&self, host: &dyn Host, line: &str) -> Result<RepoSwitchReport, BoxError> {
        Ok(self.switch_to(host, line).await?)
    }
}
