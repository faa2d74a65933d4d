"""Raw onnxruntime compute, the baseline for tract's: `ort_raw.py MODEL THREADS RUNS INPUT`.

INPUT is the model's one float32 input as raw little-endian bytes, with its shape in
INPUT.shape (comma-separated). Creates the session (not timed), runs it once to warm up, then
RUNS times, and prints one JSON line: {"run_us": [...], "output": [first output, flattened]}.
"""

import json
import sys
import time

import numpy as np
import onnxruntime as ort

model, threads, runs, input_path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
with open(input_path + ".shape") as f:
    shape = [int(d) for d in f.read().split(",")]
x = np.fromfile(input_path, dtype="<f4").reshape(shape)

options = ort.SessionOptions()
options.intra_op_num_threads = threads
options.inter_op_num_threads = 1
session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
feeds = {session.get_inputs()[0].name: x}
output = session.run(None, feeds)[0]
run_us = []
for _ in range(runs):
    started = time.perf_counter_ns()
    session.run(None, feeds)
    run_us.append((time.perf_counter_ns() - started) / 1e3)
print(json.dumps({"run_us": run_us, "output": output.ravel().tolist()}))
