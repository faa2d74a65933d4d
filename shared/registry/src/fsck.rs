//! The registry's consistency check (`modelctl fsck`): every version complete, with a manifest
//! that names it and a file that matches it; every alias on a complete version with the same
//! SHA-256; every alias's last move in the history; every rollout on complete versions, with its
//! last decision in its log. It repairs only what is safe to remove:
//! staging directories and temporary files left by crashed writers, once older than a given age
//! (younger ones may belong to an ingest still running).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{
    ARTIFACT_FILE, MANIFEST_FILE, Manifest, OPTIMIZED_FILE, Registry, Result, SIGNATURE_FILE,
};
use modelpipe_core::model_name::ModelName;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// A guarantee is broken: a reader could be refused or misled.
    Error,
    /// Invisible to readers and repaired by the next writer, or by hand.
    Warning,
    /// Left by a crashed writer, safe to remove.
    Leftover,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub model: ModelName,
    pub severity: Severity,
    pub message: String,
    /// Removed (with `repair`).
    pub repaired: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FsckReport {
    pub models: usize,
    pub versions: usize,
    pub aliases: usize,
    pub rollouts: usize,
    pub findings: Vec<Finding>,
}

impl FsckReport {
    pub fn errors(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count()
    }

    /// Nothing broken and nothing left to clean up.
    pub fn is_clean(&self) -> bool {
        self.findings.iter().all(|f| f.repaired)
    }
}

/// What fsck does about the leftovers it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leftovers {
    Report,
    /// Removes those older than the age given (`modelctl fsck --repair`).
    Remove,
}

impl Registry {
    /// Checks every model; leftovers older than `age` are reported, and removed when asked.
    pub fn fsck(&self, leftovers: Leftovers, age: Duration) -> Result<FsckReport> {
        let mut report = FsckReport::default();
        for model in self.model_dirs()? {
            report.models += 1;
            // Under the lock, writers are not halfway through a move while we look.
            let _locked = if self.is_baked() {
                None
            } else {
                Some(self.lock(&model)?)
            };
            let mut found = |severity, message: String| {
                report.findings.push(Finding {
                    model: model.clone(),
                    severity,
                    message,
                    repaired: false,
                })
            };
            if let Err(e) = self.store.staging_dir(model.as_str()) {
                found(Severity::Error, e.to_string());
            }
            let versions = self.check_versions(&model, &mut found)?;
            report.versions += versions.len();
            report.aliases += self.check_aliases(&model, &versions, &mut found)?;
            report.rollouts += self.check_rollouts(&model, &versions, &mut found)?;
            for path in self.leftovers(&model, age) {
                let removed = leftovers == Leftovers::Remove && remove(&path);
                report.findings.push(Finding {
                    model: model.clone(),
                    severity: Severity::Leftover,
                    message: format!("{} was left by a crashed writer", path.display()),
                    repaired: removed,
                });
            }
        }
        report
            .findings
            .sort_by(|a, b| (&a.model, a.severity).cmp(&(&b.model, b.severity)));
        Ok(report)
    }

    /// Every model the registry has a trace of: versions, aliases or staged uploads (other
    /// entries at the root are not the registry's).
    fn model_dirs(&self) -> Result<Vec<ModelName>> {
        let mut models = Vec::new();
        for model in self
            .list("")?
            .iter()
            .filter_map(|n| n.parse::<ModelName>().ok())
        {
            let has = |dir: &str| -> Result<bool> {
                Ok(!self.list(&format!("{model}/{dir}"))?.is_empty())
            };
            if has("versions")? || has("aliases")? || has("staging")? {
                models.push(model);
            }
        }
        Ok(models)
    }

