//! Cross-checks with an independent client: the Python `cs` package (PyPI), installed by
//! `scripts/install-deps` into `<workspace>/.cache/py-venv` (or `$CS_PY_VENV`).
//!
//! Where `cs` and the server disagree, this crate follows the server: `cs` leaves `~` unencoded
//! (`urllib.parse.quote(v, safe="*")`) where `java.net.URLEncoder` gives `%7E`, so `cs` signs
//! values containing `~` differently and the server (and the lab) refuse them.

use std::path::PathBuf;
use std::time::Duration;

use cs_api::{Client, ClientConfig, Credentials};
use cs_core::{Cmd, Host, LocalHost, Secret};
use cs_lab::{CloudSpec, LabApi};

/// The venv's python, or a failure that says how to install it.
fn python() -> String {
    let venv = std::env::var_os("CS_PY_VENV").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/py-venv"),
        PathBuf::from,
    );
    let python = venv.join("bin/python");
    let cs = venv.join("bin/cs");
    assert!(
        python.is_file() && cs.is_file(),
        "the Python `cs` client is not installed at {}: run scripts/install-deps (or set CS_PY_VENV)",
        venv.display()
    );
    python.to_string_lossy().into_owned()
}

async fn run_python(script: &str, stdin: &str, env: &[(&str, &str)]) -> String {
    let mut cmd = Cmd::new(python())
        .arg("-c")
        .arg(script)
        .stdin(stdin.as_bytes().to_vec())
        .timeout(Duration::from_secs(120));
    for (k, v) in env {
        cmd = cmd.env(*k, *v);
    }
    let out = LocalHost::new().run(&cmd).await.expect("python runs");
    assert!(
        out.success(),
        "python failed: {}\n{}",
        out.stdout_lossy(),
        out.stderr_lossy()
    );
    out.stdout_lossy()
}

/// Deterministic parameter sets with the characters that trip signers up.
fn parameter_sets() -> Vec<Vec<(String, String)>> {
    const PIECES: [&str; 22] = [
        "a", "Z", "0", " ", "*", "+", "=", "&", "%", "é", "✓", "日本", "😀", "-", "_", ".", "/",
        "?", "%20", "+%2B", "'", "~",
    ];
    const NAMES: [&str; 10] = [
        "name",
        "Name",
        "displayName",
        "keyword",
        "zoneid",
        "ZETA",
        "a",
        "B",
        "tags[0].key",
        "details[0].value",
    ];
    let mut seed: u64 = 0x5eed;
    let mut next = move |n: usize| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((seed >> 33) as usize) % n
    };
    let mut sets = Vec::new();
    for _ in 0..300 {
        let mut set = vec![
            ("command".to_string(), "listVirtualMachines".to_string()),
            ("apiKey".to_string(), "Lab-Key_1".to_string()),
            ("response".to_string(), "json".to_string()),
        ];
        let mut used = Vec::new();
        for _ in 0..=next(4) {
            let name = NAMES[next(NAMES.len())];
            if used.contains(&name) {
                continue;
            }
            used.push(name);
            let len = next(6);
            let value: String = (0..len).map(|_| PIECES[next(PIECES.len())]).collect();
            set.push((name.to_string(), value));
        }
        sets.push(set);
    }
    sets
}

const SIGN_WITH_CS: &str = r#"
import json, sys
from cs.client import CloudStack
sets = json.load(sys.stdin)
c = CloudStack(endpoint="http://127.0.0.1:9/client/api", key="Lab-Key_1", secret="s3cr3t/Key+=")
out = []
for s in sets:
    d = dict(s)
    c._sign(d)
    out.append(d["signature"])
print(json.dumps(out))
"#;

