"""The baseline for a local server: a plain `http.server` around onnxruntime, as a data scientist
would write it, speaking the Open Inference Protocol's binary tensor extension for one float32
input (a JSON header, then the tensor's little-endian bytes; the answer likewise).

`http_server.py MODEL PORT THREADS`: serves POST on 127.0.0.1:PORT until killed.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import onnxruntime as ort

model, port, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
options = ort.SessionOptions()
options.intra_op_num_threads = threads
options.inter_op_num_threads = 1
session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
output_names = [o.name for o in session.get_outputs()]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else each answer waits ~40 ms for a delayed ACK

    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        length = int(self.headers["inference-header-content-length"])
        request = json.loads(body[:length])
        tensor = request["inputs"][0]
        x = np.frombuffer(body[length:], dtype="<f4").reshape(tensor["shape"])
        results = session.run(output_names, {tensor["name"]: x})
        outputs = [{"name": n, "datatype": "FP32", "shape": list(v.shape),
                    "parameters": {"binary_data_size": v.nbytes}} for n, v in zip(output_names, results)]
        header = json.dumps({"outputs": outputs}).encode()
        payload = header + b"".join(np.ascontiguousarray(v, dtype="<f4").tobytes() for v in results)
        self.send_response(200)
        self.send_header("content-type", "application/octet-stream")
        self.send_header("inference-header-content-length", str(len(header)))
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
