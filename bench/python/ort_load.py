"""onnxruntime's load, the baseline for modelpipe's: `ort_load.py MODEL`.

Times `import onnxruntime` and the session's creation (one thread, as load_probe), runs the
model once on zeros (symbolic dimensions as 1), then 5 more times; prints one JSON line:
import_ms, load_ms (session), first_run_ms, run_ms (median of the 5), rss_mb and peak_mb.
"""

import json
import sys
import time

started = time.perf_counter()
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

import_ms = (time.perf_counter() - started) * 1e3


def status_mb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
started = time.perf_counter()
session = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
load_ms = (time.perf_counter() - started) * 1e3
spec = session.get_inputs()[0]
shape = [d if isinstance(d, int) else 1 for d in spec.shape]
feeds = {spec.name: np.zeros(shape, dtype=np.float32)}
started = time.perf_counter()
session.run(None, feeds)
first_run_ms = (time.perf_counter() - started) * 1e3
runs = []
for _ in range(5):
    started = time.perf_counter()
    session.run(None, feeds)
    runs.append((time.perf_counter() - started) * 1e3)
runs.sort()
print(json.dumps({
    "import_ms": import_ms,
    "load_ms": load_ms,
    "first_run_ms": first_run_ms,
    "run_ms": runs[2],
    "rss_mb": status_mb("VmRSS:"),
    "peak_mb": status_mb("VmHWM:"),
}))
