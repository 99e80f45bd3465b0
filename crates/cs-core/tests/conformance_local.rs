//! The host conformance suite against `LocalHost` and the conformance `FakeHost`.

use cs_core::LocalHost;
use cs_core::conformance;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_host_conforms() {
    let scratch = tempfile::tempdir().expect("create a scratch directory");
    conformance::run_all(&LocalHost::new(), scratch.path()).await;
}

#[tokio::test]
async fn fake_host_conforms() {
    let host = conformance::fake_host("fake");
    conformance::run_all_on_fake(&host, std::path::Path::new("/scratch")).await;
}
