//! A real MariaDB server on 127.0.0.1 with a throwaway data directory.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use cs_core::{DbTls, DbUrl, Secret, TlsMode};
use mysql::prelude::Queryable;

use crate::util::{alive, command, find_binary, free_port, log_tail, token, wait_ready, watchdog};
use crate::{LabError, Result};

/// Connecting to a [`DbUrl`] with the `mysql` crate.
pub trait DbUrlExt {
    /// `mysql` crate connection options.
    fn opts(&self) -> mysql::Opts;

    /// Opens a connection.
    ///
    /// # Errors
    /// [`LabError::Database`] when the server refuses or cannot be reached.
    fn connect(&self) -> Result<mysql::Conn>;
}

impl DbUrlExt for DbUrl {
    fn opts(&self) -> mysql::Opts {
        self.mysql_opts().into()
    }

    fn connect(&self) -> Result<mysql::Conn> {
        self.mysql_connect(self.mysql_opts())
            .map_err(|e| LabError::Database {
                what: format!("connect to {self}"),
                source: Box::new(e),
            })
    }
}

/// A MariaDB server started for the lab: `mariadbd` on a free 127.0.0.1 port with a temporary
/// data directory, users `root` and `cloud` with random passwords (both with every privilege),
/// stopped and removed on drop.
///
/// Tests share one server per test binary through [`mariadb()`] and give each test its own
/// database with [`MariaDb::database`].
pub struct MariaDb {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    root_password: Secret,
    cloud_password: Secret,
    version: String,
    tls: Option<LabTls>,
}

/// The files of a TLS server started with [`MariaDbOptions::tls`]: its own CA, the server's
/// certificate (for `127.0.0.1` and `localhost`) and a client certificate, all PEM, made
/// with `rcgen` in the server's directory.
#[derive(Debug, Clone)]
pub struct LabTls {
    /// The CA certificate (`ssl-ca`).
    pub ca: PathBuf,
    /// A client certificate signed by the CA (`ssl-cert`).
    pub client_cert: PathBuf,
    /// Its private key (`ssl-key`, mode 0600).
    pub client_key: PathBuf,
}

impl fmt::Debug for MariaDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MariaDb")
            .field("port", &self.port)
            .field("dir", &self.dir.path())
            .field("version", &self.version)
            .finish()
    }
}

/// Options for [`MariaDb::start_with`].
#[derive(Debug, Clone, Default)]
pub struct MariaDbOptions {
    /// Extra `mariadbd` options (`--sql-mode=ONLY_FULL_GROUP_BY`, `--log-bin`, …).
    pub server_args: Vec<String>,
    /// A server with a CA of its own and `require_secure_transport=ON`: TCP connections
    /// without TLS are refused (the Unix socket counts as secure, as MariaDB rules it). Its
    /// [`MariaDb::root`] and [`MariaDb::cloud`] URLs carry `ssl-mode=VERIFY_CA` and the CA.
    pub tls: bool,
}

impl MariaDb {
    /// Starts a server with default options.
    ///
    /// # Errors
    /// [`LabError::MissingBinary`] naming the package when MariaDB is not installed; start-up
    /// errors with the end of the server's log.
    pub fn start() -> Result<MariaDb> {
        MariaDb::start_with(&MariaDbOptions::default())
    }

    /// Starts a server with extra options.
    ///
    /// # Errors
    /// As [`MariaDb::start`].
    pub fn start_with(options: &MariaDbOptions) -> Result<MariaDb> {
        let mariadbd = find_binary("mariadbd", "mariadb-server")?;
        let install_db = find_binary("mariadb-install-db", "mariadb-server")?;
        let client = find_binary("mariadb", "mariadb-client")?;
        // Unix socket paths are limited to 107 bytes: keep the directory short.
        let dir = tempfile::Builder::new()
            .prefix("cslab-db-")
            .tempdir_in("/tmp")
            .map_err(|e| LabError::io("create MariaDB directory", e))?;
        let data = dir.path().join("data");
        let sock = dir.path().join("s");
        let log = dir.path().join("error.log");
        // A tmpdir of its own: a starting server (and `mariadb-install-db`'s bootstrap)
        // deletes every `#sql*` file in its tmpdir (`mysql_rm_tmp_tables()` in
        // `sql/sql_base.cc`, called from `mysqld.cc` at start-up), which in a shared /tmp are
        // other servers' live temporary tables ("Error on delete of
        // '/tmp/#sql-temptable-…'" in a query of a server already running).
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).map_err(|e| LabError::io("create MariaDB tmpdir", e))?;
        let me = current_user();
        let tls = if options.tls {
            Some(write_certs(dir.path())?)
        } else {
            None
        };
        let tls_args: Vec<String> = match &tls {
            // `require_secure_transport` (MariaDB 10.5.2+) refuses TCP logins in clear.
            Some(_) => vec![
                format!("--ssl-ca={}", dir.path().join("ca.pem").display()),
                format!(
                    "--ssl-cert={}",
                    dir.path().join("server-cert.pem").display()
                ),
                format!("--ssl-key={}", dir.path().join("server-key.pem").display()),
                "--require-secure-transport=ON".into(),
            ],
            None => Vec::new(),
        };

