"""tritonclient with list inputs: a model that reads list columns gets each as an [N, L] tensor.

Run by the Rust integration test `sequence` with a cases file (JSON):
  {"http": "127.0.0.1:PORT", "grpc": "127.0.0.1:PORT", "model": NAME,
   "inputs": [{"name", "datatype", "values": [N rows of L values]}],
   "expected": [N x classes probabilities], "classes": K}
It infers the rows three ways -- HTTP with binary tensors (the client's default), HTTP with JSON
tensors, and gRPC -- and checks each answer value by value against the in-process predictions.
Prints one JSON line of counts; exits 1 on any mismatch.
"""

import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

NUMPY = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64}


def array(spec):
    values = spec["values"]
    if spec["datatype"] == "BYTES":
        return np.array([[v.encode() for v in row] for row in values], dtype=np.object_)
    return np.array(values, dtype=NUMPY[spec["datatype"]])


def main():
    with open(sys.argv[1]) as f:
        cases = json.load(f)
    expected = np.array(cases["expected"], dtype=np.float64).reshape(-1, cases["classes"])
    failures, compared, answers = [], 0, 0

    def check(how, probabilities):
        nonlocal compared, answers
        answers += 1
        got = np.asarray(probabilities, dtype=np.float64).reshape(expected.shape)
        for r, (g_row, w_row) in enumerate(zip(got, expected)):
            for c, (g, w) in enumerate(zip(g_row, w_row)):
                compared += 1
                if abs(g - w) > 1e-5 * max(abs(g), abs(w), 1e-6):
                    failures.append(f"{how}: row {r} class {c}: got {g}, expected {w}")

    http = httpclient.InferenceServerClient(url=cases["http"])
    for binary in (True, False):
        inputs = []
        for spec in cases["inputs"]:
            data = array(spec)
            tensor = httpclient.InferInput(spec["name"], list(data.shape), spec["datatype"])
            tensor.set_data_from_numpy(data, binary_data=binary)
            inputs.append(tensor)
        outputs = [httpclient.InferRequestedOutput("probabilities", binary_data=binary)]
        result = http.infer(cases["model"], inputs, outputs=outputs)
        check("http binary" if binary else "http json", result.as_numpy("probabilities"))

    grpc = grpcclient.InferenceServerClient(url=cases["grpc"])
    inputs = []
    for spec in cases["inputs"]:
        data = array(spec)
        tensor = grpcclient.InferInput(spec["name"], list(data.shape), spec["datatype"])
        tensor.set_data_from_numpy(data)
        inputs.append(tensor)
    result = grpc.infer(cases["model"], inputs)
    check("grpc", result.as_numpy("probabilities"))

    print(json.dumps({"answers": answers, "values_compared": compared, "failures": failures[:20]}))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