    /// Removes the leftovers older than `age` of every model, without checking anything else
    /// (cheap: reads no model file). Returns what was removed.
    pub fn remove_leftovers(&self, age: Duration) -> Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        for model in self.model_dirs()? {
            removed.extend(self.remove_model_leftovers(&model, age));
        }
        Ok(removed)
    }

    /// Removes `model`'s leftovers (staging directories and temporary files of crashed
    /// writers) older than `age`; returns what was removed.
    pub fn remove_model_leftovers(&self, model: &ModelName, age: Duration) -> Vec<PathBuf> {
        let mut leftovers = self.leftovers(model, age);
        leftovers.retain(|path| remove(path));
        leftovers
    }

    /// The complete versions of `model`; what is wrong with any version directory is reported.
    fn check_versions(
        &self,
        model: &ModelName,
        found: &mut impl FnMut(Severity, String),
    ) -> Result<Vec<Manifest>> {
        let mut complete = Vec::new();
        for name in self.list(&format!("{model}/versions"))? {
            let Ok(version) = name.parse::<u64>() else {
                found(
                    Severity::Warning,
                    format!("versions/{name} is not a version number"),
                );
                continue;
            };
            let key = format!("{model}/versions/{version}/{MANIFEST_FILE}");
            let manifest: Manifest = match self.read_json(&key) {
                Ok(Some(manifest)) => manifest,
                Ok(None) => {
                    // Never listed as a version: a commit that died between its two writes (S3)
                    // or a directory made by hand. Its number is not reused.
                    found(
                        Severity::Warning,
                        format!("versions/{version} has no manifest: it is not a version"),
                    );
                    continue;
                }
                Err(e) => {
                    found(Severity::Error, e.to_string());
                    continue;
                }
            };
            if manifest.version != version || &manifest.model != model {
                found(
                    Severity::Error,
                    format!(
                        "versions/{version}/{MANIFEST_FILE} describes {} v{}",
                        manifest.model, manifest.version
                    ),
                );
                continue;
            }
            let prepared = [
                (
                    ARTIFACT_FILE,
                    manifest.artifact.as_ref().map(|a| a.digest()),
                ),
                (
                    OPTIMIZED_FILE,
                    manifest.optimized.as_ref().map(|o| o.digest()),
                ),
            ];
            for (file, expected) in prepared {
                let Some(expected) = expected else { continue };
                let key = format!("{model}/versions/{version}/{file}");
                match self.store.digest(&key) {
                    Ok(digest) if digest == expected => {}
                    // Only an accelerator: inference never uses it and loads model.onnx.
                    Ok(_) | Err(_) => found(
                        Severity::Warning,
                        format!(
                            "versions/{version}/{file} is missing or does not match its manifest: inference loads model.onnx instead"
                        ),
                    ),
                }
            }
            if let Some(signer) = &manifest.signer {
                self.check_signature(model, &manifest, signer, found);
            }
            match self.verified_manifest(model, version) {
                Ok(_) => complete.push(manifest),
                Err(e) => found(Severity::Error, e.to_string()),
            }
        }
        Ok(complete)
    }

    fn check_aliases(
        &self,
        model: &ModelName,
        versions: &[Manifest],
        found: &mut impl FnMut(Severity, String),
    ) -> Result<usize> {
        let aliases = match self.aliases(model) {
            Ok(aliases) => aliases,
            Err(e) => {
                found(Severity::Error, e.to_string());
                return Ok(0);
            }
        };
        let history = self.history(model)?;
        let policy = self.signer_policy(model)?;
        for (alias, record) in &aliases {
            match versions.iter().find(|m| m.version == record.version) {
                None => found(
                    Severity::Error,
                    format!(
                        "alias {alias} points at v{}, which is not a complete version",
                        record.version
                    ),
                ),
                Some(manifest) if manifest.sha256 != record.sha256 => found(
                    Severity::Error,
                    format!(
                        "alias {alias} records a sha256 that v{} does not have",
                        record.version
                    ),
                ),
                Some(manifest) => {
                    if let Some(policy) = &policy
                        && let Err(why) = policy.admits(manifest.signer.as_ref())
                    {
                        found(
                            Severity::Warning,
                            format!(
                                "alias {alias} serves v{}, which the model's signer policy would refuse now: {why}",
                                record.version
                            ),
                        );
                    }
                }
            }
            let last = history
                .iter()
                .rev()
                .find(|e| &e.alias == alias)
                .map(|e| e.to);
            if last != Some(record.version) {
                found(
                    Severity::Warning,
                    format!(
                        "history.jsonl lacks the move of {alias} to v{} (the next publisher action restores it)",
                        record.version
                    ),
                );
            }
        }
        Ok(aliases.len())
    }

    /// The version's stored signature, verified again against the key or root its manifest
    /// records.
    fn check_signature(
        &self,
        model: &ModelName,
        manifest: &Manifest,
        signer: &modelpipe_signing::Signer,
        found: &mut impl FnMut(Severity, String),
    ) {
        let version = manifest.version;
        let key = format!("{model}/versions/{version}/{SIGNATURE_FILE}");
        let verified = match self.store.read(&key) {
            Ok(Some(bundle)) => modelpipe_signing::verify_again(&bundle, &manifest.sha256, signer),
            Ok(None) => Err("it is missing".into()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(why) = verified {
            found(
                Severity::Error,
                format!("versions/{version}/{SIGNATURE_FILE} does not verify: {why}"),
            );
        }
    }

    /// Every rollout on complete versions; a running one on its alias's version; its last
    /// decision in `rollouts.jsonl`.
    fn check_rollouts(
        &self,
        model: &ModelName,
        versions: &[Manifest],
        found: &mut impl FnMut(Severity, String),
    ) -> Result<usize> {
        let rollouts = match self.rollouts(model) {
            Ok(rollouts) => rollouts,
            Err(e) => {
                found(Severity::Error, e.to_string());
                return Ok(0);
            }
        };
        let log = self.rollout_log(model)?;
        for rollout in &rollouts {
            let alias = &rollout.alias;
            for (role, version) in [("stable", rollout.stable), ("candidate", rollout.candidate)] {
                if !versions.iter().any(|m| m.version == version) {
                    found(
                        if rollout.routes_traffic() {
                            Severity::Error
                        } else {
                            Severity::Warning
                        },
                        format!(
                            "rollout {} of {alias} has {role} v{version}, which is not a complete version",
                            rollout.id
                        ),
                    );
                }
            }
            let on = self.alias(model, alias)?.map(|r| r.version);
            if rollout.state.is_active() && on != Some(rollout.stable) {
                found(
                    Severity::Warning,
                    format!(
                        "rollout {} of {alias} is {:?} from v{} but {alias} is on {} (the next rollout action ends it)",
                        rollout.id,
                        rollout.state,
                        rollout.stable,
                        on.map_or("no version".into(), |v| format!("v{v}"))
                    ),
                );
            }
            let last = log.iter().rev().find(|e| {
                e.id == rollout.id && &e.alias == alias && e.action != crate::rollout::Did::Wait
            });
            if last.map(|e| e.generation) != Some(rollout.generation) {
                found(
                    Severity::Warning,
                    format!(
                        "rollouts.jsonl lacks generation {} of rollout {} of {alias} (a crash between its write and its log line)",
                        rollout.generation, rollout.id
                    ),
                );
            }
        }
        Ok(rollouts.len())
    }

    /// Staging directories and temporary files of a directory registry older than `age`.
    fn leftovers(&self, model: &ModelName, age: Duration) -> Vec<PathBuf> {
        let old = |path: &Path| {
            fs::symlink_metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|elapsed| elapsed >= age)
        };
        let children = |dir: PathBuf| -> Vec<PathBuf> {
            fs::read_dir(dir)
                .map(|entries| entries.filter_map(|e| Some(e.ok()?.path())).collect())
                .unwrap_or_default()
        };
        let mut found: Vec<PathBuf> = match self.store.staging_dir(model.as_str()) {
            Ok(staging) => children(staging),
            Err(_) => Vec::new(),
        };
        if let Some(root) = self.dir() {
            let model_dir = root.join(model.as_str());
            let mut dirs = vec![
                model_dir.clone(),
                model_dir.join("aliases"),
                model_dir.join("uploads"),
            ];
            dirs.extend(children(model_dir.join("versions")));
            // rollouts/, and below it each alias's evidence (<alias>/<id>/step-<k>/).
            let mut pending = vec![model_dir.join("rollouts")];
            while let Some(dir) = pending.pop() {
                let subdirs = children(dir.clone()).into_iter().filter(|p| p.is_dir());
                pending.extend(subdirs.filter(|p| {
                    !p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(".tmp-"))
                }));
                dirs.push(dir);
            }
            for dir in dirs {
                found.extend(children(dir).into_iter().filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(".tmp-"))
                }));
            }
        }
        found.retain(|p| old(p));
        found.sort();
        found
    }
}

/// Removes a leftover file or directory; whether it is gone.
fn remove(path: &Path) -> bool {
    if path.is_dir() {
        fs::remove_dir_all(path).is_ok()
    } else {
        fs::remove_file(path).is_ok()
    }
}
