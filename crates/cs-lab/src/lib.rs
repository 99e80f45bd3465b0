//! A throwaway, CloudStack-shaped lab on 127.0.0.1 for tests, demos and benchmarks: a real
//! MariaDB and real sshd instances with temporary directories and free ports.
//!
//! `publish = false`: only dev-dependencies, examples and the root crate's tests use it.

mod error;
mod mariadb;
mod util;

pub use cs_core::DbUrl;
pub use error::{LabError, Result};
pub use mariadb::{DbUrlExt, MariaDb, MariaDbOptions, TestDb, mariadb};
