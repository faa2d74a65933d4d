//! Past windows merged into one file each. An environment's profile of a window is one small
//! file, so a fleet leaves hundreds a window and thousands a day. Once a window is before the
//! previous one, no report reads it (only a baseline taken from traffic may), and the
//! publisher's schedule merges its files into `<model>/drift/<N>/merged/<w>.json` and removes
//! them: one file a window, whatever the fleet's size.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::{WindowProfile, version_dir, window_of, windows_dir};
use crate::{Registry, Result};
use modelpipe_core::model_name::ModelName;
use modelpipe_core::time::Timestamp;
use modelpipe_drift::Profile;

/// Every environment's profile of one past window, merged.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MergedWindow {
    pub merged_at: Option<Timestamp>,
    /// The environments whose files are in `profile`. A file of one of them found in the
    /// window later is not read again but removed: what a crash between the merge and the
    /// removal left, or (rarely) rows an environment frozen for over a window wrote on thawing.
    pub environments: BTreeSet<String>,
    pub profile: Profile,
}

impl MergedWindow {
    /// Adds one environment's file unless it is in already.
    pub(super) fn add(&mut self, file: WindowProfile) {
        if self.environments.insert(file.environment) {
            self.profile.merge(&file.profile);
        }
    }
}

fn merged_dir(model: &ModelName, version: u64) -> String {
    format!("{}/merged", version_dir(model, version))
}

fn merged_key(model: &ModelName, version: u64, window: u64) -> String {
    format!("{}/{window}.json", merged_dir(model, version))
}

impl Registry {
    /// `version`'s merged file of `window` (empty if none).
    pub(super) fn merged_window(
        &self,
        model: &ModelName,
        version: u64,
        window: u64,
    ) -> Result<MergedWindow> {
        Ok(self
            .read_json(&merged_key(model, version, window))?
            .unwrap_or_default())
    }

    /// The windows of `version` that were merged.
    pub(super) fn merged_windows(&self, model: &ModelName, version: u64) -> Result<Vec<u64>> {
        Ok(self
            .list(&merged_dir(model, version))?
            .iter()
            .filter_map(|name| name.strip_suffix(".json")?.parse().ok())
            .collect())
    }

    /// Merges the environments' files of `version`'s windows before the previous one (of
    /// `unmerged`, those holding files) and removes them; the windows merged. Files that do not
    /// parse are removed too (they counted for nothing). Without the model's lock (a validator
    /// may hold it for minutes): two schedules merging one window at once write the same
    /// merge, unless a late file came between their listings, whose rows are then lost.
    pub(crate) fn merge_past_windows(
        &self,
        model: &ModelName,
        version: u64,
        unmerged: &[u64],
        window: Duration,
        now: SystemTime,
    ) -> Result<Vec<u64>> {
        let current = window_of(now, window);
        let past: Vec<u64> = unmerged
            .iter()
            .copied()
            .filter(|w| w + 1 < current)
            .collect();
        if past.is_empty() {
            return Ok(past);
        }
        for &w in &past {
            let dir = format!("{}/{w}", windows_dir(model, version));
            let files = self.environment_files(&dir)?;
            let mut merged = self.merged_window(model, version, w)?;
            let before = merged.environments.len();
            self.read_environment_files(&dir, &files, |file: WindowProfile| merged.add(file));
            if merged.environments.len() > before {
                merged.merged_at = Some(Timestamp::now());
                self.write_unlocked(&merged_key(model, version, w), &crate::to_json(&merged))?;
            }
            // Only once the merge is written: a crash before leaves every file to merge again.
            for file in files {
                self.remove_environment_file(&format!("{dir}/{file}"))?;
            }
        }
        Ok(past)
    }
}
