"""A reader of SageMaker Data Capture files, written from SageMaker's published record shape
(https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-data-capture-endpoint.html), not
from modelpipe's code: what a SageMaker user's tooling expects of `*.jsonl` capture objects.

    python3 capture_reader.py DIR

reads every `*.jsonl.gz` (and `*.jsonl`) under DIR, checks each line against the shape, decodes
each payload by its `encoding`, and prints a JSON summary on stdout:
    {"records": N, "files": [...], "encodings": {...},
     "events": [{"file", "eventId", "inferenceTime", "inferenceId", "input", "output", "modelpipe"}]}
where `input`/`output` are the payloads, decoded (text for JSON and CSV, base64 kept for BASE64).
Exits 1 with the offending file and line when a record is not SageMaker's shape.
"""

import base64
import datetime
import gzip
import json
import pathlib
import sys
import uuid

ENCODINGS = {"CSV", "JSON", "BASE64"}


def fail(where, why):
    print(f"{where}: {why}", file=sys.stderr)
    sys.exit(1)


def payload(where, section, mode):
    """One of captureData's endpointInput / endpointOutput."""
    if not isinstance(section, dict):
        fail(where, f"{mode}: not an object")
    for field in ("observedContentType", "mode", "data", "encoding"):
        if not isinstance(section.get(field), str):
            fail(where, f"{mode}: '{field}' missing or not a string")
    if section["mode"] != mode:
        fail(where, f"mode is {section['mode']!r}, expected {mode!r}")
    if section["encoding"] not in ENCODINGS:
        fail(where, f"encoding {section['encoding']!r} is not one of {sorted(ENCODINGS)}")
    data = section["data"]
    if section["encoding"] == "BASE64":
        try:
            base64.b64decode(data, validate=True)
        except ValueError as e:
            fail(where, f"{mode}: BASE64 data does not decode: {e}")
    elif section["encoding"] == "JSON":
        try:
            json.loads(data)
        except ValueError as e:
            fail(where, f"{mode}: JSON data does not parse: {e}")
    return {"encoding": section["encoding"], "content_type": section["observedContentType"], "data": data}


def record(where, line):
    try:
        event = json.loads(line)
    except ValueError as e:
        fail(where, f"not JSON: {e}")
    capture = event.get("captureData")
    if not isinstance(capture, dict):
        fail(where, "no captureData")
    metadata = event.get("eventMetadata")
    if not isinstance(metadata, dict):
        fail(where, "no eventMetadata")
    try:
        uuid.UUID(metadata["eventId"])
    except (KeyError, ValueError, TypeError):
        fail(where, "eventMetadata.eventId is not a UUID")
    try:
        datetime.datetime.fromisoformat(metadata["inferenceTime"].replace("Z", "+00:00"))
    except (KeyError, ValueError, AttributeError):
        fail(where, "eventMetadata.inferenceTime is not an ISO 8601 time")
    if event.get("eventVersion") != "0":
        fail(where, f"eventVersion is {event.get('eventVersion')!r}, expected '0'")
    return {
        "eventId": metadata["eventId"],
        "inferenceTime": metadata["inferenceTime"],
        "inferenceId": metadata.get("inferenceId"),
        "input": payload(where, capture.get("endpointInput"), "INPUT"),
        "output": payload(where, capture.get("endpointOutput"), "OUTPUT"),
        # Fields beyond SageMaker's are allowed; modelpipe's are passed through for the test.
        "modelpipe": event.get("modelpipe"),
    }


def main(root):
    root = pathlib.Path(root)
    files = sorted(p for p in root.rglob("*") if p.name.endswith((".jsonl.gz", ".jsonl")))
    events, encodings = [], {}
    for path in files:
        raw = path.read_bytes()
        text = gzip.decompress(raw).decode() if path.name.endswith(".gz") else raw.decode()
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            event = record(f"{path.relative_to(root)}:{number}", line)
            event["file"] = str(path.relative_to(root))
            for side in ("input", "output"):
                encoding = event[side]["encoding"]
                encodings[encoding] = encodings.get(encoding, 0) + 1
            events.append(event)
    json.dump(
        {
            "records": len(events),
            "files": [str(p.relative_to(root)) for p in files],
            "encodings": encodings,
            "events": events,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main(sys.argv[1])
