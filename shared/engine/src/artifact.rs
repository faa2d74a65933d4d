//! The compiled artifact: a model as tract holds it after parsing, typing and decluttering,
//! written as an NNEF tar. Reloading it skips the ONNX parse and the declutter passes (NOTES:
//! mobilenet 56–67 ms instead of 106, with less memory); the optimised plan itself cannot be
//! serialised, so the optimisation still runs at load. The format is tract's own: an artifact is
//! only read by the tract version that wrote it ([`TRACT_VERSION`], recorded in the manifest).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::LazyLock;

use tract_nnef::framework::Nnef;
use tract_onnx::WithOnnx;
use tract_onnx::prelude::*;

/// The tract this build links (the workspace pins it exactly; a test checks the two agree).
pub const TRACT_VERSION: &str = "0.23.9";

/// tract-core's operators plus the ONNX extensions some ONNX operators decompose into.
static NNEF: LazyLock<Nnef> = LazyLock::new(|| tract_nnef::nnef().with_onnx());

pub(super) fn write(model: &TypedModel, path: &Path) -> TractResult<()> {
    let file = File::create(path)?;
    let mut writer = NNEF.write_to_tar(model, BufWriter::new(file))?;
    writer.flush()?;
    writer
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    Ok(())
}

pub(super) fn read(path: &Path) -> TractResult<TypedModel> {
    NNEF.model_for_path(path)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_recorded_tract_version_is_the_one_the_workspace_pins() {
        let manifest = include_str!("../../../Cargo.toml");
        let pin = format!("tract-onnx = \"={}\"", super::TRACT_VERSION);
        assert!(
            manifest.lines().any(|line| line.trim() == pin),
            "Cargo.toml does not pin {pin}"
        );
    }
}
