//! A full disk under the registry (a 2 MiB tmpfs mounted for the test; it needs root, as on the
//! CI machine): staging an upload and moving an alias fail with the system's reason, leave
//! nothing partial behind, and the live alias keeps its version. Freed space, the same
//! operations succeed.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use modelpipe_core::{AliasName, ModelName};
use modelpipe_registry::Registry;
use modelpipe_registry::publish::{PublisherRequest, apply};
use modelpipe_testkit::onnx_build::LinearSoftmax;
use modelpipe_tests::serving::{commit, publish};
use modelpipe_validator::ingest::{IngestError, stream_to_file};

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Fills the filesystem holding `dir` to the last byte.
fn fill(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("ballast");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 4096];
    while file.write_all(&block).is_ok() {}
    while file.write_all(&[0]).is_ok() {}
    path
}

#[tokio::test]
async fn a_full_disk_refuses_staging_and_alias_writes_and_loses_nothing() {
    if !is_root() {
        eprintln!("SKIPPED: mounting the test's tmpfs needs root (the CI machine runs as root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("registry");
    std::fs::create_dir(&root).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&root)
        .status()
        .unwrap();
    assert!(mounted.success(), "mounting a 2 MiB tmpfs failed");
    let _mount = Mount(root.clone());
    let registry = Registry::open(&root).unwrap();
    let iris: ModelName = "iris".parse().unwrap();
    let v1 = commit(&registry, &iris, &LinearSoftmax::iris(1).to_bytes());
    publish(&registry, &iris, v1);
    let v2 = commit(&registry, &iris, &LinearSoftmax::iris(2).to_bytes());
    let ballast = fill(&root);

    // An upload's bytes cannot be staged: the ingest says why, and its staging goes away.
    let staging = registry.stage(&iris).unwrap();
    let upload = vec![7u8; 512 * 1024];
    let staged = stream_to_file(&upload[..], &staging.model_path(), 1 << 30).await;
    let Err(IngestError::Write(e)) = staged else {
        panic!("staging on a full disk must fail, got {staged:?}")
    };
    assert_eq!(e.raw_os_error(), Some(libc_enospc()), "{e}");
    let staging_dir = staging.model_path().parent().unwrap().to_path_buf();
    drop(staging);
    assert!(!staging_dir.exists(), "nothing of the upload is left");

    // The alias cannot move: the publisher says why, and live is still v1, whole.
    let request = PublisherRequest::Publish {
        model: iris.clone(),
        version: v2,
        alias: AliasName::live(),
        reason: None,
    };
    let refused = apply(&registry, &request, None).unwrap_err();
    assert!(
        refused.to_string().contains("No space left on device"),
        "{refused}"
    );
    let live = registry.alias(&iris, &AliasName::live()).unwrap().unwrap();
    assert_eq!(live.version, v1);
    let temps: Vec<_> = std::fs::read_dir(root.join("iris/aliases"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".tmp-"))
        .collect();
    assert!(temps.is_empty(), "no temporary file is left: {temps:?}");
    let report = registry
        .fsck(
            modelpipe_registry::fsck::Leftovers::Report,
            std::time::Duration::ZERO,
        )
        .unwrap();
    assert_eq!(report.errors(), 0, "{report:?}");

    // Space again: the same move succeeds.
    std::fs::remove_file(ballast).unwrap();
    apply(&registry, &request, None).unwrap();
    assert_eq!(
        registry
            .alias(&iris, &AliasName::live())
            .unwrap()
            .unwrap()
            .version,
        v2
    );
    assert!(
        registry
            .fsck(
                modelpipe_registry::fsck::Leftovers::Report,
                std::time::Duration::ZERO
            )
            .unwrap()
            .is_clean()
    );
}

fn is_root() -> bool {
    let id = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&id.stdout).trim() == "0"
}

/// ENOSPC on Linux.
fn libc_enospc() -> i32 {
    28
}
