#!/usr/bin/env python3
"""Assembles the Lambda zips from built function binaries:

    python3 scripts/lambda_zip.py BIN_DIR OUT_DIR [--onnxruntime LIB]

For each of validator, publisher and inference, BIN_DIR/<name> (or BIN_DIR/<name>/bootstrap, as
`cargo lambda build` lays them out) becomes OUT_DIR/<name>/bootstrap.zip holding `bootstrap`
(executable) and, for the two functions that run models (validator, inference), LIB as
`libonnxruntime.so` beside it, where the functions look for ONNX Runtime without configuration.
The publisher never runs a model and ships without it. scripts/package.sh calls this after
`cargo lambda build --profile lambda`; the packaging test calls it on the debug binaries.
"""

import argparse
import os
import stat
import sys
import zipfile

FUNCTIONS = ["validator", "publisher", "inference"]
RUN_MODELS = {"validator", "inference"}
LIBRARY = "libonnxruntime.so"


def binary(bin_dir, name):
    for candidate in (os.path.join(bin_dir, name, "bootstrap"), os.path.join(bin_dir, name)):
        if os.path.isfile(candidate):
            return candidate
    sys.exit(f"lambda_zip: no binary for {name} in {bin_dir}")


def add(archive, path, name, mode):
    info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
    info.external_attr = (stat.S_IFREG | mode) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    with open(path, "rb") as f:
        archive.writestr(info, f.read())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bin_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--onnxruntime", help="libonnxruntime.so (from the onnxruntime wheel)")
    args = parser.parse_args()
    if args.onnxruntime and not os.path.isfile(args.onnxruntime):
        sys.exit(f"lambda_zip: {args.onnxruntime}: no such file")
    for name in FUNCTIONS:
        out = os.path.join(args.out_dir, name)
        os.makedirs(out, exist_ok=True)
        zip_path = os.path.join(out, "bootstrap.zip")
        with zipfile.ZipFile(zip_path + ".tmp", "w") as archive:
            add(archive, binary(args.bin_dir, name), "bootstrap", 0o755)
            if name in RUN_MODELS and args.onnxruntime:
                add(archive, args.onnxruntime, LIBRARY, 0o644)
        os.replace(zip_path + ".tmp", zip_path)
        print(f"{zip_path}: {os.path.getsize(zip_path) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
