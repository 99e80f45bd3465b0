//! The HTTP client: signing, sending, retries, pagination and async jobs.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cs_core::Secret;
use futures::StreamExt as _;
use serde::de::DeserializeOwned;
use url::Url;

use crate::envelope::{self, Page};
use crate::error::{Error, Result};
use crate::sign::{sign, wire_query};
use crate::types::{
    AsyncJobResponse, CapabilitiesResponse, ClusterResponse, ConfigurationResponse, EventResponse,
    HostResponse, JobStatus, ManagementServerResponse, NetworkResponse, OsTypeResponse,
    RouterResponse, SystemVmResponse, TemplateResponse, VirtualMachineResponse, VolumeResponse,
    ZoneResponse,
};

/// How the client authenticates.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Credentials {
    /// An API key and its secret key: every request is signed.
    ApiKey {
        /// The API key (sent in every request).
        api_key: String,
        /// The secret key (never sent).
        secret: Secret,
    },
    /// A user name and password: the client logs in once (`login`) and sends the session key.
    Password {
        /// The user name.
        username: String,
        /// The password.
        password: Secret,
        /// The domain path (`/` for ROOT).
        domain: String,
    },
}

impl Credentials {
    /// API key credentials.
    pub fn api_key(api_key: impl Into<String>, secret: impl Into<Secret>) -> Self {
        Credentials::ApiKey {
            api_key: api_key.into(),
            secret: secret.into(),
        }
    }

    /// User name and password credentials in the ROOT domain.
    pub fn password(username: impl Into<String>, password: impl Into<Secret>) -> Self {
        Credentials::Password {
            username: username.into(),
            password: password.into(),
            domain: "/".to_string(),
        }
    }
}

/// Which signature form to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignatureMode {
    /// `signatureVersion=3` with `expires` this far in the future (the server rejects expired
    /// requests, and with `enforce.post.requests.and.timestamps` ones more than 15 minutes
    /// ahead).
    V3 {
        /// Validity of each request.
        expires: Duration,
    },
    /// The legacy form without expiry.
    Legacy,
}

impl Default for SignatureMode {
    fn default() -> Self {
        SignatureMode::V3 {
            expires: Duration::from_secs(600),
        }
    }
}

/// The HTTP method for API calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum HttpMethod {
    /// GET with the parameters in the query; switched to POST for long parameter sets and
    /// after the server answers 405.
    #[default]
    Get,
    /// POST with a form body, always.
    Post,
}

/// TLS settings. Certificates are verified against the system roots by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsConfig {
    /// A PEM bundle of extra trusted CA certificates (for a private CA).
    pub ca_bundle: Option<PathBuf>,
    /// Accept any certificate and host name. Anyone on the path can then read the session or
    /// replay signed requests: for throwaway labs only.
    pub danger_accept_invalid_certs: bool,
}

cs_core::setters!(TlsConfig {
    ca_bundle: Option<PathBuf>,
    danger_accept_invalid_certs: bool,
});

/// Retries of idempotent reads (`list*`, `query*`) after connection errors and 5xx replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub retries: u32,
    /// Wait before the first retry; doubled each time.
    pub initial_backoff: Duration,
    /// Longest wait between retries.
    pub max_backoff: Duration,
}

cs_core::setters!(RetryPolicy {
    retries: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
});

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 3,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Polling of async jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobPolicy {
    /// First wait between polls; grows by half each time.
    pub initial_interval: Duration,
    /// Longest wait between polls.
    pub max_interval: Duration,
    /// Give up after this long.
    pub deadline: Duration,
}

cs_core::setters!(JobPolicy {
    initial_interval: Duration,
    max_interval: Duration,
    deadline: Duration,
});

impl Default for JobPolicy {
    fn default() -> Self {
        JobPolicy {
            initial_interval: Duration::from_millis(500),
            max_interval: Duration::from_secs(5),
            deadline: Duration::from_secs(30 * 60),
        }
    }
}

