#!/usr/bin/env python3
"""Writes tests/corpus: real converter output with fixed seeds, each model beside the inputs it
is asked and the answers onnxruntime gives (the reference the tests hold modelpipe to).

    python3 -m venv /tmp/corpus-venv
    /tmp/corpus-venv/bin/pip install -r scripts/requirements-corpus.txt
    /tmp/corpus-venv/bin/python scripts/make_corpus.py

Run once; the output is committed (torch alone is a multi-GB install, so tests never need it).
Each case is tests/corpus/<name>/model.onnx and case.json:
  {"producer": ..., "inputs": [{name, datatype, shape, data}],
   "outputs": [{name, datatype, shape, data, class_labels?}]}
A ZipMap output (skl2onnx's default for classifiers: a list of {label: probability} maps) is
written as modelpipe serves it: an FP32 [batch, classes] tensor, columns in class-label order.
"""

import json
import os
import shutil
import sys
import warnings

import numpy as np
import onnx
import onnxruntime as ort

warnings.filterwarnings("ignore")
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "corpus")
SEED = 7
rng = np.random.default_rng(SEED)

DATATYPES = {
    np.dtype("float32"): "FP32",
    np.dtype("float64"): "FP64",
    np.dtype("int64"): "INT64",
    np.dtype("int32"): "INT32",
    np.dtype("bool"): "BOOL",
}


def datatype(array):
    if array.dtype.kind in "OUS":
        return "BYTES"
    return DATATYPES[array.dtype]


def tolist(array):
    if array.dtype.kind in "OUS":
        return [str(x) for x in array.reshape(-1)]
    if array.dtype.kind == "f":
        # NaN is not JSON: the imputer case sends it, as null.
        return [None if np.isnan(x) else float(x) for x in array.reshape(-1)]
    return array.reshape(-1).tolist()


def zipmap_labels(model, output):
    for node in model.graph.node:
        if node.op_type == "ZipMap" and node.output[0] == output:
            for a in node.attribute:
                if a.name == "classlabels_int64s":
                    return list(a.ints)
                if a.name == "classlabels_strings":
                    return [s.decode() for s in a.strings]
    return None


def write(name, model, inputs, producer):
    """Saves `model` (an onnx ModelProto) with `inputs` and onnxruntime's answers."""
    directory = os.path.join(OUT, name)
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
    path = os.path.join(directory, "model.onnx")
    onnx.save(model, path)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    answers = session.run(None, inputs)
    outputs = []
    for meta, answer in zip(session.get_outputs(), answers):
        labels = zipmap_labels(model, meta.name)
        if labels is not None:
            answer = np.array([[row[label] for label in labels] for row in answer], dtype=np.float32)
        answer = np.asarray(answer)
        entry = {
            "name": meta.name,
            "datatype": datatype(answer),
            "shape": list(answer.shape),
            "data": tolist(answer),
        }
        if labels is not None:
            entry["class_labels"] = labels
        outputs.append(entry)
    case = {
        "producer": producer,
        "inputs": [
            {"name": k, "datatype": datatype(v), "shape": list(v.shape), "data": tolist(v)}
            for k, v in inputs.items()
        ],
        "outputs": outputs,
    }
    with open(os.path.join(directory, "case.json"), "w") as f:
        json.dump(case, f, indent=1)
    print(f"{name}: {os.path.getsize(path)} bytes, outputs {[o['name'] for o in outputs]}")


def converted(name, convert, inputs, producer):
    """Writes the case unless the converter itself fails (said, not hidden)."""
    try:
        model = convert()
    except Exception as e:  # noqa: BLE001 (a converter bug is reported, the rest go on)
        print(f"{name}: SKIPPED, the converter failed: {str(e).splitlines()[0][:200]}")
        return
    write(name, model, inputs, producer)


