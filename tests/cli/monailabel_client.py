"""Run in the MONAI Label server environment by test_monailabel_app.py: MONAI Label's own
client calls ``/info/`` and then each infer request of the plan (argv[1], JSON), and prints one
JSON line: {"info": ..., "infer": [{"file", "params"} or {"error"}]}. Every socket operation
times out after 120 s, so a stuck server fails the test instead of hanging it."""

from __future__ import annotations

import json
import socket
import sys

socket.setdefaulttimeout(120)

from monailabel.client import MONAILabelClient  # noqa: E402  (after the time-out is set)


def main() -> None:
    plan = json.loads(sys.argv[1])
    client = MONAILabelClient(plan["url"], tmpdir=plan["tmpdir"])
    result = {"info": client.info(), "infer": []}
    for n, req in enumerate(plan["requests"]):
        try:
            file, params = client.infer("sam2_med", req["image"], req["params"])
        except Exception as err:  # the client's MONAILabelClientException
            result["infer"].append({"error": f"{type(err).__name__}: {getattr(err, 'msg', err)}"})
            continue
        # the client names every answer after the server's file; keep each one
        kept = f"{file}.{n}.nii.gz"
        with open(file, "rb") as src, open(kept, "wb") as dst:
            dst.write(src.read())
        result["infer"].append({"file": kept, "params": params})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