/// Client settings. `Default` gives 30 s timeouts, signature version 3 with 10 minutes'
/// validity, GET, TLS verification on, 3 retries, pages of 500 fetched 4 at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Timeout of one HTTP request (connect to last byte).
    pub timeout: Duration,
    /// Timeout of establishing a connection.
    pub connect_timeout: Duration,
    /// Signature form.
    pub signature: SignatureMode,
    /// HTTP method.
    pub method: HttpMethod,
    /// With [`HttpMethod::Get`], send a POST form instead when the encoded parameters are
    /// longer than this (URLs beyond a few KiB are cut by proxies and servlet containers).
    pub post_above_bytes: usize,
    /// TLS settings.
    pub tls: TlsConfig,
    /// Retries of idempotent reads.
    pub retry: RetryPolicy,
    /// `pagesize` of list calls.
    pub page_size: u32,
    /// How many pages of one list are fetched at once after the first.
    pub page_concurrency: usize,
    /// Async job polling.
    pub job: JobPolicy,
    /// The largest reply body read, in bytes; a longer one is a [`Error::Malformed`] error
    /// instead of memory a misbehaving endpoint fills (64 MiB by default: a page of 500 hosts
    /// is a few MiB).
    pub max_reply_bytes: usize,
}

cs_core::setters!(ClientConfig {
    timeout: Duration,
    connect_timeout: Duration,
    signature: SignatureMode,
    method: HttpMethod,
    post_above_bytes: usize,
    tls: TlsConfig,
    retry: RetryPolicy,
    page_size: u32,
    page_concurrency: usize,
    job: JobPolicy,
    max_reply_bytes: usize,
});

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            signature: SignatureMode::default(),
            method: HttpMethod::default(),
            post_above_bytes: 4096,
            tls: TlsConfig::default(),
            retry: RetryPolicy::default(),
            page_size: 500,
            page_concurrency: 4,
            job: JobPolicy::default(),
            max_reply_bytes: 64 << 20,
        }
    }
}

/// A logged-in session.
struct Session {
    cookie: Secret,
    sessionkey: Secret,
}

struct Inner {
    http: reqwest::Client,
    endpoint: Url,
    endpoint_display: String,
    credentials: Credentials,
    config: ClientConfig,
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
    force_post: AtomicBool,
}

/// A CloudStack API client. Cheap to clone; clones share connections and the session.
///
/// # Examples
///
/// The KVM hosts and the cloud's health, signed with an API key whose secret comes from the
/// environment (`no_run`: it needs a management server; `tests/lab.rs` runs the same code
/// against the lab's API endpoint):
///
/// ```no_run
/// use cs_api::{Client, ClientConfig, Credentials, HealthExpectations, HealthReport, Secret};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let secret = Secret::new(std::env::var("CLOUDSTACK_SECRET")?);
/// let client = Client::new(
///     "https://ms1.example.org:8443/client/api",
///     Credentials::api_key("KEY", secret),
///     ClientConfig::default(),
/// )?;
/// let version = client.list_capabilities().await?.cloudstackversion;
/// let hosts = client.list_hosts(&[("type", "Routing"), ("hypervisor", "KVM")]).await?;
/// let up = hosts.iter().filter(|h| h.state.as_deref() == Some("Up")).count();
/// println!("CloudStack {version:?}: {up} of {} KVM hosts Up", hosts.len());
/// let health = HealthReport::collect(&client).await?;
/// println!("{}", health.report(&HealthExpectations::default()).to_table());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = match &self.inner.credentials {
            Credentials::ApiKey { .. } => "api key",
            Credentials::Password { .. } => "password",
        };
        f.debug_struct("Client")
            .field("endpoint", &self.inner.endpoint_display)
            .field("auth", &auth)
            .finish_non_exhaustive()
    }
}

/// A parameter list as the caller gives it.
pub type Params<'a> = &'a [(&'a str, &'a str)];

/// Whether a command only reads and may be retried.
pub fn is_idempotent(command: &str) -> bool {
    let c = command.to_ascii_lowercase();
    c.starts_with("list") || c.starts_with("query")
}

