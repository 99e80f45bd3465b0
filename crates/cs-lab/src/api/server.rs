//! The HTTP side of the lab API endpoint: serving connections, the tick that runs due work and
//! reads the cloud back, injected faults, and `ApiServer`'s checks (sessions, signatures,
//! `expires`, POST) before a request reaches the cloud.

use std::collections::HashMap;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use serde_json::json;

use super::state::{Cloud, Params, Reply, error_reply, is_known};
use super::{Fault, RecordedRequest, Session, Shared, lock, persist, verify};

/// Closing the connection on purpose.
#[derive(Debug)]
struct DropConnection;

impl fmt::Display for DropConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for DropConnection {}

/// How often due work runs, and how often the cloud is read back from its database.
const TICK: Duration = Duration::from_millis(20);
const RELOAD_EVERY: u32 = 10;

/// Runs what is due (and the power-state sync), then, with `reload`, reads the cloud back from
/// its database unless a change raced the read. Blocking.
pub(super) fn step(shared: &Shared, reload: bool) {
    let (generation, pending) = {
        let mut c = shared.cloud.write().unwrap_or_else(PoisonError::into_inner);
        c.advance(std::time::Instant::now());
        if reload {
            c.power_sync();
        }
        let pending = c.persist.as_ref().is_some_and(persist::Persist::pending);
        (c.generation, pending)
    };
    if !reload || pending {
        return;
    }
    let snapshot = {
        let mut reader = lock(&shared.reader);
        match reader.as_mut().map(persist::Reader::load) {
            Some(Ok(s)) => s,
            _ => return,
        }
    };
    let mut c = shared.cloud.write().unwrap_or_else(PoisonError::into_inner);
    if c.generation == generation {
        c.apply(&snapshot);
    }
}

pub(super) async fn tick(shared: Arc<Shared>) {
    let mut n: u32 = 0;
    loop {
        tokio::time::sleep(TICK).await;
        n = n.wrapping_add(1);
        let s = shared.clone();
        let reload = n.is_multiple_of(RELOAD_EVERY);
        if tokio::task::spawn_blocking(move || step(&s, reload))
            .await
            .is_err()
        {
            return;
        }
    }
}

pub(super) async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(shared.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        }
    }
}

