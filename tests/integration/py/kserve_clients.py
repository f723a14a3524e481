"""NVIDIA's tritonclient (the KServe v2 client people use) against a running millrace server.

Run by the Rust integration test `serve_clients` with a cases file (JSON):
  {"http": "127.0.0.1:PORT", "grpc": "127.0.0.1:PORT", "model": NAME, "token": TOKEN,
   "inputs": [{"name", "datatype", "values"}], "expected": [rows x classes probabilities],
   "classes": K, "tls_ca": PEM FILE (optional: connect over TLS, trusting this certificate)}
It infers every row three ways -- HTTP with binary tensors (the client's default), HTTP with JSON
tensors, and gRPC -- and checks each answer value by value against the in-process predictions,
then checks the error cases. Prints one JSON line of counts; exits 1 on any mismatch.
"""

import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

NUMPY = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32,
         "BOOL": np.bool_}


def array(spec):
    values = spec["values"]
    if spec["datatype"] == "BYTES":
        return np.array([v.encode() for v in values], dtype=np.object_)
    return np.array(values, dtype=NUMPY[spec["datatype"]])


def close(a, b):
    return abs(a - b) <= 1e-5 * max(abs(a), abs(b), 1e-6)


class Checker:
    def __init__(self, expected, classes):
        self.expected = np.array(expected, dtype=np.float64).reshape(-1, classes)
        self.compared = 0
        self.failures = []

    def check(self, how, probabilities, classes):
        probabilities = np.asarray(probabilities, dtype=np.float64).reshape(self.expected.shape)
        for r, (got, want) in enumerate(zip(probabilities, self.expected)):
            for c, (g, w) in enumerate(zip(got, want)):
                self.compared += 1
                if not close(g, w):
                    self.failures.append(f"{how}: row {r} class {c}: got {g}, expected {w}")
        want_class = self.expected.argmax(axis=1)
        got_class = np.asarray(classes).reshape(-1)
        if not np.array_equal(got_class.astype(np.int64), want_class):
            self.failures.append(f"{how}: classes {got_class.tolist()} != {want_class.tolist()}")


def http_inputs(specs, binary, two_d):
    inputs = []
    for spec in specs:
        data = array(spec)
        if two_d:
            data = data.reshape(-1, 1)
        tensor = httpclient.InferInput(spec["name"], list(data.shape), spec["datatype"])
        tensor.set_data_from_numpy(data, binary_data=binary)
        inputs.append(tensor)
    return inputs


def grpc_inputs(specs, two_d):
    inputs = []
    for spec in specs:
        data = array(spec)
        if two_d:
            data = data.reshape(-1, 1)
        tensor = grpcclient.InferInput(spec["name"], list(data.shape), spec["datatype"])
        tensor.set_data_from_numpy(data)
        inputs.append(tensor)
    return inputs


def expect_error(failures, how, call, want):
    """`call` must raise an InferenceServerException whose status contains `want`."""
    try:
        call()
    except InferenceServerException as e:
        status = str(e.status())
        if want not in status:
            failures.append(f"{how}: status {status} ({e.message()}), expected {want}")
        elif not e.message():
            failures.append(f"{how}: no message")
        return status
    failures.append(f"{how}: no error, expected {want}")
    return None