#[tokio::test]
async fn signatures_match_cs_except_where_cs_differs_from_the_server() {
    let sets = parameter_sets();
    let stdin = serde_json::to_string(&sets).unwrap();
    let out = run_python(SIGN_WITH_CS, &stdin, &[]).await;
    let theirs: Vec<String> = serde_json::from_str(out.trim()).unwrap();
    let secret = Secret::new("s3cr3t/Key+=");
    let (mut same, mut tilde) = (0, 0);
    for (set, cs_sig) in sets.iter().zip(&theirs) {
        let ours = cs_api::sign(set, &secret);
        if set.iter().any(|(_, v)| v.contains('~')) {
            tilde += 1;
            assert_ne!(
                &ours, cs_sig,
                "cs encodes `~` as is, the server as %7E: {set:?}"
            );
        } else {
            same += 1;
            assert_eq!(&ours, cs_sig, "{set:?}");
        }
    }
    assert!(
        same > 200 && tilde > 10,
        "coverage: {same} equal, {tilde} with `~`"
    );
}

const CS_AGAINST_LAB: &str = r#"
import json, sys
from cs.client import CloudStack, CloudStackApiException
endpoint, key, secret = sys.argv[1:4]
c = CloudStack(endpoint=endpoint, key=key, secret=secret)
hosts = c.listHosts(type="Routing", fetch_list=True)
vms = c.listVirtualMachines(listall=True, fetch_list=True, keyword="a b*c+d=e&f%g é ✓")
caps = c.listCapabilities()
try:
    c.listZones(keyword="x~y")
    tilde = "accepted"
except CloudStackApiException as e:
    tilde = "refused %s" % e.error["errorcode"]
print(json.dumps({"hosts": len(hosts), "vms": len(vms), "version": caps["capability"]["cloudstackversion"], "tilde": tilde}))
"#;

#[tokio::test]
async fn the_lab_verifies_what_cs_signs() {
    let lab = LabApi::start().unwrap();
    lab.populate(&CloudSpec {
        vms: 1100,
        ..CloudSpec::default()
    });
    let endpoint = lab.endpoint();
    let script = format!(
        "import sys; sys.argv = ['x', {endpoint:?}, {key:?}, {secret:?}]\n{CS_AGAINST_LAB}",
        key = lab.api_key(),
        secret = lab.secret_key().expose()
    );
    let out = run_python(&script, "", &[]).await;
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["hosts"], 4);
    assert_eq!(v["vms"], 1100);
    assert_eq!(v["version"], "4.20.0.0");
    assert_eq!(
        v["tilde"], "refused 401",
        "the server encodes `~` as %7E; cs does not"
    );
    let vm_pages = lab
        .requests()
        .iter()
        .filter(|r| r.command.as_deref() == Some("listVirtualMachines") && r.status == 200)
        .count();
    assert_eq!(vm_pages, 3, "cs pages with pagesize 500");
    // The same `~` request signed by this crate is accepted.
    let c = Client::new(
        &endpoint,
        Credentials::api_key(lab.api_key(), lab.secret_key().clone()),
        ClientConfig::default(),
    )
    .unwrap();
    c.call("listZones", &[("keyword", "x~y")]).await.unwrap();
}

#[tokio::test]
async fn the_cs_command_line_reads_the_lab() {
    let lab = LabApi::start().unwrap();
    lab.populate(&CloudSpec::default());
    let venv_cs = PathBuf::from(python()).with_file_name("cs");
    let cmd = Cmd::new(venv_cs.to_string_lossy())
        .arg("listZones")
        .env("CLOUDSTACK_ENDPOINT", lab.endpoint())
        .env("CLOUDSTACK_KEY", lab.api_key())
        .env("CLOUDSTACK_SECRET", lab.secret_key().expose())
        .env("CLOUDSTACK_METHOD", "get")
        .env("CLOUDSTACK_TIMEOUT", "10")
        .timeout(Duration::from_secs(60));
    let out = LocalHost::new().run(&cmd).await.unwrap();
    assert!(out.success(), "{}", out.stderr_lossy());
    let v: serde_json::Value = serde_json::from_str(&out.stdout_lossy()).unwrap();
    assert_eq!(v["count"], 1, "{v}");
    assert_eq!(v["zone"][0]["name"], "zone1");
}
