"""The baseline: an ONNX model served from Lambda the way the AWS samples do it.

onnxruntime + numpy, the session created once at import (outside the handler), the API Gateway
event's JSON body parsed, the session run, the answer returned as JSON. It speaks the same Open
Inference Protocol v2 JSON as modelpipe so both answer the same requests; MODEL_PATH names the
model and THREADS the intra-op thread count (the same as modelpipe's in every comparison).
"""

import json
import os

import numpy as np
import onnxruntime as ort

options = ort.SessionOptions()
options.intra_op_num_threads = int(os.environ.get("THREADS", "1"))
options.inter_op_num_threads = 1
session = ort.InferenceSession(
    os.environ["MODEL_PATH"], options, providers=["CPUExecutionProvider"]
)
input_names = [i.name for i in session.get_inputs()]
output_names = [o.name for o in session.get_outputs()]


def handler(event, context):
    try:
        request = json.loads(event["body"])
        feeds = {
            tensor["name"]: np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
            for tensor in request["inputs"]
        }
    except (KeyError, TypeError, ValueError) as error:
        return {"statusCode": 400, "body": json.dumps({"error": str(error)})}
    results = session.run(output_names, feeds)
    outputs = [
        {"name": name, "datatype": "FP32", "shape": list(value.shape), "data": value.ravel().tolist()}
        for name, value in zip(output_names, results)
    ]
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"model_name": os.environ.get("MODEL_NAME", "model"), "outputs": outputs}),
    }


def empty(event, context):
    """Answers at once: the Runtime API round trip a Python function pays before any work."""
    return {"statusCode": 200, "body": "{}"}