fn respond(reply: Reply, extra: Vec<(&'static str, String)>) -> Response<Full<Bytes>> {
    let mut b = Response::builder()
        .status(reply.status)
        .header("content-type", "application/json; charset=UTF-8");
    for (k, v) in extra {
        b = b.header(k, v);
    }
    b.body(Full::new(Bytes::from(reply.body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> std::result::Result<Response<Full<Bytes>>, DropConnection> {
    let method = req.method().as_str().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let cookies: HashMap<String, String> = req
        .headers()
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let is_form = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(DropConnection),
    };
    // getParameterMap (form body and query), then utf8Fixup re-decodes the query string.
    let mut params = Params::new();
    let mut parse_error = None;
    if method == "POST"
        && is_form
        && let Err(e) = verify::parse_form(&String::from_utf8_lossy(&body), &mut params)
    {
        parse_error = Some(e);
    }
    if let Err(e) = verify::parse_query(&query, &mut params) {
        parse_error = Some(e);
    }
    let command = params.get("command").cloned();
    let fault = {
        let mut faults = lock(&shared.faults);
        let hit = faults.iter_mut().find(|r| {
            r.remaining > 0
                && r.command
                    .as_deref()
                    .is_none_or(|c| Some(c) == command.as_deref())
        });
        hit.map(|r| {
            r.remaining -= 1;
            r.fault.clone()
        })
    };
    let record = |status: u16| {
        if *lock(&shared.record) {
            lock(&shared.requests).push(RecordedRequest {
                method: method.clone(),
                command: command.clone(),
                params: params.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                status,
            });
        }
    };
    let panic_now = matches!(fault, Some(Fault::Panic));
    let serving = shared
        .cloud
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .serving();
    if !serving && !matches!(fault, Some(Fault::Drop | Fault::Status(_))) {
        // No management server runs: the load balancer in front of them answers.
        record(503);
        let mut r = respond(
            Reply {
                status: 503,
                body: b"<html><body><h1>503 Service Unavailable</h1>\nNo server is available to handle this request.\n</body></html>\n".to_vec(),
            },
            vec![],
        );
        r.headers_mut().insert(
            "content-type",
            hyper::header::HeaderValue::from_static("text/html"),
        );
        return Ok(r);
    }
    match fault {
        Some(Fault::Drop) => {
            record(0);
            return Err(DropConnection);
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        Some(Fault::Panic) => {}
        Some(Fault::Status(code)) => {
            record(code);
            let reply = Reply {
                status: code,
                body: format!("<html><body><h1>{code} injected by the lab</h1></body></html>")
                    .into_bytes(),
            };
            let mut r = respond(reply, vec![]);
            r.headers_mut().insert(
                "content-type",
                hyper::header::HeaderValue::from_static("text/html"),
            );
            return Ok(r);
        }
        Some(Fault::ApiError { code, text }) => {
            record(code);
            let reply = error_reply(command.as_deref(), code, Some(4250), &text);
            return Ok(respond(reply, vec![("X-Description", text)]));
        }
        Some(Fault::Malformed) => {
            record(200);
            return Ok(respond(
                Reply {
                    status: 200,
                    body: b"<html>this is not JSON</html>".to_vec(),
                },
                vec![],
            ));
        }
        None => {}
    }
    let outcome = {
        let (shared, method, params, command) = (
            shared.clone(),
            method.clone(),
            params.clone(),
            command.clone(),
        );
        tokio::task::spawn_blocking(move || {
            std::panic::catch_unwind(AssertUnwindSafe(|| {
                assert!(!panic_now, "panic injected by Fault::Panic");
                if let Some(e) = &parse_error {
                    return (error_reply(command.as_deref(), 400, None, e), vec![]);
                }
                answer(&shared, &method, &params, &cookies)
            }))
        })
        .await
        .unwrap_or_else(|e| Err(Box::new(e.to_string())))
    };
    let (reply, extra) = match outcome {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-string panic".into());
            lock(&shared.panics).push(format!("{}: {msg}", command.as_deref().unwrap_or("?")));
            (
                error_reply(
                    command.as_deref(),
                    530,
                    Some(4250),
                    "internal error (lab handler panicked)",
                ),
                vec![],
            )
        }
    };
    record(reply.status);
    Ok(respond(reply, extra))
}

type Answer = (Reply, Vec<(&'static str, String)>);

const UNVERIFIED: &str = "unable to verify user credentials and/or request signature";

fn answer(shared: &Shared, method: &str, p: &Params, cookies: &HashMap<String, String>) -> Answer {
    let command = p.get("command").map(String::as_str);
    if command == Some("login") {
        return login(shared, p);
    }
    // A session (cookie JSESSIONID) must come with its session key as cookie and parameter.
    if let Some(sid) = cookies.get("JSESSIONID") {
        let sessions = lock(&shared.sessions);
        let Some(s) = sessions.get(sid) else {
            return (
                error_reply(command, 401, None, "unable to verify user credentials"),
                vec![],
            );
        };
        let param_ok = p.get("sessionkey") == Some(&s.key);
        let cookie_ok = cookies.get("sessionkey").is_none_or(|k| k == &s.key);
        if !(param_ok && cookie_ok) {
            return (
                error_reply(command, 401, None, "unable to verify user credentials"),
                vec![],
            );
        }
    } else if let Err(why) = verify_request(shared, p) {
        tracing::debug!(why, "lab API refused a request");
        return (error_reply(command, 401, None, UNVERIFIED), vec![]);
    }
    let Some(command) = command else {
        return (error_reply(None, 401, None, UNVERIFIED), vec![]);
    };
    if *lock(&shared.enforce_post) && method != "POST" {
        return (
            error_reply(
                Some(command),
                405,
                None,
                "Please use HTTP POST to invoke this API",
            ),
            vec![],
        );
    }
    if command == "listEvents"
        && let Some(reader) = lock(&shared.reader).as_mut()
    {
        // The events are the database's: a restored database has lost the newer ones.
        let since = p.get("startdate").map(String::as_str);
        return match reader.events(since) {
            Ok(events) => (Cloud::events_reply(command, &events, p), vec![]),
            Err(e) => (
                error_reply(
                    Some(command),
                    530,
                    Some(4250),
                    &format!("DB Exception on: listEvents ({e})"),
                ),
                vec![],
            ),
        };
    }
    let reply = if Cloud::is_read_only(command) {
        let cloud = shared.cloud.read().unwrap_or_else(PoisonError::into_inner);
        cloud.read(command, p)
    } else {
        None
    };
    let reply = reply.unwrap_or_else(|| {
        shared
            .cloud
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .dispatch(command, p)
    });
    (reply, vec![])
}

/// `ApiServer.verifyRequest`, step by step; the reason is for the lab's debug log only.
fn verify_request(shared: &Shared, p: &Params) -> std::result::Result<(), &'static str> {
    let command = p.get("command").ok_or("missing command")?;
    if !is_known(command) {
        return Err("unknown command");
    }
    let mut api_key = None;
    let mut signature = None;
    let mut version = None;
    let mut expires = None;
    for (k, v) in p {
        if k.eq_ignore_ascii_case("signature") {
            signature = Some(v);
        } else if k.eq_ignore_ascii_case("apikey") {
            api_key = Some(v);
        } else if k.eq_ignore_ascii_case("signatureversion") {
            version = Some(v);
        } else if k.eq_ignore_ascii_case("expires") {
            expires = Some(v);
        }
    }
    let (Some(signature), Some(api_key)) = (signature, api_key) else {
        return Err("missing signature or apiKey");
    };
    let enforce = *lock(&shared.enforce_post);
    let now = time::OffsetDateTime::now_utc().unix_timestamp() + *lock(&shared.clock_skew);
    if version.map(String::as_str) == Some("3") {
        let expires = expires.ok_or("missing expires")?;
        let at = verify::parse_expires(expires).ok_or("bad expires format")?;
        if at < now {
            return Err("request expired");
        }
        if enforce && at > now + 15 * 60 {
            return Err("expires too far ahead");
        }
    } else if enforce {
        return Err("signature version 3 required");
    }
    let secret = lock(&shared.keys)
        .get(api_key)
        .cloned()
        .ok_or("unknown apiKey")?;
    if verify::compute_signature(p, &secret) != *signature {
        return Err("signature mismatch");
    }
    Ok(())
}

fn login(shared: &Shared, p: &Params) -> Answer {
    let user = p.get("username").cloned().unwrap_or_default();
    let ok = lock(&shared.users).get(&user) == p.get("password");
    if !ok {
        let text = format!(
            "Failed to authenticate user {user} in domain 1; please provide valid credentials"
        );
        return (error_reply(Some("login"), 531, Some(4330), &text), vec![]);
    }
    let sid = crate::util::token(32);
    let key = crate::util::token(27);
    lock(&shared.sessions).insert(sid.clone(), Session { key: key.clone() });
    let body = json!({"loginresponse": {
        "username": user, "userid": "8b6f0c3e-0000-4000-8000-000000000072",
        "domainid": super::render::DOMAIN_ID, "timeout": 1800,
        "account": user, "type": "1", "timezone": "UTC", "registered": "false",
        "sessionkey": key, "is2faenabled": "false", "is2faverified": "false"
    }});
    (
        Reply::json(200, &body),
        vec![
            (
                "set-cookie",
                format!("JSESSIONID={sid}; Path=/client; HttpOnly"),
            ),
            ("set-cookie", format!("sessionkey={key}; HttpOnly")),
        ],
    )
}