        let install_log = dir.path().join("install.log");
        let out = command(&install_db)
            .arg("--no-defaults")
            .arg(format!("--user={me}"))
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .args([
                "--skip-test-db",
                "--auth-root-authentication-method=normal",
                "--skip-name-resolve",
                "--innodb-log-file-size=16M",
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| LabError::io("run mariadb-install-db", e))?;
        let _ = std::fs::write(&install_log, [&out.stdout[..], &out.stderr[..]].concat());
        if !out.status.success() {
            return Err(LabError::Start {
                what: "mariadb-install-db".into(),
                detail: log_tail(&install_log),
            });
        }

        let mut last_err = None;
        for _ in 0..5 {
            let port = free_port()?;
            let mut child = command(&mariadbd)
                .arg("--no-defaults")
                .arg(format!("--user={me}"))
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--tmpdir={}", tmp.display()))
                .arg("--bind-address=127.0.0.1")
                .arg(format!("--port={port}"))
                .arg(format!("--socket={}", sock.display()))
                .arg(format!(
                    "--pid-file={}",
                    dir.path().join("mysqld.pid").display()
                ))
                .arg(format!("--log-error={}", log.display()))
                .args([
                    "--skip-name-resolve",
                    "--innodb-log-file-size=16M",
                    "--innodb-buffer-pool-size=128M",
                    "--max-allowed-packet=256M",
                    "--innodb-flush-log-at-trx-commit=2",
                    "--event-scheduler=OFF",
                ])
                .args(&tls_args)
                .args(&options.server_args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| LabError::io("start mariadbd", e))?;
            watchdog(child.id(), dir.path())?;
            let ready = wait_ready(
                "mariadbd",
                &mut child,
                &log,
                Duration::from_secs(60),
                || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() && sock.exists(),
            );
            match ready {
                Ok(()) => {
                    let root_password = Secret::new(token(20));
                    let cloud_password = Secret::new(token(20));
                    let setup = format!(
                        "ALTER USER 'root'@'localhost' IDENTIFIED BY '{r}';\n\
                         CREATE OR REPLACE USER 'root'@'127.0.0.1' IDENTIFIED BY '{r}';\n\
                         GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;\n\
                         CREATE USER 'cloud'@'%' IDENTIFIED BY '{c}';\n\
                         GRANT ALL PRIVILEGES ON *.* TO 'cloud'@'%' WITH GRANT OPTION;\n\
                         FLUSH PRIVILEGES;\n",
                        r = root_password.expose(),
                        c = cloud_password.expose()
                    );
                    let mut sql = command(&client)
                        .arg("--no-defaults")
                        .arg(format!("--socket={}", sock.display()))
                        .arg("-uroot")
                        .stdin(Stdio::piped())
                        .stdout(Stdio::null())
                        .stderr(Stdio::piped())
                        .spawn()
                        .map_err(|e| LabError::io("run mariadb client", e))?;
                    if let Some(mut stdin) = sql.stdin.take() {
                        use std::io::Write as _;
                        stdin
                            .write_all(setup.as_bytes())
                            .map_err(|e| LabError::io("write to mariadb client", e))?;
                    }
                    let out = sql
                        .wait_with_output()
                        .map_err(|e| LabError::io("run mariadb client", e))?;
                    if !out.status.success() {
                        let _ = child.kill();
                        return Err(LabError::Start {
                            what: "MariaDB user setup".into(),
                            // The client echoes the failing statement: mask the passwords.
                            detail: String::from_utf8_lossy(&out.stderr)
                                .replace(root_password.expose(), "***")
                                .replace(cloud_password.expose(), "***")
                                .trim()
                                .to_string(),
                        });
                    }
                    let mut db = MariaDb {
                        child: Some(child),
                        dir,
                        port,
                        root_password,
                        cloud_password,
                        version: String::new(),
                        tls: tls.clone(),
                    };
                    let v: Option<String> = db
                        .root()
                        .connect()?
                        .query_first("SELECT VERSION()")
                        .map_err(|e| LabError::Database {
                            what: "SELECT VERSION()".into(),
                            source: Box::new(e),
                        })?;
                    db.version = v.unwrap_or_default();
                    tracing::debug!(port, version = %db.version, "lab MariaDB ready");
                    return Ok(db);
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    // Another process may have taken the port between probe and bind.
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| LabError::Timeout {
            what: "mariadbd".into(),
        }))
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's `VERSION()` (`10.11.6-MariaDB`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The data and log directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's Unix socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("s")
    }

    /// The `root` user (every privilege).
    pub fn root(&self) -> DbUrl {
        self.url("root", &self.root_password)
    }

    /// The `cloud` user (every privilege, as CloudStack's setup grants on its schemas).
    pub fn cloud(&self) -> DbUrl {
        self.url("cloud", &self.cloud_password)
    }

    /// The CA and client certificate of a server started with [`MariaDbOptions::tls`].
    pub fn tls(&self) -> Option<&LabTls> {
        self.tls.as_ref()
    }

    fn url(&self, user: &str, password: &Secret) -> DbUrl {
        let url = DbUrl::new("127.0.0.1", self.port, user, password.clone());
        match &self.tls {
            Some(t) => url.with_tls(DbTls {
                mode: TlsMode::VerifyCa,
                ca: Some(t.ca.clone()),
                cert: None,
                key: None,
            }),
            None => url,
        }
    }

    /// Runs statements as root (several, separated by `;`).
    ///
    /// # Errors
    /// [`LabError::Database`] naming the failing batch.
    pub fn exec(&self, sql: &str) -> Result<()> {
        let mut conn = self.root().connect()?;
        conn.query_drop(sql).map_err(|e| LabError::Database {
            what: format!("run `{}`", first_line(sql)),
            source: Box::new(e),
        })
    }

    /// Creates a user with a random password and the given grants (`GRANT SELECT ON db.* TO
    /// {user}` style statements, where `{user}` is replaced by the quoted account).
    ///
    /// # Errors
    /// [`LabError::Database`].
    pub fn create_user(&self, name: &str, grants: &[&str]) -> Result<DbUrl> {
        let password = Secret::new(token(20));
        let account = format!("'{name}'@'%'");
        let mut sql = format!(
            "DROP USER IF EXISTS {account}; CREATE USER {account} IDENTIFIED BY '{}';",
            password.expose()
        );
        for g in grants {
            sql.push_str(&g.replace("{user}", &account));
            sql.push(';');
        }
        self.exec(&sql)?;
        Ok(self.url(name, &password))
    }

    /// A database of its own for one test: `cs_t_<name>_<pid>`, created empty now and dropped
    /// when the returned handle drops (kept when the test is panicking, for inspection).
    ///
    /// # Errors
    /// [`LabError::Database`].
    pub fn database(&self, name: &str) -> Result<TestDb<'_>> {
        let base = format!("cs_t_{}_{}", sanitize(name), std::process::id());
        self.exec(&format!(
            "DROP DATABASE IF EXISTS `{base}`; CREATE DATABASE `{base}`"
        ))?;
        Ok(TestDb {
            server: self,
            created: vec![base.clone()],
            base,
        })
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM lets InnoDB shut down; the watchdog finishes the job if it hangs.
            let pid = child.id();
            let _ = command(Path::new("/bin/kill"))
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
            for _ in 0..100 {
                if !alive(pid) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One test's databases on a shared [`MariaDb`]; every schema it created is dropped on drop.
#[derive(Debug)]
pub struct TestDb<'a> {
    server: &'a MariaDb,
    base: String,
    created: Vec<String>,
}

impl TestDb<'_> {
    /// The test's main database name (`cs_t_<name>_<pid>`).
    pub fn name(&self) -> &str {
        &self.base
    }

    /// A root URL with the test database as default schema.
    pub fn url(&self) -> DbUrl {
        self.server.root().with_database(&self.base)
    }

    /// The server.
    pub fn server(&self) -> &MariaDb {
        self.server
    }

    /// Another schema for the same test (`<name>_<suffix>`), created empty now, dropped with
    /// the handle. Use it for the second schema of a pair such as `cloud` + `cloud_usage`.
    ///
    /// # Errors
    /// [`LabError::Database`].
    pub fn extra(&mut self, suffix: &str) -> Result<String> {
        let name = format!("{}_{}", self.base, sanitize(suffix));
        self.server.exec(&format!(
            "DROP DATABASE IF EXISTS `{0}`; CREATE DATABASE `{0}`",
            name
        ))?;
        self.created.push(name.clone());
        Ok(name)
    }

    /// Registers a schema created by the code under test, so it is dropped with the handle.
    pub fn adopt(&mut self, schema: &str) {
        self.created.push(schema.to_string());
    }
}

impl Drop for TestDb<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let sql: String = self
            .created
            .iter()
            .map(|d| format!("DROP DATABASE IF EXISTS `{d}`;"))
            .collect();
        if let Err(e) = self.server.exec(&sql) {
            tracing::warn!(error = %e, "could not drop test databases");
        }
    }
}

