//! The inference request decoder: framing (JSON header + binary tensor data), then every input
//! decoded against a signature of its own datatype and rank, as the router does.
//!
//! One input through the code under test, shared by the libFuzzer target (`fuzz/fuzz_targets`) and
//! the corpus replay that runs with every test run (`tests/tests/fuzz_corpora.rs`).

use modelpipe_core::signature::TensorSpec;
use modelpipe_engine::tensors::{decode_input, parse_datatype};
use modelpipe_serve::protocol::parse;

/// Panics (or trips an assertion) only on a bug.
pub fn run(data: &[u8]) {
    // The first byte chooses the Inference-Header-Content-Length header: none, or a length.
    let Some((&choice, body)) = data.split_first() else {
        return;
    };
    let header =
        (choice % 4 != 0).then(|| (usize::from(choice) * 7 % (body.len() + 1)).to_string());
    let Ok(request) = parse(bytes::Bytes::copy_from_slice(body), header.as_deref()) else {
        return;
    };
    for input in request.inputs() {
        let Ok(datatype) = parse_datatype(input.name, input.datatype) else {
            continue;
        };
        let spec = TensorSpec {
            name: input.name.to_string(),
            datatype,
            shape: vec![-1; input.shape.len()],
            class_labels: None,
        };
        let _ = decode_input(&input, &spec);
    }
}
