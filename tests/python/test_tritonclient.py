"""The stock tritonclient[http] against modelpipe's inference server, JSON and binary tensors.

Expected values come from onnxruntime running the same model files from the registry, never from
the server. Run by tests/tests/tritonclient.rs, which builds the registry, starts the server and
passes MODELPIPE_URL (host:port) and MODELPIPE_REGISTRY (the registry directory).
"""

import json
import os
import unittest

import numpy as np
import onnxruntime
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

URL = os.environ["MODELPIPE_URL"]
REGISTRY = os.environ["MODELPIPE_REGISTRY"]
# The corpus of converter output served too: `name=dir` pairs, comma-separated.
CORPUS = [pair.split("=", 1) for pair in os.environ.get("MODELPIPE_CORPUS", "").split(",") if pair]

# Every datatype the identity model carries, with the numpy type tritonclient maps it to.
TYPES = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
    "BYTES": np.object_,
}


def reference(model, version, feeds):
    """What onnxruntime computes with the registry's file for that version."""
    path = os.path.join(REGISTRY, model, "versions", str(version), "model.onnx")
    return onnxruntime.InferenceSession(path).run(None, feeds)


def sample(datatype, rng):
    """A 2×3 tensor of the datatype, with values at its extremes where it has them."""
    dtype = TYPES[datatype]
    if datatype == "BOOL":
        return np.array([[True, False, True], [False, False, True]])
    if datatype == "BYTES":
        return np.array([[b"", b"h\xc3\xa9llo", b"x" * 300], [b"a", b"b", b"c"]], dtype=np.object_)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.array([[info.min, info.max, 0], rng.integers(info.min // 2, info.max // 2, 3)], dtype=dtype)
    return rng.standard_normal((2, 3)).astype(dtype)


class TritonClient(unittest.TestCase):
    def setUp(self):
        self.client = httpclient.InferenceServerClient(URL)
        self.rng = np.random.default_rng(7)

    def tearDown(self):
        self.client.close()

    def iris_input(self, rows, binary):
        tensor = httpclient.InferInput("input", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows, binary_data=binary)
        return tensor

    def test_health_and_metadata(self):
        self.assertTrue(self.client.is_server_live())
        self.assertTrue(self.client.is_server_ready())
        self.assertIn("binary_tensor_data", self.client.get_server_metadata()["extensions"])
        self.assertTrue(self.client.is_model_ready("iris"))
        self.assertTrue(self.client.is_model_ready("iris", "1"))
        self.assertFalse(self.client.is_model_ready("nope"))
        metadata = self.client.get_model_metadata("iris")
        self.assertEqual(metadata["versions"], ["1", "2"])
        self.assertEqual(metadata["inputs"], [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}])

    def test_live_version_matches_onnxruntime_in_json_and_binary(self):
        rows = self.rng.uniform(0, 8, (5, 4)).astype(np.float32)
        (want,) = reference("iris", 2, {"input": rows})
        for binary_in in (False, True):
            for binary_out in (False, True):
                outputs = [httpclient.InferRequestedOutput("probabilities", binary_data=binary_out)]
                result = self.client.infer("iris", [self.iris_input(rows, binary_in)], outputs=outputs, request_id="r7")
                response = result.get_response()
                self.assertEqual((response["model_version"], response["id"]), ("2", "r7"))
                self.assertEqual("parameters" in response["outputs"][0], binary_out)
                np.testing.assert_allclose(result.as_numpy("probabilities"), want, rtol=1e-5, atol=1e-6)

    def test_default_outputs_come_back_binary(self):
        rows = self.rng.uniform(0, 8, (3, 4)).astype(np.float32)
        result = self.client.infer("iris", [self.iris_input(rows, True)])
        output = result.get_output("probabilities")
        self.assertEqual(output["parameters"]["binary_data_size"], 3 * 3 * 4)
        np.testing.assert_allclose(result.as_numpy("probabilities"), reference("iris", 2, {"input": rows})[0], rtol=1e-5, atol=1e-6)

    def test_a_pinned_version_answers_from_that_version(self):
        rows = self.rng.uniform(0, 8, (2, 4)).astype(np.float32)
        result = self.client.infer("iris", [self.iris_input(rows, True)], model_version="1")
        self.assertEqual(result.get_response()["model_version"], "1")
        np.testing.assert_allclose(result.as_numpy("probabilities"), reference("iris", 1, {"input": rows})[0], rtol=1e-5, atol=1e-6)

    def test_mlp_batch_matches_onnxruntime(self):
        rows = self.rng.standard_normal((16, 4)).astype(np.float32)
        tensor = httpclient.InferInput("input", [16, 4], "FP32").set_data_from_numpy(rows)
        result = self.client.infer("mlp", [tensor])
        np.testing.assert_allclose(result.as_numpy("logits"), reference("mlp", 1, {"input": rows})[0], rtol=1e-4, atol=1e-5)

    def test_every_datatype_round_trips_in_both_encodings_and_both_engines(self):
        values = {dt: sample(dt, self.rng) for dt in TYPES}
        # "identity" is served by tract, "identity-ort" (the same file) by ONNX Runtime.
        for model, binary in [(m, b) for m in ("identity", "identity-ort") for b in (False, True)]:
            inputs = []
            for datatype, array in values.items():
                tensor = httpclient.InferInput(f"x_{datatype.lower()}", [2, 3], datatype)
                tensor.set_data_from_numpy(array, binary_data=binary)
                inputs.append(tensor)
            outputs = [httpclient.InferRequestedOutput(f"y_{dt.lower()}", binary_data=binary) for dt in TYPES]
            result = self.client.infer(model, inputs, outputs=outputs)
            for datatype, array in values.items():
                got = result.as_numpy(f"y_{datatype.lower()}")
                with self.subTest(model=model, datatype=datatype, binary=binary):
                    self.assertEqual(result.get_output(f"y_{datatype.lower()}")["datatype"], datatype)
                    if datatype == "BYTES":
                        got = [v if isinstance(v, bytes) else v.encode() for v in got.flatten()]
                        self.assertEqual(got, list(array.flatten()))
                    else:
                        self.assertEqual(np_to_triton_dtype(got.dtype), datatype)
                        np.testing.assert_array_equal(got, array)

    def test_only_the_requested_outputs_come_back(self):
        ints = np.arange(6, dtype=np.int32).reshape(2, 3)
        inputs = []
        for datatype in TYPES:
            array = sample(datatype, self.rng)
            if datatype == "INT32":
                array = ints
            inputs.append(httpclient.InferInput(f"x_{datatype.lower()}", [2, 3], datatype).set_data_from_numpy(array))
        outputs = [httpclient.InferRequestedOutput("y_int32", binary_data=False)]
        result = self.client.infer("identity", inputs, outputs=outputs)
        self.assertEqual([o["name"] for o in result.get_response()["outputs"]], ["y_int32"])
        self.assertEqual(result.get_output("y_int32")["data"], list(range(6)))

    def test_bad_requests_are_400_with_the_reason(self):
        wrong_shape = httpclient.InferInput("input", [1, 5], "FP32").set_data_from_numpy(np.zeros((1, 5), np.float32))
        wrong_type = httpclient.InferInput("input", [1, 4], "FP64").set_data_from_numpy(np.zeros((1, 4), np.float64))
        unknown = httpclient.InferInput("x", [1, 4], "FP32").set_data_from_numpy(np.zeros((1, 4), np.float32))
        cases = [
            ([wrong_shape], "shape [1,5], the model expects [-1,4]"),
            ([wrong_type], "datatype FP64, the model expects FP32"),
            ([unknown], "model has no input 'x'"),
        ]
        for inputs, message in cases:
            with self.subTest(message=message):
                with self.assertRaises(InferenceServerException) as caught:
                    self.client.infer("iris", inputs)
                self.assertEqual(caught.exception.status(), "400")
                self.assertIn(message, caught.exception.message())
        with self.assertRaises(InferenceServerException) as caught:
            self.client.infer("nope", [self.iris_input(np.zeros((1, 4), np.float32), True)])
        self.assertEqual(caught.exception.status(), "404")
        # The model keeps serving.
        self.assertTrue(self.client.is_model_ready("iris"))


def corpus_input(spec):
    """A case.json input as numpy: NaN where JSON had null, strings as str objects (what
    onnxruntime takes; tritonclient sends them UTF-8 encoded)."""
    if spec["datatype"] == "BYTES":
        data = np.array(spec["data"], dtype=np.object_)
    else:
        dtype = TYPES[spec["datatype"]]
        data = np.array([np.nan if x is None else x for x in spec["data"]], dtype=dtype)
    return data.reshape(spec["shape"])


def zipmap_as_tensor(rows, labels):
    """onnxruntime's ZipMap answer (a list of {label: probability}) as modelpipe serves it."""
    return np.array([[row[label] for label in labels] for row in rows], dtype=np.float32)


class Corpus(unittest.TestCase):
    """Every corpus model through tritonclient (binary tensors, its default), against onnxruntime
    running the registry's own file."""

    def test_every_corpus_model_answers_as_onnxruntime(self):
        self.assertTrue(CORPUS, "no corpus models were served")
        client = httpclient.InferenceServerClient(URL)
        for name, directory in CORPUS:
            with self.subTest(model=name):
                with open(os.path.join(directory, "case.json")) as f:
                    case = json.load(f)
                feeds = {spec["name"]: corpus_input(spec) for spec in case["inputs"]}
                inputs = []
                for spec in case["inputs"]:
                    tensor = httpclient.InferInput(spec["name"], spec["shape"], spec["datatype"])
                    tensor.set_data_from_numpy(feeds[spec["name"]])
                    inputs.append(tensor)
                result = client.infer(name, inputs)
                metadata = client.get_model_metadata(name)
                path = os.path.join(REGISTRY, name, "versions", "1", "model.onnx")
                session = onnxruntime.InferenceSession(path)
                answers = session.run(None, feeds)
                for output, want in zip(session.get_outputs(), answers):
                    spec = next(o for o in metadata["outputs"] if o["name"] == output.name)
                    if "class_labels" in spec:
                        want = zipmap_as_tensor(want, spec["class_labels"])
                    got = result.as_numpy(output.name)
                    want = np.asarray(want)
                    self.assertEqual(got.shape, want.shape, output.name)
                    if want.dtype.kind == "f":
                        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4, err_msg=output.name)
                    elif want.dtype.kind in "OSU":
                        self.assertEqual([g.decode() if isinstance(g, bytes) else g for g in got.ravel()],
                                         [str(w) for w in want.ravel()], output.name)
                    else:
                        np.testing.assert_array_equal(got, want, err_msg=output.name)
        client.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
