//! The files inference environments write: rollout evidence and drift profiles, one file per
//! environment (so no lock), summed or merged by the publisher. They live under the registry's
//! root, or under `TELEMETRY_ROOT` when it is set: an S3 prefix the inference function may only
//! write to, so the function callers reach needs no write access to the registry it serves.
//! Keys are the same either way (`<model>/rollouts/…/<instance>.json`,
//! `<model>/drift/<N>/windows/<w>/<environment>.json`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use serde::de::DeserializeOwned;

use crate::store::Location;
use crate::{FileCacheConfig, Registry, RegistryError, Result, io_error, read_json};

/// Environment files read at once: enough to hide an S3 round trip (tens of ms) behind the
/// others at a fleet's hundreds of files, few enough for the publisher's single vCPU.
pub const DEFAULT_PARALLEL_READS: usize = 16;

impl Registry {
    /// Environment files go to `location` (`TELEMETRY_ROOT`) instead of the registry, if
    /// given; `sdk` as for [`Registry::open_s3`].
    pub fn with_telemetry(
        mut self,
        location: Option<&Location>,
        sdk: Option<aws_config::SdkConfig>,
    ) -> Result<Self> {
        let opened = match location {
            None => return Ok(self),
            Some(Location::Dir(root)) => Registry::open(root.clone())?,
            // Nothing is downloaded through it: its local copy cache is never used.
            Some(Location::S3 { bucket, prefix }) => {
                Registry::open_s3(bucket, prefix, &FileCacheConfig::default(), sdk)?
            }
        };
        self.telemetry = opened.store;
        self.telemetry_location = opened.location;
        Ok(self)
    }

    /// Whether environment files can be written: not into a baked registry.
    pub fn takes_environment_files(&self) -> bool {
        !self.baked || self.telemetry_location != self.location
    }

    /// How many environment files (rollout evidence, drift profiles) are read at once
    /// ([`DEFAULT_PARALLEL_READS`]; 1 reads them one after the other).
    pub fn with_parallel_reads(mut self, reads: usize) -> Self {
        self.parallel_reads = reads.max(1);
        self
    }

    /// Replaces one environment's file.
    pub(crate) fn write_environment_file(&self, key: &str, bytes: &[u8]) -> Result<()> {
        if !self.takes_environment_files() {
            return Err(RegistryError::ReadOnly(self.location.to_string()));
        }
        self.telemetry
            .write(key, bytes)
            .map_err(io_error(&*self.telemetry, key))
    }

    /// Removes one environment's file (a merged drift window's).
    pub(crate) fn remove_environment_file(&self, key: &str) -> Result<()> {
        if !self.takes_environment_files() {
            return Err(RegistryError::ReadOnly(self.location.to_string()));
        }
        self.telemetry
            .remove(key)
            .map_err(io_error(&*self.telemetry, key))
    }

    /// Names directly under `dir` of the environment files.
    pub(crate) fn environment_dirs(&self, dir: &str) -> Result<Vec<String>> {
        self.telemetry
            .list(dir)
            .map_err(io_error(&*self.telemetry, dir))
    }

    /// Every `*.json` file under `dir` handed to `add`, in no set order (what is added merges
    /// in any order); how many parsed. A file that does not parse (another release's format)
    /// counts for nothing.
    pub(crate) fn each_environment_file<T: DeserializeOwned + Send>(
        &self,
        dir: &str,
        add: impl FnMut(T) + Send,
    ) -> Result<usize> {
        let files = self.environment_files(dir)?;
        Ok(self.read_environment_files(dir, &files, add))
    }

    /// The `*.json` files under `dir`, relative to it.
    pub(crate) fn environment_files(&self, dir: &str) -> Result<Vec<String>> {
        let listed = self
            .telemetry
            .list_files(dir)
            .map_err(io_error(&*self.telemetry, dir))?;
        Ok(listed
            .into_iter()
            .filter(|f| f.ends_with(".json"))
            .collect())
    }

    /// [`Self::each_environment_file`] of `files` in `dir`. A fleet's files are many small
    /// reads, each a round trip to S3 or EFS: up to `parallel_reads` are in flight at once,
    /// each parsed on its own thread and added as it comes, so no more than that many are held
    /// at a time.
    pub(crate) fn read_environment_files<T: DeserializeOwned + Send>(
        &self,
        dir: &str,
        files: &[String],
        add: impl FnMut(T) + Send,
    ) -> usize {
        let next = AtomicUsize::new(0);
        let add = Mutex::new((add, 0));
        let read_each = || {
            while let Some(file) = files.get(next.fetch_add(1, Ordering::Relaxed)) {
                if let Ok(Some(one)) = read_json::<T>(&*self.telemetry, &format!("{dir}/{file}")) {
                    let mut add = add.lock().unwrap_or_else(PoisonError::into_inner);
                    (add.0)(one);
                    add.1 += 1;
                }
            }
        };
        let threads = self.parallel_reads.min(files.len());
        if threads <= 1 {
            read_each();
        } else {
            std::thread::scope(|scope| {
                for _ in 0..threads {
                    scope.spawn(read_each);
                }
            });
        }
        add.into_inner().unwrap_or_else(PoisonError::into_inner).1
    }
}
