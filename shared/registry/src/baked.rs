//! A directory registry baked into a container image: sealed by a marker at its root
//! ([`BAKED_MARKER`]), read-only from then on (inference serves it without hot reload; the
//! publisher refuses to move its aliases). `modelctl bake` unseals one to add versions and seals
//! it again; what only writers use (staging directories, lock files) stays out of the image.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

use crate::{BAKED_MARKER, Location, Registry, RegistryError, Result, dir_store, now};
use modelpipe_core::model_name::{AliasName, ModelName};

impl Registry {
    /// The directory registry at `root`, writable again if it was baked (its marker removed).
    pub fn unseal(root: &Path) -> Result<Self> {
        let marker = root.join(BAKED_MARKER);
        match fs::remove_file(&marker) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(RegistryError::Io {
                    location: marker.display().to_string(),
                    source: e,
                });
            }
            _ => {}
        }
        Self::open(root)
    }

    /// Removes what only writers use and writes the marker, which names each model's `live`
    /// version and the version of `modelctl` that baked it; returns those versions.
    pub fn seal(&self, modelctl_version: &str) -> Result<BTreeMap<ModelName, u64>> {
        let Location::Dir(root) = &self.location else {
            return Err(RegistryError::ReadOnly(format!(
                "{}: only a directory registry can be baked",
                self.location
            )));
        };
        let mut live = BTreeMap::new();
        for model in self.models()? {
            if let Some(alias) = self.alias(&model, &AliasName::live())? {
                live.insert(model.clone(), alias.version);
            }
            dir_store::remove_writer_files(root, model.as_str())
                .map_err(self.io_error(model.as_str()))?;
        }
        let stamp = serde_json::json!({
            "baked_at": now(),
            "modelctl": modelctl_version,
            "live": live,
        });
        let marker = root.join(BAKED_MARKER);
        fs::write(&marker, crate::to_json(&stamp)).map_err(|source| RegistryError::Io {
            location: marker.display().to_string(),
            source,
        })?;
        Ok(live)
    }
}
