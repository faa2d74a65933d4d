//! A multi-layer perceptron (`Gemm` + `Relu` layers, logits out): the small dense model of the
//! benchmarks, and, made wide, a model big enough that loading it takes measurable time.

use super::{Dim, GraphProto, Weights, float_tensor, model_bytes, node, value_info};

#[derive(Debug, Clone)]
pub struct Mlp {
    /// Layer widths, input first: `[4, 64, 64, 3]` is 4 → 64 → 64 → 3.
    pub widths: Vec<usize>,
    pub seed: u32,
}

impl Mlp {
    pub fn new(widths: &[usize], seed: u32) -> Self {
        assert!(
            widths.len() >= 2,
            "an MLP needs an input and an output width"
        );
        Self {
            widths: widths.to_vec(),
            seed,
        }
    }

    /// `(weights[in][out] row-major, bias)` of each layer.
    fn layers(&self) -> Vec<(Vec<f32>, Vec<f32>)> {
        let mut weights = Weights::new(self.seed);
        self.widths
            .windows(2)
            .map(|w| {
                let scale = (2.0 / w[0] as f32).sqrt();
                (weights.take(w[0] * w[1], scale), weights.take(w[1], 0.1))
            })
            .collect()
    }

    /// The expected logits for one row, computed here without tract (f64 arithmetic).
    pub fn predict(&self, row: &[f32]) -> Vec<f64> {
        let layers = self.layers();
        let mut x: Vec<f64> = row.iter().map(|&v| v as f64).collect();
        for (i, (w, b)) in layers.iter().enumerate() {
            let (n_in, n_out) = (self.widths[i], self.widths[i + 1]);
            let mut y: Vec<f64> = (0..n_out)
                .map(|o| {
                    b[o] as f64
                        + (0..n_in)
                            .map(|k| x[k] * w[k * n_out + o] as f64)
                            .sum::<f64>()
                })
                .collect();
            if i + 1 < layers.len() {
                y.iter_mut().for_each(|v| *v = v.max(0.0));
            }
            x = y;
        }
        x
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let layers = self.layers();
        let batch = || Dim::DimParam("N".into());
        let mut node_list = Vec::new();
        let mut initializer = Vec::new();
        let mut current = "input".to_string();
        for (i, (w, b)) in layers.into_iter().enumerate() {
            let (n_in, n_out) = (self.widths[i] as i64, self.widths[i + 1] as i64);
            let last = i + 2 == self.widths.len();
            let gemm_out = if last {
                "logits".to_string()
            } else {
                format!("h{i}")
            };
            node_list.push(node(
                "Gemm",
                &[&current, &format!("W{i}"), &format!("B{i}")],
                &[&gemm_out],
                vec![],
            ));
            initializer.push(float_tensor(&format!("W{i}"), &[n_in, n_out], w));
            initializer.push(float_tensor(&format!("B{i}"), &[n_out], b));
            current = gemm_out;
            if !last {
                let relu_out = format!("r{i}");
                node_list.push(node("Relu", &[&current], &[&relu_out], vec![]));
                current = relu_out;
            }
        }
        let graph = GraphProto {
            name: "mlp".into(),
            node: node_list,
            initializer,
            input: vec![value_info(
                "input",
                vec![batch(), Dim::DimValue(self.widths[0] as i64)],
            )],
            output: vec![value_info(
                "logits",
                vec![batch(), Dim::DimValue(*self.widths.last().unwrap() as i64)],
            )],
            ..Default::default()
        };
        model_bytes(graph)
    }
}