def sklearn_cases():
    import sklearn
    import skl2onnx
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import load_diabetes, load_iris, make_classification
    from sklearn.ensemble import (
        GradientBoostingClassifier,
        GradientBoostingRegressor,
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler
    from sklearn.svm import SVC, SVR

    producer = f"skl2onnx {skl2onnx.__version__}, scikit-learn {sklearn.__version__}"
    iris_x, iris_y = load_iris(return_X_y=True)
    iris_x = iris_x.astype(np.float32)
    diabetes_x, diabetes_y = load_diabetes(return_X_y=True)
    diabetes_x = diabetes_x.astype(np.float32)
    rows = [0, 55, 120, 149, 77]
    iris_batch = iris_x[rows]
    diabetes_batch = diabetes_x[:4]

    def convert(model, x):
        return to_onnx(model, x[:1], target_opset={"": 17, "ai.onnx.ml": 3})

    classifiers = {
        "sk_logreg_scaler": make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)),
        "sk_svc_minmax": make_pipeline(MinMaxScaler(), SVC(random_state=SEED)),
        "sk_svc_proba": make_pipeline(StandardScaler(), SVC(probability=True, random_state=SEED)),
        "sk_rf_clf": RandomForestClassifier(n_estimators=10, max_depth=5, random_state=SEED),
        "sk_gb_clf": GradientBoostingClassifier(n_estimators=10, max_depth=3, random_state=SEED),
        "sk_hgb_clf": HistGradientBoostingClassifier(max_iter=10, random_state=SEED),
        "sk_mlp_clf": MLPClassifier(hidden_layer_sizes=(16,), max_iter=300, random_state=SEED),
    }
    for name, model in classifiers.items():
        model.fit(iris_x, iris_y)
        converted(name, lambda: convert(model, iris_x), {"X": iris_batch}, producer)

    # Two classes, string labels: the label output is BYTES, the ZipMap keyed by strings.
    x2, y2 = make_classification(n_samples=200, n_features=6, random_state=SEED)
    x2 = x2.astype(np.float32)
    labels = np.array(["no", "yes"])[y2]
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(x2, labels)
    write("sk_logreg_string_labels", convert(model, x2), {"X": x2[:4]}, producer)

    # Missing values, imputed.
    holes = iris_x.copy()
    holes[rng.random(holes.shape) < 0.1] = np.nan
    model = make_pipeline(SimpleImputer(), LogisticRegression(max_iter=500)).fit(holes, iris_y)
    batch = iris_batch.copy()
    batch[0, 1] = np.nan
    batch[3, 0] = np.nan
    write("sk_imputer_logreg", convert(model, holes), {"X": batch}, producer)

    # A string column one-hot encoded beside numeric ones.
    colours = np.array(["red", "green", "blue"])[rng.integers(0, 3, len(iris_x))].reshape(-1, 1)
    numeric = iris_x[:, :2]
    frame_types = [("colour", StringTensorType([None, 1])), ("measure", FloatTensorType([None, 2]))]
    pre = ColumnTransformer(
        [("onehot", OneHotEncoder(handle_unknown="ignore"), [0]), ("num", StandardScaler(), [1, 2])]
    )
    model = make_pipeline(pre, LogisticRegression(max_iter=500))

    mixed = np.concatenate([colours.astype(object), numeric.astype(object)], axis=1)
    model.fit(mixed, iris_y)
    onx = to_onnx(model, initial_types=frame_types, target_opset={"": 17, "ai.onnx.ml": 3})
    write(
        "sk_onehot_logreg",
        onx,
        {"colour": colours[rows].astype(object), "measure": numeric[rows]},
        producer,
    )

    regressors = {
        "sk_linreg": LinearRegression(),
        "sk_rf_reg": RandomForestRegressor(n_estimators=10, max_depth=5, random_state=SEED),
        "sk_gb_reg": GradientBoostingRegressor(n_estimators=10, max_depth=3, random_state=SEED),
        "sk_hgb_reg": HistGradientBoostingRegressor(max_iter=10, random_state=SEED),
        "sk_mlp_reg": MLPRegressor(hidden_layer_sizes=(16,), max_iter=300, random_state=SEED),
        "sk_svr_scaler": make_pipeline(StandardScaler(), SVR()),
    }
    for name, model in regressors.items():
        model.fit(diabetes_x, diabetes_y)
        converted(name, lambda: convert(model, diabetes_x), {"X": diabetes_batch}, producer)