fn expires_value(validity: Duration) -> String {
    let at = time::OffsetDateTime::now_utc() + validity;
    let fmt =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]+0000");
    at.format(&fmt)
        .expect("invariant: a UTC date formats with a fixed description")
}

impl Client {
    /// A client for `endpoint` (`http(s)://host:port/client/api`; a bare `http(s)://host:port`
    /// gets `/client/api` appended).
    ///
    /// # Errors
    /// [`Error::Config`] for an unusable endpoint URL or CA bundle.
    pub fn new(endpoint: &str, credentials: Credentials, config: ClientConfig) -> Result<Self> {
        let config_err = |message: String, source: Option<crate::error::BoxError>| Error::Config {
            message,
            source,
        };
        let mut url = Url::parse(endpoint).map_err(|e| {
            config_err(
                format!("endpoint `{}` is not a URL", redact(endpoint)),
                Some(Box::new(e)),
            )
        })?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(config_err(
                format!(
                    "endpoint scheme must be http or https, not `{}`",
                    url.scheme()
                ),
                None,
            ));
        }
        url.set_query(None);
        url.set_fragment(None);
        let _ = url.set_username("");
        let _ = url.set_password(None);
        if url.path().is_empty() || url.path() == "/" {
            url.set_path("/client/api");
        }
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .pool_max_idle_per_host(16)
            .user_agent(concat!("cs-api/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &config.tls.ca_bundle {
            let pem = std::fs::read(path).map_err(|e| {
                config_err(
                    format!("cannot read CA bundle {}", path.display()),
                    Some(Box::new(e)),
                )
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                config_err(
                    format!("CA bundle {} is not PEM", path.display()),
                    Some(Box::new(e.without_url())),
                )
            })?;
            if certs.is_empty() {
                return Err(config_err(
                    format!("CA bundle {} holds no certificate", path.display()),
                    None,
                ));
            }
            builder = builder.tls_certs_merge(certs);
        }
        if config.tls.danger_accept_invalid_certs {
            tracing::warn!(endpoint = %url, "TLS certificate verification is OFF");
            builder = builder
                .tls_danger_accept_invalid_certs(true)
                .tls_danger_accept_invalid_hostnames(true);
        }
        let http = builder.build().map_err(|e| {
            config_err(
                "cannot build the HTTP client".into(),
                Some(Box::new(e.without_url())),
            )
        })?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                endpoint_display: url.to_string(),
                endpoint: url,
                credentials,
                force_post: AtomicBool::new(config.method == HttpMethod::Post),
                config,
                session: tokio::sync::Mutex::new(None),
            }),
        })
    }

    /// The endpoint (scheme, host, port, path; never a query).
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint_display
    }

    /// The settings.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Logs in with the password credentials, if that is how this client authenticates and no
    /// session exists yet. Calls do this by themselves; call it to fail early.
    ///
    /// # Errors
    /// [`Error::Unauthorized`] when the server refuses the user or password; transport errors.
    pub async fn login(&self) -> Result<()> {
        self.session().await.map(|_| ())
    }

    async fn session(&self) -> Result<Option<Arc<Session>>> {
        let Credentials::Password {
            username,
            password,
            domain,
        } = &self.inner.credentials
        else {
            return Ok(None);
        };
        let mut guard = self.inner.session.lock().await;
        if let Some(s) = guard.as_ref() {
            return Ok(Some(s.clone()));
        }
        let params = vec![
            ("command".to_string(), "login".to_string()),
            ("username".to_string(), username.clone()),
            ("password".to_string(), password.expose().to_string()),
            ("domain".to_string(), domain.clone()),
            ("response".to_string(), "json".to_string()),
        ];
        let resp = self
            .inner
            .http
            .post(self.inner.endpoint.clone())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(wire_query(&params))
            .send()
            .await
            .map_err(|e| self.transport("login", e))?;
        let mut cookies = Vec::new();
        for v in resp.headers().get_all(reqwest::header::SET_COOKIE) {
            if let Ok(v) = v.to_str()
                && let Some(pair) = v.split(';').next()
                && let Some((name, value)) = pair.trim().split_once('=')
                && (name.eq_ignore_ascii_case("JSESSIONID") || name == "sessionkey")
            {
                cookies.push(format!("{name}={value}"));
            }
        }
        let status = resp.status().as_u16();
        let body = self.read_body(resp, "login").await?;
        let value = envelope::parse_value(self.endpoint(), "login", status, &body).map_err(
            |e| match e {
                // A refused login is ACCOUNT_ERROR (531), not 401.
                Error::Api {
                    errorcode: 531,
                    errortext,
                    ..
                } => Error::Unauthorized {
                    endpoint: self.endpoint().to_string(),
                    command: "login".into(),
                    errortext,
                },
                other => other,
            },
        )?;
        let key = value
            .get("sessionkey")
            .and_then(|k| k.as_str())
            .ok_or_else(|| Error::Malformed {
                endpoint: self.endpoint().to_string(),
                command: "login".into(),
                detail: "login reply has no sessionkey".into(),
            })?;
        let session = Arc::new(Session {
            cookie: Secret::new(cookies.join("; ")),
            sessionkey: Secret::new(key),
        });
        *guard = Some(session.clone());
        Ok(Some(session))
    }

    fn transport(&self, command: &str, e: reqwest::Error) -> Error {
        let e = e.without_url();
        if e.is_timeout() {
            Error::Timeout {
                endpoint: self.endpoint().to_string(),
                command: command.to_string(),
                after: self.inner.config.timeout,
            }
        } else {
            Error::Connect {
                endpoint: self.endpoint().to_string(),
                command: command.to_string(),
                source: Box::new(e),
            }
        }
    }

    /// The full parameter list of a request, signed or with the session key.
    fn signed_params(
        &self,
        command: &str,
        params: Params<'_>,
        session: Option<&Session>,
    ) -> Vec<(String, String)> {
        const RESERVED: [&str; 7] = [
            "command",
            "response",
            "apikey",
            "signature",
            "signatureversion",
            "expires",
            "sessionkey",
        ];
        let mut p: Vec<(String, String)> = Vec::with_capacity(params.len() + 6);
        p.push(("command".into(), command.into()));
        for (k, v) in params {
            if !RESERVED.contains(&k.to_ascii_lowercase().as_str()) {
                p.push(((*k).into(), (*v).into()));
            }
        }
        p.push(("response".into(), "json".into()));
        match &self.inner.credentials {
            Credentials::ApiKey { api_key, secret } => {
                p.push(("apiKey".into(), api_key.clone()));
                if let SignatureMode::V3 { expires } = self.inner.config.signature {
                    p.push(("signatureVersion".into(), "3".into()));
                    p.push(("expires".into(), expires_value(expires)));
                }
                let signature = sign(&p, secret);
                p.push(("signature".into(), signature));
            }
            Credentials::Password { .. } => {
                if let Some(s) = session {
                    p.push(("sessionkey".into(), s.sessionkey.expose().to_string()));
                }
            }
        }
        p
    }

    /// Sends one request and returns the body of a 200 reply; other replies become errors.
    async fn send_once(&self, command: &str, params: Params<'_>) -> Result<(u16, bytes::Bytes)> {
        let session = self.session().await?;
        let p = self.signed_params(command, params, session.as_deref());
        let query = wire_query(&p);
        let post = self.inner.force_post.load(Ordering::Relaxed)
            || query.len() > self.inner.config.post_above_bytes;
        let mut req = if post {
            self.inner
                .http
                .post(self.inner.endpoint.clone())
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(query)
        } else {
            let mut url = self.inner.endpoint.clone();
            url.set_query(Some(&query));
            self.inner.http.get(url)
        };
        if let Some(s) = &session {
            req = req.header(reqwest::header::COOKIE, s.cookie.expose());
        }
        tracing::debug!(command, post, "cloudstack api request");
        let resp = req.send().await.map_err(|e| self.transport(command, e))?;
        let status = resp.status().as_u16();
        let body = self.read_body(resp, command).await?;
        Ok((status, body))
    }

    /// The body of a reply, refused once it is longer than `max_reply_bytes` (announced or
    /// streamed).
    async fn read_body(&self, mut resp: reqwest::Response, command: &str) -> Result<bytes::Bytes> {
        let limit = self.inner.config.max_reply_bytes;
        let too_long = |what: String| Error::Malformed {
            endpoint: self.endpoint().to_string(),
            command: command.to_string(),
            detail: format!("{what}, more than the {limit} bytes allowed (max_reply_bytes)"),
        };
        if let Some(len) = resp.content_length()
            && len > limit as u64
        {
            return Err(too_long(format!("the reply announces {len} bytes")));
        }
        let mut body = bytes::BytesMut::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.transport(command, e))? {
            if body.len() + chunk.len() > limit {
                return Err(too_long("the reply goes on".to_string()));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }

    /// Sends with retries for idempotent reads and the switch to POST after a 405; returns the
    /// body of a 200 reply or the mapped error.
    async fn send(&self, command: &str, params: Params<'_>) -> Result<bytes::Bytes> {
        let retry = self.inner.config.retry;
        let idempotent = is_idempotent(command);
        let mut attempt = 0u32;
        let mut switched = false;
        loop {
            let result = match self.send_once(command, params).await {
                Ok((200, body)) => Ok(body),
                Ok((status, body)) => Err(envelope::error_from(
                    self.endpoint(),
                    command,
                    status,
                    &body,
                )),
                Err(e) => Err(e),
            };
            match result {
                Err(e) if !switched && is_method_not_allowed(&e) => {
                    tracing::info!(command, "server wants POST; switching");
                    self.inner.force_post.store(true, Ordering::Relaxed);
                    switched = true;
                }
                Err(e) if idempotent && e.is_transient() && attempt < retry.retries => {
                    let wait = retry
                        .initial_backoff
                        .saturating_mul(1 << attempt.min(16))
                        .min(retry.max_backoff);
                    tracing::debug!(command, attempt, ?wait, error = %e, "retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e @ Error::Unauthorized { .. }) => {
                    // A session may have expired: log in again once.
                    if let Credentials::Password { .. } = self.inner.credentials
                        && attempt == 0
                        && self.inner.session.lock().await.take().is_some()
                    {
                        attempt += 1;
                        continue;
                    }
                    return Err(e);
                }
                other => return other,
            }
        }
    }

    /// Calls any command and returns the value under its single top-level key (for
    /// `listHosts`, `{"count": 2, "host": [...]}`).
    ///
    /// # Errors
    /// Transport errors, [`Error::Unauthorized`], [`Error::Api`] for an error envelope,
    /// [`Error::Malformed`] for a reply that is not CloudStack JSON.
    pub async fn call(&self, command: &str, params: Params<'_>) -> Result<serde_json::Value> {
        let body = self.send(command, params).await?;
        envelope::parse_value(self.endpoint(), command, 200, &body)
    }

    /// Calls a command that returns one object under `object_key` (`listCapabilities` →
    /// `capability`).
    ///
    /// # Errors
    /// As [`Client::call`]; [`Error::Malformed`] when the object is missing or of another shape.
    pub async fn call_object<T: DeserializeOwned>(
        &self,
        command: &str,
        object_key: &str,
        params: Params<'_>,
    ) -> Result<T> {
        let mut value = self.call(command, params).await?;
        let obj = value
            .get_mut(object_key)
            .map(serde_json::Value::take)
            .ok_or_else(|| self.malformed(command, format!("no `{object_key}` in reply")))?;
        serde_json::from_value(obj).map_err(|e| self.malformed(command, e.to_string()))
    }

    fn malformed(&self, command: &str, detail: String) -> Error {
        Error::Malformed {
            endpoint: self.endpoint().to_string(),
            command: command.to_string(),
            detail,
        }
    }

    /// Fetches every page of a list command (`pagesize` from the config) and deserializes the
    /// items under `object_key` (`host`, `virtualmachine`). After the first page, the remaining
    /// ones are fetched [`ClientConfig::page_concurrency`] at a time until `count` items are in
    /// or a page comes back empty.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn list<T: DeserializeOwned + Send>(
        &self,
        command: &str,
        object_key: &str,
        params: Params<'_>,
    ) -> Result<Vec<T>> {
        let page_size = self.inner.config.page_size.max(1);
        let size_text = page_size.to_string();
        let fetch = |page: u64| {
            let size_text = size_text.clone();
            async move {
                let page_text = page.to_string();
                let mut p: Vec<(&str, &str)> = params
                    .iter()
                    .filter(|(k, _)| {
                        !k.eq_ignore_ascii_case("page") && !k.eq_ignore_ascii_case("pagesize")
                    })
                    .copied()
                    .collect();
                p.push(("page", &page_text));
                p.push(("pagesize", &size_text));
                let body = self.send(command, &p).await?;
                envelope::parse_page::<T>(self.endpoint(), command, object_key, &body)
            }
        };
        let first: Page<T> = fetch(1).await?;
        let mut count = first.count.unwrap_or(0);
        let mut items = first.items;
        if items.len() < page_size as usize || items.len() as u64 >= count {
            return Ok(items);
        }
        let last_page = count.div_ceil(u64::from(page_size));
        let mut short = false;
        {
            let mut pages = futures::stream::iter(2..=last_page)
                .map(&fetch)
                .buffered(self.inner.config.page_concurrency.max(1));
            while let Some(page) = pages.next().await {
                let page = page?;
                short |= page.items.len() < page_size as usize;
                count = count.max(page.count.unwrap_or(0));
                items.extend(page.items);
            }
        }
        // The list grew while we paged: go on one page at a time.
        let mut next = last_page + 1;
        while !short && (items.len() as u64) < count {
            let page = fetch(next).await?;
            short = page.items.len() < page_size as usize;
            count = count.max(page.count.unwrap_or(0));
            items.extend(page.items);
            next += 1;
        }
        Ok(items)
    }

    /// `listCapabilities`.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn list_capabilities(&self) -> Result<CapabilitiesResponse> {
        self.call_object("listCapabilities", "capability", &[])
            .await
    }

    /// `listManagementServers` (admin; 4.12+).
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn list_management_servers(
        &self,
        params: Params<'_>,
    ) -> Result<Vec<ManagementServerResponse>> {
        self.list("listManagementServers", "managementserver", params)
            .await
    }

    /// `listHosts` (pass `("type", "Routing")` for hypervisors only).
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn list_hosts(&self, params: Params<'_>) -> Result<Vec<HostResponse>> {
        self.list("listHosts", "host", params).await
    }

    /// `listSystemVms`.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn list_system_vms(&self, params: Params<'_>) -> Result<Vec<SystemVmResponse>> {
        self.list("listSystemVms", "systemvm", params).await
    }

    /// `listRouters`.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn list_routers(&self, params: Params<'_>) -> Result<Vec<RouterResponse>> {
        self.list("listRouters", "router", params).await
    }

    /// `listVirtualMachines` (pass `("listall", "true")` to see every account's VMs).
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn list_virtual_machines(
        &self,
        params: Params<'_>,
    ) -> Result<Vec<VirtualMachineResponse>> {
        self.list("listVirtualMachines", "virtualmachine", params)
            .await
    }

    /// `listEvents` (pass `("startdate", "yyyy-MM-dd HH:mm:ss")` for the events since then).
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn list_events(&self, params: Params<'_>) -> Result<Vec<EventResponse>> {
        self.list("listEvents", "event", params).await
    }

    /// `listVolumes`.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn list_volumes(&self, params: Params<'_>) -> Result<Vec<VolumeResponse>> {
        self.list("listVolumes", "volume", params).await
    }

    /// `listNetworks`.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn list_networks(&self, params: Params<'_>) -> Result<Vec<NetworkResponse>> {
        self.list("listNetworks", "network", params).await
    }

    /// `listZones`.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn list_zones(&self, params: Params<'_>) -> Result<Vec<ZoneResponse>> {
        self.list("listZones", "zone", params).await
    }

    /// `listTemplates` (CloudStack requires `templatefilter`, e.g. `all`).
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn list_templates(&self, params: Params<'_>) -> Result<Vec<TemplateResponse>> {
        self.list("listTemplates", "template", params).await
    }

    /// `listOsTypes`.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn list_os_types(&self, params: Params<'_>) -> Result<Vec<OsTypeResponse>> {
        self.list("listOsTypes", "ostype", params).await
    }

    /// `registerTemplate` (synchronous: the template is registered, its download starts);
    /// returns one entry per zone. Never retried: a transport error may leave it registered,
    /// so look for it by name before registering again.
    ///
    /// # Errors
    /// As [`Client::call`]; [`Error::Malformed`] when the reply lists no template.
    pub async fn register_template(&self, params: Params<'_>) -> Result<Vec<TemplateResponse>> {
        let mut value = self.call("registerTemplate", params).await?;
        let list = value
            .get_mut("template")
            .map(serde_json::Value::take)
            .ok_or_else(|| self.malformed("registerTemplate", "no `template` in reply".into()))?;
        serde_json::from_value(list).map_err(|e| self.malformed("registerTemplate", e.to_string()))
    }

    /// `listClusters`.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn list_clusters(&self, params: Params<'_>) -> Result<Vec<ClusterResponse>> {
        self.list("listClusters", "cluster", params).await
    }

    /// `listConfigurations` (pass `("name", "...")` for one setting).
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn list_configurations(
        &self,
        params: Params<'_>,
    ) -> Result<Vec<ConfigurationResponse>> {
        self.list("listConfigurations", "configuration", params)
            .await
    }

    /// `updateConfiguration name=… value=…` (global scope).
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn update_configuration(
        &self,
        name: &str,
        value: &str,
    ) -> Result<ConfigurationResponse> {
        self.call_object(
            "updateConfiguration",
            "configuration",
            &[("name", name), ("value", value)],
        )
        .await
    }

    /// `prepareHostForMaintenance id=…`, waiting for the job.
    ///
    /// # Errors
    /// As [`Client::call`]; [`Error::JobFailed`], [`Error::JobTimeout`].
    pub async fn prepare_host_for_maintenance(&self, host_id: &str) -> Result<AsyncJobResponse> {
        self.call_async("prepareHostForMaintenance", &[("id", host_id)])
            .await
    }

    /// `cancelHostMaintenance id=…`, waiting for the job.
    ///
    /// # Errors
    /// As [`Client::call`]; [`Error::JobFailed`], [`Error::JobTimeout`].
    pub async fn cancel_host_maintenance(&self, host_id: &str) -> Result<AsyncJobResponse> {
        self.call_async("cancelHostMaintenance", &[("id", host_id)])
            .await
    }

    /// `queryAsyncJobResult jobid=…`, once.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn query_async_job_result(&self, jobid: &str) -> Result<AsyncJobResponse> {
        let value = self
            .call("queryAsyncJobResult", &[("jobid", jobid)])
            .await?;
        serde_json::from_value(value)
            .map_err(|e| self.malformed("queryAsyncJobResult", e.to_string()))
    }

    /// Calls an asynchronous command and waits for its job ([`ClientConfig::job`]).
    ///
    /// # Errors
    /// As [`Client::call`]; [`Error::Malformed`] when the reply has no `jobid`;
    /// [`Error::JobFailed`] with the job's error text; [`Error::JobTimeout`].
    pub async fn call_async(&self, command: &str, params: Params<'_>) -> Result<AsyncJobResponse> {
        let value = self.call(command, params).await?;
        let jobid = value
            .get("jobid")
            .and_then(|j| j.as_str())
            .ok_or_else(|| self.malformed(command, "no jobid in the reply".into()))?
            .to_string();
        self.wait_job(&jobid, command, self.inner.config.job.deadline)
            .await
    }

    /// Polls `queryAsyncJobResult` with growing intervals until the job ends or `deadline`
    /// passes. `command` names the job in errors.
    ///
    /// # Errors
    /// [`Error::JobFailed`] (failed or cancelled job, with its error text),
    /// [`Error::JobTimeout`], and the errors of [`Client::call`].
    pub async fn wait_job(
        &self,
        jobid: &str,
        command: &str,
        deadline: Duration,
    ) -> Result<AsyncJobResponse> {
        let policy = self.inner.config.job;
        let start = Instant::now();
        let mut interval = policy.initial_interval;
        loop {
            let job = self.query_async_job_result(jobid).await?;
            match job.status() {
                JobStatus::Succeeded => return Ok(job),
                JobStatus::Failed | JobStatus::Cancelled => {
                    let code = job
                        .jobresult
                        .as_ref()
                        .and_then(|r| r.get("errorcode"))
                        .and_then(serde_json::Value::as_i64)
                        .or(job.jobresultcode)
                        .unwrap_or(530);
                    return Err(Error::JobFailed {
                        jobid: jobid.to_string(),
                        command: command.to_string(),
                        errorcode: u16::try_from(code).unwrap_or(530),
                        errortext: job
                            .error_text()
                            .map(str::to_string)
                            .unwrap_or_else(|| format!("job ended with {:?}", job.status())),
                    });
                }
                JobStatus::Pending => {}
            }
            let waited = start.elapsed();
            if waited >= deadline {
                return Err(Error::JobTimeout {
                    jobid: jobid.to_string(),
                    command: command.to_string(),
                    waited,
                });
            }
            tokio::time::sleep(interval.min(deadline - waited)).await;
            interval = (interval + interval / 2).min(policy.max_interval);
        }
    }
}

