//! Writes one of modelpipe's generated ONNX models to a file, for benchmarks and the Python
//! baseline.
//!
//! `write_model KIND PATH [SEED]`, KIND one of: `iris`, `mobilenet`, `resnet`, `identity`,
//! `mlp:4,64,64,3` (layer widths), `linear:1536,2304` (inputs, outputs).

use modelpipe_testkit::onnx_build::{Identity, LinearSoftmax, Mlp, mobilenet_v2, resnet18};

fn widths(spec: &str) -> Vec<usize> {
    spec.split(',')
        .map(|w| w.parse().expect("widths are numbers"))
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage =
        "usage: write_model iris|mobilenet|resnet|identity|mlp:W,W,..|linear:IN,OUT PATH [SEED]";
    let (kind, path) = (args.get(1).expect(usage), args.get(2).expect(usage));
    let seed: u32 = args.get(3).map_or(1, |s| s.parse().expect(usage));
    let bytes = match kind.split_once(':') {
        None if kind == "iris" => LinearSoftmax::iris(seed).to_bytes(),
        None if kind == "mobilenet" => mobilenet_v2(seed),
        None if kind == "resnet" => resnet18(seed),
        None if kind == "identity" => Identity::all_types(3).to_bytes(),
        Some(("mlp", spec)) => Mlp::new(&widths(spec), seed).to_bytes(),
        Some(("linear", spec)) => {
            let [inputs, outputs] = widths(spec)[..] else {
                panic!("{usage}")
            };
            // Small weights keep the softmax meaningful at any width.
            let weights = (0..inputs)
                .map(|i| {
                    (0..outputs)
                        .map(|o| ((i * 31 + o * 17) % 97) as f32 * 1e-4 * seed as f32)
                        .collect()
                })
                .collect();
            LinearSoftmax {
                input: "x".into(),
                output: "y".into(),
                weights,
                bias: vec![0.0; outputs],
                batch: None,
            }
            .to_bytes()
        }
        _ => panic!("{usage}"),
    };
    std::fs::write(path, bytes).expect("write the model");
}
