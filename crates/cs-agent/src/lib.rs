//! KVM agent refresh for Apache CloudStack: `agent.properties`, keystores, packages and
//! services on hypervisors, one host or a whole fleet, through a [`cs_core::Host`].
//!
//! - [`Properties`]: lossless parse and edit of Java properties, typed access to the keys the
//!   agent knows ([`known_keys`]), key-level [`diff`].
//! - [`keystore::inspect`]: `cloud.jks` / `cloud.crt` / `cloud.key` / `cloud.ca.crt`, their
//!   modes, whether `keystore.passphrase` opens the store, the certificate's expiry and names.
//! - [`packages`]: dpkg/apt and rpm/dnf, exact-version installs, holds, services, Java, jars.
//! - [`collect_facts`] for one [`Node`]; [`checks`] for the `agent.*`, `node.*` and `net.*`
//!   checks of a KVM host.
//! - [`refresh_steps`]: one host's refresh as idempotent [`cs_core::Step`]s;
//!   [`fleet::run_fleet`] runs many hosts, clusters side by side in batches under a global
//!   cap, with a canary and failure budgets; [`HostPoller`] answers every host waiting to be
//!   Up from one shared listing per interval.
//!
//! ```
//! use cs_agent::{IDENTITY_KEYS, Properties, diff};
//! let before = Properties::parse("# set up by cloudstack-setup-agent\nguid=0a1b\nzone=1\n")?;
//! let mut after = Properties::parse("guid=\nzone=1\nworkers=5\n")?;
//! let changed: Vec<String> = diff(&before, &after).iter().map(|c| c.to_string()).collect();
//! assert_eq!(changed, [r#"~ guid: "0a1b" -> """#, r#"+ workers: - -> "5""#]);
//! for key in IDENTITY_KEYS {
//!     if let Some(v) = before.get(key) {
//!         after.set(key, v);
//!     }
//! }
//! assert_eq!(after.to_string(), "guid=0a1b\nzone=1\nworkers=5\n");
//! # Ok::<(), cs_agent::Error>(())
//! ```

mod batch;
mod error;
mod facts;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzz;
mod keys;
mod properties;

pub mod checks;
pub mod fleet;
pub mod keystore;
pub mod packages;
mod poller;
mod refresh;
mod schedule;

pub use error::{Error, Result};
pub use facts::{AgentFacts, Node, agent_packages, collect_facts};
pub use keys::{KeyInfo, KeyKind, known_keys};
pub use keystore::verify_native;
pub use poller::HostPoller;
pub use properties::{
    ChangeKind, Duplicate, IDENTITY_KEYS, KeyChange, Properties, SECRET_KEYS, Value, diff,
    is_secret_key,
};
pub use refresh::{
    Deps, RefreshContext, RefreshOptions, RefreshReport, Restored, SnapshotManifest, refresh_host,
    refresh_steps,
};