fn is_method_not_allowed(e: &Error) -> bool {
    matches!(
        e,
        Error::Http { status: 405, .. }
            | Error::Api {
                http_status: 405,
                ..
            }
    )
}

/// An endpoint string for messages: no user info, query or fragment.
fn redact(endpoint: &str) -> String {
    let cut = endpoint.find(['?', '#']).unwrap_or(endpoint.len());
    let s = &endpoint[..cut];
    match (s.find("://"), s.rfind('@')) {
        (Some(i), Some(j)) if j > i => format!("{}{}", &s[..i + 3], &s[j + 1..]),
        _ => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_is_normalised_and_redacted() {
        let c = Client::new(
            "http://user:pw@127.0.0.1:8080?apiKey=x&signature=y",
            Credentials::api_key("k", "s"),
            ClientConfig::default(),
        )
        .unwrap();
        assert_eq!(c.endpoint(), "http://127.0.0.1:8080/client/api");
        assert_eq!(
            format!("{c:?}"),
            r#"Client { endpoint: "http://127.0.0.1:8080/client/api", auth: "api key", .. }"#
        );
        assert_eq!(redact("http://u:p@h/x?s=1"), "http://h/x");
    }

    #[test]
    fn bad_endpoints_are_config_errors() {
        for e in ["not a url", "ftp://h/x"] {
            let r = Client::new(e, Credentials::api_key("k", "s"), ClientConfig::default());
            assert!(matches!(r, Err(Error::Config { .. })), "{e}");
        }
    }

    #[test]
    fn signed_params_carry_expiry_and_no_reserved_overrides() {
        let c = Client::new(
            "http://127.0.0.1:1/client/api",
            Credentials::api_key("k", "s"),
            ClientConfig::default(),
        )
        .unwrap();
        let p = c.signed_params("listZones", &[("signature", "forged"), ("name", "z")], None);
        let names: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "command",
                "name",
                "response",
                "apiKey",
                "signatureVersion",
                "expires",
                "signature"
            ]
        );
        let expires = &p[5].1;
        assert_eq!(expires.len(), "2030-01-02T03:04:05+0000".len(), "{expires}");
        assert!(expires.ends_with("+0000"));
    }

    #[test]
    fn only_reads_are_idempotent() {
        assert!(is_idempotent("listHosts"));
        assert!(is_idempotent("queryAsyncJobResult"));
        assert!(!is_idempotent("prepareHostForMaintenance"));
        assert!(!is_idempotent("updateConfiguration"));
    }
}
