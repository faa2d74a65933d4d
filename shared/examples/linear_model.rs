//! Writes a linear+softmax ONNX model of any size, for benchmarks: `INPUTS × OUTPUTS` f32 weights.
//!
//! `cargo run -p modelpipe --example linear_model -- PATH INPUTS OUTPUTS [SEED]`

use modelpipe::onnx_build::LinearSoftmax;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: linear_model PATH INPUTS OUTPUTS [SEED]";
    let path = args.get(1).expect(usage);
    let inputs: usize = args.get(2).and_then(|a| a.parse().ok()).expect(usage);
    let outputs: usize = args.get(3).and_then(|a| a.parse().ok()).expect(usage);
    let seed: f32 = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(1.0);
    let weights = (0..inputs)
        .map(|i| {
            (0..outputs)
                .map(|o| ((i * 31 + o * 17) % 97) as f32 * 1e-4 * seed)
                .collect()
        })
        .collect();
    let model = LinearSoftmax {
        input: "x".into(),
        output: "y".into(),
        weights,
        bias: vec![0.0; outputs],
        batch: None,
    };
    std::fs::write(path, model.to_bytes()).expect("write model");
}
