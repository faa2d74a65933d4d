"""The baseline: an ONNX model served from Lambda the way the AWS samples do it.

onnxruntime + numpy, the session created once at import (outside the handler), the API Gateway
event's JSON body parsed, the session run, the answer returned as JSON. It speaks the same Open
Inference Protocol v2 JSON as modelpipe so both answer the same requests; MODEL_PATH names the
model and THREADS the intra-op thread count (the same as modelpipe's in every comparison).
"""

import base64
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
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    if "inference-header-content-length" in headers:
        return binary_handler(event, headers)
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


def binary_handler(event, headers):
    """The binary tensor extension: a JSON header, then each tensor's little-endian bytes; the
    answer likewise (base64 through API Gateway)."""
    body = base64.b64decode(event["body"]) if event.get("isBase64Encoded") else event["body"].encode()
    length = int(headers["inference-header-content-length"])
    request = json.loads(body[:length])
    feeds, offset = {}, length
    for tensor in request["inputs"]:
        size = tensor["parameters"]["binary_data_size"]
        feeds[tensor["name"]] = np.frombuffer(body[offset:offset + size], dtype=np.float32).reshape(tensor["shape"])
        offset += size
    results = session.run(output_names, feeds)
    outputs = [
        {"name": name, "datatype": "FP32", "shape": list(value.shape),
         "parameters": {"binary_data_size": value.nbytes}}
        for name, value in zip(output_names, results)
    ]
    header = json.dumps({"model_name": os.environ.get("MODEL_NAME", "model"), "outputs": outputs}).encode()
    payload = header + b"".join(np.ascontiguousarray(v, dtype=np.float32).tobytes() for v in results)
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/octet-stream", "inference-header-content-length": str(len(header))},
        "isBase64Encoded": True,
        "body": base64.b64encode(payload).decode(),
    }


def empty(event, context):
    """Answers at once: the Runtime API round trip a Python function pays before any work."""
    return {"statusCode": 200, "body": "{}"}