def boosting_cases():
    import lightgbm
    import onnxmltools
    import xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType
    from sklearn.datasets import load_diabetes, load_iris

    iris_x, iris_y = load_iris(return_X_y=True)
    iris_x = iris_x.astype(np.float32)
    diabetes_x, diabetes_y = load_diabetes(return_X_y=True)
    diabetes_x = diabetes_x.astype(np.float32)
    types = lambda n: [("input", FloatTensorType([None, n]))]  # noqa: E731

    producer = f"onnxmltools {onnxmltools.__version__}, xgboost {xgboost.__version__}"
    model = xgboost.XGBClassifier(n_estimators=10, max_depth=3, random_state=SEED)
    model.fit(iris_x, iris_y)
    onx = onnxmltools.convert_xgboost(model, initial_types=types(4), target_opset=15)
    write("xgb_clf", onx, {"input": iris_x[[0, 55, 120, 149]]}, producer)
    model = xgboost.XGBRegressor(n_estimators=10, max_depth=3, random_state=SEED)
    model.fit(diabetes_x, diabetes_y)
    onx = onnxmltools.convert_xgboost(model, initial_types=types(10), target_opset=15)
    write("xgb_reg", onx, {"input": diabetes_x[:4]}, producer)

    producer = f"onnxmltools {onnxmltools.__version__}, lightgbm {lightgbm.__version__}"
    model = lightgbm.LGBMClassifier(n_estimators=10, num_leaves=8, random_state=SEED, verbose=-1)
    model.fit(iris_x, iris_y)
    onx = onnxmltools.convert_lightgbm(model, initial_types=types(4), target_opset=15)
    write("lgbm_clf", onx, {"input": iris_x[[0, 55, 120, 149]]}, producer)
    model = lightgbm.LGBMRegressor(n_estimators=10, num_leaves=8, random_state=SEED, verbose=-1)
    model.fit(diabetes_x, diabetes_y)
    onx = onnxmltools.convert_lightgbm(model, initial_types=types(10), target_opset=15)
    write("lgbm_reg", onx, {"input": diabetes_x[:4]}, producer)


def torch_cases():
    import tempfile

    import torch

    torch.manual_seed(SEED)
    producer = f"torch {torch.__version__}"

    class Mlp(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3), torch.nn.Softmax(-1)
            )

        def forward(self, x):
            return self.net(x)

    class Cnn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.features = torch.nn.Sequential(
                torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                torch.nn.MaxPool2d(2),
                torch.nn.Conv2d(8, 16, 3, padding=1, groups=2), torch.nn.ReLU6(),
                torch.nn.AdaptiveAvgPool2d(1),
            )
            self.head = torch.nn.Linear(16, 5)

        def forward(self, x):
            return self.head(torch.flatten(self.features(x), 1))

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(50, 16)
            layer = torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
            self.encoder = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.head = torch.nn.Linear(16, 2)

        def forward(self, tokens):
            return self.head(self.encoder(self.embed(tokens)).mean(1))

    cases = [
        ("mlp", Mlp(), torch.randn(2, 8), {0: "batch"}, "x"),
        ("cnn", Cnn(), torch.randn(2, 3, 16, 16), {0: "batch"}, "image"),
        ("encoder", Encoder(), torch.randint(0, 50, (2, 7)), {0: "batch", 1: "sequence"}, "tokens"),
    ]
    for name, module, example, axes, input_name in cases:
        module.eval()
        for exporter in ["legacy", "dynamo"]:
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "model.onnx")
                if exporter == "legacy":
                    torch.onnx.export(
                        module, (example,), path, input_names=[input_name], output_names=["output"],
                        dynamic_axes={input_name: axes, "output": {0: "batch"}}, opset_version=17,
                        dynamo=False,
                    )
                else:
                    # By position: the dict form wants forward()'s argument name.
                    shapes = ({k: torch.export.Dim(v, min=1, max=64) for k, v in axes.items()},)
                    torch.onnx.export(
                        module, (example,), path, input_names=[input_name], output_names=["output"],
                        dynamic_shapes=shapes, dynamo=True, external_data=False,
                    )
                model = onnx.load(path)
            # Another batch (and sequence length) than the example's: the axes must be dynamic.
            if name == "encoder":
                # The legacy exporter bakes the example's sequence length into the attention's
                # Reshape constants while declaring the axis dynamic (onnxruntime fails on any
                # other length too): its case keeps length 7, which modelpipe's smoke test finds
                # among the graph's constants.
                length = 7 if exporter == "legacy" else 5
                batch = torch.randint(0, 50, (3, length)).numpy()
            else:
                batch = torch.randn(3, *example.shape[1:]).numpy()
            write(f"torch_{name}_{exporter}", model, {input_name: batch}, f"{producer} ({exporter} exporter)")


if __name__ == "__main__":
    which = sys.argv[1:] or ["sklearn", "boosting", "torch"]
    os.makedirs(OUT, exist_ok=True)
    for part in which:
        {"sklearn": sklearn_cases, "boosting": boosting_cases, "torch": torch_cases}[part]()
