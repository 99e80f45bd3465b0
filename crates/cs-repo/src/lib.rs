//! Lossless rewriting of apt and yum repository files, so that CloudStack entries point at a
//! target release (step 4 of the upgrade), and a thin IO layer over a `cs_core::Host`.
//!
//! The pure part takes text and gives text: [`rewrite`] changes only the CloudStack release
//! tokens (the apt component `noble 4.19`, or a path segment of a CloudStack URL such as
//! `centos/$releasever/4.19/`) and keeps every other byte, comments, options, disabled entries,
//! CRLF line ends and a missing final newline included; [`scan`] lists the CloudStack entries.
//! It understands apt one-line files ([`Format::AptList`]), deb822 `.sources`
//! ([`Format::Deb822`]) and yum/dnf/zypper `.repo` files ([`Format::Yum`]). CloudStack entries
//! are recognised by URL ([`Rules`]: the official `download.cloudstack.org` trees plus mirror
//! prefixes), never by file name.
//!
//! The IO part works on any [`cs_core::Host`]: [`discover`] the files of a [`cs_core::Layout`],
//! [`plan`] the rewrite (with [`Plan::diff`] for a dry run), [`apply`] it (atomic writes and a
//! timestamped backup copy beside each file), [`revert`] from a backup. [`RepoSwitcher`] does
//! all of it as a [`cs_core::RepoSwitch`]; [`TargetConfigured`] and [`TargetResolvable`] are the
//! `repo.target.*` checks.
//!
//! Features: `checks` (default) adds the `repo.target.*` checks and [`locate_package`] /
//! [`download_package`], which fetch and decompress repository indexes over HTTP. Without it
//! the crate is pure text plus the file IO over a `Host`: no HTTP client, no compression.
//!
//! ```
//! use cs_repo::{Format, Rules, rewrite};
//! let rules = Rules::default().with_mirror("https://mirror.local/cloudstack/upstream")?;
//! let text = "\
//! ## CloudStack (keep this comment)
//! deb [signed-by=/etc/apt/keyrings/cloudstack.gpg] https://download.cloudstack.org/ubuntu noble 4.19
//! ## deb https://download.cloudstack.org/ubuntu noble 4.18
//! deb https://mirror.local/cloudstack/upstream/debian/4.19 ./
//! deb http://archive.ubuntu.com/ubuntu noble main";
//! let out = rewrite(text, Format::AptList, "4.20", &rules)?;
//! assert_eq!(out.text, "\
//! ## CloudStack (keep this comment)
//! deb [signed-by=/etc/apt/keyrings/cloudstack.gpg] https://download.cloudstack.org/ubuntu noble 4.20
//! ## deb https://download.cloudstack.org/ubuntu noble 4.18
//! deb https://mirror.local/cloudstack/upstream/debian/4.20 ./
//! deb http://archive.ubuntu.com/ubuntu noble main");
//! let changes: Vec<String> = out.changes.iter().map(ToString::to_string).collect();
//! assert_eq!(changes, ["line 2: 4.19 -> 4.20", "line 4: 4.19 -> 4.20"]);
//! assert_eq!(out.disabled().count(), 1);
//! // A second run changes nothing.
//! assert!(rewrite(&out.text, Format::AptList, "4.20", &rules)?.is_noop());
//! # Ok::<(), cs_repo::Error>(())
//! ```

mod apt;
#[cfg(feature = "checks")]
mod check;
mod deb822;
mod doc;
mod error;
mod files;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzz;
#[cfg(feature = "checks")]
mod index;
#[cfg(feature = "checks")]
mod locate;
#[cfg(test)]
mod proptests;
mod rewrite;
mod rules;
mod switch;
mod text;
mod yum;

#[cfg(feature = "checks")]
pub use check::{TARGET_CONFIGURED, TARGET_RESOLVABLE, TargetConfigured, TargetResolvable};
pub use error::{Error, Result};
pub use files::{
    Applied, BackupFile, FilePlan, Plan, apply, backup_files, backups, discover, parse_backup_name,
    plan, remove_backup_files, revert,
};
#[cfg(feature = "checks")]
pub use locate::{LocateOptions, PackageLocation, download_package, locate_package};
pub use rewrite::{Change, Entry, Format, Rewrite, rewrite, scan};
pub use rules::{OFFICIAL_HOST, Rules};
pub use switch::RepoSwitcher;