def main():
    cases = json.load(open(sys.argv[1]))
    model, specs, token = cases["model"], cases["inputs"], cases["token"]
    # (tritonclient.http writes its Inference-Header-Content-Length into the headers dict it is
    # given, so each call gets a copy.)
    auth = {"Authorization": f"Bearer {token}"}
    # gRPC metadata keys are lower case.
    grpc_auth = {"authorization": f"Bearer {token}"}
    checker = Checker(cases["expected"], cases["classes"])
    ca = cases.get("tls_ca")
    if ca:
        # Verified TLS: the server's certificate must chain to `ca` and name the host.
        http = httpclient.InferenceServerClient(cases["http"], ssl=True,
                                                ssl_options={"ca_certs": ca})
        grpc = grpcclient.InferenceServerClient(cases["grpc"], ssl=True, root_certificates=ca)
    else:
        http = httpclient.InferenceServerClient(cases["http"])
        grpc = grpcclient.InferenceServerClient(cases["grpc"])
    answers = 0

    # HTTP, binary tensors in and out (the client's default), shapes [N] and [N, 1].
    for two_d in (False, True):
        result = http.infer(model, http_inputs(specs, True, two_d), headers=dict(auth))
        checker.check(f"http binary two_d={two_d}", result.as_numpy("probabilities"),
                      result.as_numpy("class"))
        answers += 1
    # HTTP, JSON tensors in, and JSON outputs asked for by name.
    outputs = [httpclient.InferRequestedOutput(n, binary_data=False)
               for n in ("class", "probabilities")]
    result = http.infer(model, http_inputs(specs, False, False), outputs=outputs, headers=dict(auth))
    response = result.get_response()
    if any("parameters" in o for o in response["outputs"]):
        checker.failures.append("http json: outputs came back in binary")
    checker.check("http json", result.as_numpy("probabilities"), result.as_numpy("class"))
    answers += 1
    # gRPC: raw_input_contents in, raw_output_contents out.
    for two_d in (False, True):
        result = grpc.infer(model, grpc_inputs(specs, two_d), headers=grpc_auth)
        checker.check(f"grpc two_d={two_d}", result.as_numpy("probabilities"),
                      result.as_numpy("class"))
        answers += 1

    failures = checker.failures
    if not grpc.is_server_live() or not grpc.is_server_ready():
        failures.append("grpc: server not live/ready")
    if not grpc.is_model_ready(model, headers=grpc_auth):
        failures.append("grpc: model not ready")
    meta = grpc.get_model_metadata(model, headers=grpc_auth, as_json=True)
    if sorted(i["name"] for i in meta["inputs"]) != sorted(s["name"] for s in specs):
        failures.append(f"grpc metadata inputs: {meta['inputs']}")
    http_meta = http.get_model_metadata(model, headers=dict(auth))
    if http_meta["name"] != model:
        failures.append(f"http metadata: {http_meta}")

    # Errors: unknown model, bad tensor, missing token.
    statuses = {}
    statuses["http unknown model"] = expect_error(
        failures, "http unknown model",
        lambda: http.infer("no-such-model", http_inputs(specs, True, False), headers=dict(auth)), "404")
    statuses["grpc unknown model"] = expect_error(
        failures, "grpc unknown model",
        lambda: grpc.infer("no-such-model", grpc_inputs(specs, False), headers=grpc_auth), "NOT_FOUND")
    bad = [dict(s) for s in specs]
    bad[0] = {"name": bad[0]["name"], "datatype": "BOOL", "values": [True] * len(bad[0]["values"])}
    statuses["http bad tensor"] = expect_error(
        failures, "http bad tensor",
        lambda: http.infer(model, http_inputs(bad, True, False), headers=dict(auth)), "400")
    statuses["grpc bad tensor"] = expect_error(
        failures, "grpc bad tensor",
        lambda: grpc.infer(model, grpc_inputs(bad, False), headers=grpc_auth), "INVALID_ARGUMENT")
    statuses["http no token"] = expect_error(
        failures, "http no token",
        lambda: http.infer(model, http_inputs(specs, True, False)), "401")
    statuses["grpc no token"] = expect_error(
        failures, "grpc no token",
        lambda: grpc.infer(model, grpc_inputs(specs, False)), "UNAUTHENTICATED")
    statuses["grpc wrong token"] = expect_error(
        failures, "grpc wrong token",
        lambda: grpc.infer(model, grpc_inputs(specs, False),
                           headers={"authorization": "Bearer nope"}), "UNAUTHENTICATED")

    print(json.dumps({"answers": answers, "values_compared": checker.compared,
                      "errors": statuses, "failures": failures[:20]}))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
