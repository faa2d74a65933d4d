//! `y = softmax(x · W + b)`: a linear classifier whose versions give answers a test can tell
//! apart and compute by hand.

use super::{
    Dim, GraphProto, PbType, TensorProto, Weights, float_tensor, int_attribute, model_bytes, node,
    value_info,
};

/// `y = softmax(x · W + b)` with `x: [batch, inputs]`, `W: [inputs, outputs]`.
#[derive(Debug, Clone)]
pub struct LinearSoftmax {
    pub input: String,
    pub output: String,
    /// `weights[i][o]`.
    pub weights: Vec<Vec<f32>>,
    pub bias: Vec<f32>,
    /// `None`: a dynamic batch dimension (`N`); `Some(n)`: fixed.
    pub batch: Option<i64>,
}

impl LinearSoftmax {
    /// An iris-like classifier (4 features, 3 classes) whose weights depend on `seed`.
    pub fn iris(seed: u32) -> Self {
        let mut next = Weights::new(seed);
        let weights = (0..4).map(|_| next.take(3, 1.0)).collect();
        let bias = next.take(3, 1.0);
        Self {
            input: "input".into(),
            output: "probabilities".into(),
            weights,
            bias,
            batch: None,
        }
    }

    pub fn inputs(&self) -> usize {
        self.weights.len()
    }

    pub fn outputs(&self) -> usize {
        self.bias.len()
    }

    /// The expected output for one row, computed here without tract (f64 arithmetic).
    pub fn predict(&self, row: &[f32]) -> Vec<f64> {
        let logits: Vec<f64> = (0..self.outputs())
            .map(|o| {
                self.bias[o] as f64
                    + row
                        .iter()
                        .zip(&self.weights)
                        .map(|(x, w)| *x as f64 * w[o] as f64)
                        .sum::<f64>()
            })
            .collect();
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let exps: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
        let total: f64 = exps.iter().sum();
        exps.iter().map(|e| e / total).collect()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        model_bytes(self.graph())
    }

    /// The same model with its batch size baked into a final Reshape to `[rows, outputs]`, as
    /// a traced export does: it declares a dynamic batch and passes every check at `rows` rows,
    /// then fails on any request with another number of rows.
    pub fn to_bytes_with_baked_batch(&self, rows: i64) -> Vec<u8> {
        let mut graph = self.graph();
        let output = std::mem::replace(&mut graph.node[1].output[0], "scores".into());
        graph.node.push(node(
            "Reshape",
            &["scores", "baked_shape"],
            &[&output],
            vec![],
        ));
        graph.initializer.push(TensorProto {
            name: "baked_shape".into(),
            dims: vec![2],
            data_type: PbType::Int64 as i32,
            int64_data: vec![rows, self.outputs() as i64],
            ..Default::default()
        });
        model_bytes(graph)
    }

    fn graph(&self) -> GraphProto {
        let (n_in, n_out) = (self.inputs() as i64, self.outputs() as i64);
        let batch = match self.batch {
            Some(n) => Dim::DimValue(n),
            None => Dim::DimParam("N".into()),
        };
        GraphProto {
            name: "linear_softmax".into(),
            node: vec![
                node("Gemm", &[&self.input, "W", "B"], &["logits"], vec![]),
                node(
                    "Softmax",
                    &["logits"],
                    &[&self.output],
                    vec![int_attribute("axis", 1)],
                ),
            ],
            initializer: vec![
                float_tensor(
                    "W",
                    &[n_in, n_out],
                    self.weights.iter().flatten().copied().collect(),
                ),
                float_tensor("B", &[n_out], self.bias.clone()),
            ],
            input: vec![value_info(
                &self.input,
                vec![batch.clone(), Dim::DimValue(n_in)],
            )],
            output: vec![value_info(&self.output, vec![batch, Dim::DimValue(n_out)])],
            ..Default::default()
        }
    }
}