/// The MariaDB server shared by every test of this test binary, started on first use.
///
/// # Panics
/// When the server cannot start: a test that needs MariaDB fails (never skips) with the reason,
/// for example the Debian package to install.
pub fn mariadb() -> &'static MariaDb {
    static SHARED: OnceLock<MariaDb> = OnceLock::new();
    SHARED.get_or_init(|| match MariaDb::start() {
        Ok(db) => db,
        Err(e) => panic!("cannot start the lab MariaDB: {}", cs_core::error_chain(&e)),
    })
}

/// The MariaDB server with TLS required ([`MariaDbOptions::tls`]) shared by every test of
/// this test binary, started on first use.
///
/// # Panics
/// As [`mariadb()`].
pub fn mariadb_tls() -> &'static MariaDb {
    static SHARED: OnceLock<MariaDb> = OnceLock::new();
    SHARED.get_or_init(|| {
        let options = MariaDbOptions {
            tls: true,
            ..MariaDbOptions::default()
        };
        match MariaDb::start_with(&options) {
            Ok(db) => db,
            Err(e) => panic!(
                "cannot start the lab MariaDB with TLS: {}",
                cs_core::error_chain(&e)
            ),
        }
    })
}

/// Writes a CA, a server certificate for 127.0.0.1 and `localhost` and a client certificate
/// (with their keys, 0600) into `dir`.
fn write_certs(dir: &Path) -> Result<LabTls> {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    use std::os::unix::fs::OpenOptionsExt as _;
    let fail = |e: rcgen::Error| LabError::Start {
        what: "lab TLS certificates".into(),
        detail: e.to_string(),
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "cs-lab test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().map_err(fail)?).map_err(fail)?;
    let leaf = |cn: &str, sans: Vec<String>, usage: ExtendedKeyUsagePurpose| {
        let mut p = CertificateParams::new(sans).map_err(fail)?;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![usage];
        let key = KeyPair::generate().map_err(fail)?;
        let cert = p.signed_by(&key, &ca).map_err(fail)?;
        Ok::<_, LabError>((cert.pem(), key.serialize_pem()))
    };
    let (server_cert, server_key) = leaf(
        "127.0.0.1",
        vec!["127.0.0.1".into(), "localhost".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let (client_cert, client_key) = leaf(
        "cs-lab client",
        Vec::new(),
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    let write = |name: &str, text: &str| -> Result<PathBuf> {
        let path = dir.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| LabError::io(format!("write {name}"), e))?;
        std::io::Write::write_all(&mut f, text.as_bytes())
            .map_err(|e| LabError::io(format!("write {name}"), e))?;
        Ok(path)
    };
    let ca_path = write("ca.pem", &ca.pem())?;
    write("server-cert.pem", &server_cert)?;
    write("server-key.pem", &server_key)?;
    Ok(LabTls {
        ca: ca_path,
        client_cert: write("client-cert.pem", &client_cert)?,
        client_key: write("client-key.pem", &client_key)?,
    })
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(32)
        .collect()
}

fn first_line(sql: &str) -> String {
    let l = sql.trim().lines().next().unwrap_or("");
    if l.len() > 80 {
        format!("{}…", &l[..l.floor_char_boundary(80)])
    } else {
        l.to_string()
    }
}

fn current_user() -> String {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0);
    if uid == 0 {
        return "root".to_string();
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2] == uid.to_string())
        .map(|f| f[0].to_string())
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| uid.to_string())
}
