//! Writes the example models `modelctl demo` ships: `examples/models/iris-v{1,2}.onnx`, two
//! iris-shaped linear+softmax classifiers (4 features → 3 probabilities) with different weights.
//!
//! `cargo run -p modelpipe-testkit --example make_models`

use modelpipe_testkit::onnx_build::LinearSoftmax;

fn main() -> std::io::Result<()> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/models");
    std::fs::create_dir_all(&dir)?;
    for version in [1, 2] {
        let path = dir.join(format!("iris-v{version}.onnx"));
        std::fs::write(&path, LinearSoftmax::iris(version).to_bytes())?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
