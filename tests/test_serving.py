"""The local TF-Serving-compatible server, end to end: a real server process,
plain HTTP and the official gRPC stubs, answers checked against the models."""

import json
import os
import shutil
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from test_serving_support import InProcessServer, LocalServer, export_version, images, tiny_classifier

ATOL = 1e-5


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Versions 1 and 2 of a classifier, served under three policies, plus a model
    `fresh` (version 1 only) for the hot-reload test. The server (real sockets on
    loopback, in threads of this process) starts first and picks the exports up
    as they land, as it would in production."""
    from serving import config as config_lib

    root = str(tmp_path_factory.mktemp("served"))
    app_dir = os.path.join(root, "classify")
    os.makedirs(app_dir)
    os.makedirs(os.path.join(root, "fresh"))
    config = config_lib.build_config(["classify"])
    for name, policy in (("classify_all", "all"), ("classify_v1", "specific"), ("fresh", "latest")):
        entry = config.model_config_list.config.add(name=name, base_path=f"/models/{name.split('_')[0]}",
                                                    model_platform="tensorflow")
        if policy == "all":
            entry.model_version_policy.all.SetInParent()
        elif policy == "specific":
            entry.model_version_policy.specific.versions.append(1)
            entry.version_labels["stable"] = 1
    config_path = config_lib.write_config(os.path.join(root, "models.config"), config)
    server = InProcessServer(config_path, poll_seconds=0.3, max_body_bytes=1 << 20, max_batch=64)
    try:
        x = images(5)
        expected = {}
        for version in (1, 2):
            model = tiny_classifier(seed=version)
            export_version(model, app_dir, version)
            expected[version] = model.predict(x, verbose=0)
        assert not np.allclose(expected[1], expected[2], atol=1e-3)  # the versions are told apart
        shutil.copytree(os.path.join(app_dir, "1"), os.path.join(root, "fresh", ".staging-1"))
        os.replace(os.path.join(root, "fresh", ".staging-1"), os.path.join(root, "fresh", "1"))
        server.wait_ready(["classify_v1", "classify_all", "fresh"], count={"classify_all": 2})
        yield server, x, expected
    finally:
        server.stop()


def http(url, method="GET", body=None):
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        raw = error.read()
        return error.code, (json.loads(raw) if raw else {})


def test_rest_status_and_metadata(served):
    server, _, _ = served
    assert server.versions("classify") == [2]            # latest 1 (version 1 shows as END)
    assert server.versions("classify_all") == [1, 2]
    assert server.versions("classify_v1") == [1]          # specific
    status, body = http(f"{server.url}/v1/models/classify_v1/labels/stable")
    assert status == 200 and body["model_version_status"][0]["state"] == "AVAILABLE"
    assert body["model_version_status"][0]["status"]["error_code"] == "OK"

    status, meta = http(f"{server.url}/v1/models/classify/metadata")
    assert status == 200 and meta["model_spec"] == {"name": "classify", "signature_name": "", "version": "2"}
    signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    assert signature["inputs"]["images"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in signature["inputs"]["images"]["tensor_shape"]["dim"]] == ["-1", "28", "28", "1"]
    assert list(signature["outputs"]) == ["probabilities"]
    assert http(f"{server.url}/v1/models/classify_all/versions/1/metadata")[1]["model_spec"]["version"] == "1"

    status, body = http(f"{server.url}/v1/models/nothing")
    assert status == 404 and "nothing" in body["error"]


def test_rest_predict_equals_model(served):
    server, x, expected = served
    base = f"{server.url}/v1/models"
    status, body = http(f"{base}/classify:predict", "POST", {"instances": x.tolist()})
    assert status == 200
    np.testing.assert_allclose(body["predictions"], expected[2], atol=ATOL)
    status, body = http(f"{base}/classify:predict", "POST",
                        {"signature_name": "serving_default", "inputs": {"images": x[:2].tolist()}})
    np.testing.assert_allclose(body["outputs"], expected[2][:2], atol=ATOL)
    status, body = http(f"{base}/classify_all/versions/1:predict", "POST", {"inputs": x.tolist()})
    np.testing.assert_allclose(body["outputs"], expected[1], atol=ATOL)
    status, body = http(f"{base}/classify_v1/labels/stable:predict", "POST",
                        {"instances": [{"images": row} for row in x.tolist()]})
    np.testing.assert_allclose(body["predictions"], expected[1], atol=ATOL)

    from serving.client import RestClient

    client = RestClient(server.url)
    np.testing.assert_allclose(client.predict("classify_all", {"images": x}, version=2, row=True)["outputs"],
                               expected[2], atol=ATOL)
    client.close()


def test_grpc_endpoints_equal_model(served):
    from serving.client import GrpcClient, ServingClientError

    server, x, expected = served
    client = GrpcClient(server.target)
    try:
        outputs = client.predict("classify", {"images": x})
        np.testing.assert_allclose(outputs["probabilities"], expected[2], atol=ATOL)
        response = client.predict_response("classify_v1", {"images": x[:1]}, label="stable",
                                           output_filter=["probabilities"])
        assert response.model_spec.version.value == 1 and response.model_spec.signature_name == "serving_default"
        np.testing.assert_allclose(client.predict("classify_all", {"images": x}, version=1)["probabilities"],
                                   expected[1], atol=ATOL)

        status = client.status("classify_all")
        assert sorted(s.version for s in status.model_version_status) == [1, 2]
        assert all(s.state == 30 for s in status.model_version_status)  # AVAILABLE
        version, signatures = client.metadata("classify")
        assert version == 2
        assert [d.size for d in signatures.signature_def["serving_default"].inputs["images"].tensor_shape.dim] \
            == [-1, 28, 28, 1]

        with pytest.raises(ServingClientError) as error:
            client.predict("classify", {"images": x}, version=9)
        assert error.value.status == "NOT_FOUND"
        from tensorflow_serving.apis import classification_pb2

        request = classification_pb2.ClassificationRequest()
        request.model_spec.name = "classify"
        with pytest.raises(ServingClientError) as error:
            client._invoke(client.predictions.Classify, request)
        assert error.value.status == "INVALID_ARGUMENT" and "tensorflow/serving/classify" in error.value.message
    finally:
        client.close()


REST_BAD = [  # (path suffix, body, status, words in the error)
    ("classify:predict", b'{"instances": [1,', 400, "JSON Parse error"),
    ("classify:predict", {"signature_name": "serving_default"}, 400, "Missing 'inputs' or 'instances'"),
    ("classify:predict", {"instances": [1], "inputs": [1]}, 400, "Only one of"),
    ("classify:predict", {"instances": [[1.0, 2.0]]}, 400, "expected shape [?,28,28,1]"),
    ("classify:predict", {"inputs": {"pixels": [[1.0]]}}, 400, "alias not found in signature: pixels"),
    ("classify:predict", {"instances": [[["a"] * 1] * 28] * 1}, 400, "Failed to process element"),
    ("classify:predict", {"instances": [[[0.0]] * 28, [[0.0]] * 27]}, 400, ""),
    ("classify:predict", {"inputs": [[[[0.0]] * 28] * 28] * 65}, 400, "exceeds the server's limit of 64"),
    ("classify:predict", {"signature_name": "nope", "inputs": [1]}, 400, "nope"),
    ("classify:predict", [1, 2], 400, "JSON object"),
    ("classify:classify", {"examples": [{"x": 1}]}, 400, "tensorflow/serving/classify"),
    ("classify/versions/7:predict", {"inputs": [1]}, 404, "Specific(classify, 7)"),
    ("nothing:predict", {"inputs": [1]}, 404, "Servable not found"),
    ("classify_v1/labels/canary:predict", {"inputs": [1]}, 404, "canary"),
    ("classify:explode", {"inputs": [1]}, 404, "Malformed request"),
]


@pytest.mark.parametrize("suffix,body,status,words", REST_BAD)
def test_rest_errors_are_tf_serving_json(served, suffix, body, status, words):
    server, _, _ = served
    code, answer = http(f"{server.url}/v1/models/{suffix}", "POST", body)
    assert code == status and words in answer["error"], answer


def _with(x, value, where=(0, 3, 4, 0)):
    """`x` as nested lists with one element replaced by `value` (any JSON value)."""
    rows = x.tolist()
    i, j, k, c = where
    rows[i][j][k][c] = value
    return rows


@pytest.mark.parametrize("value,words", [
    (float("nan"), "1 of 1568 values are NaN or infinite"),
    (float("inf"), "NaN or infinite"),
    (float("-inf"), "NaN or infinite"),
    (1e39, "out of float32 range"),                 # finite in JSON, infinite as float32
    ("12.5", 'JSON Value: "12.5" Type: String is not of expected type: float32'),
    (True, "Type: Bool is not of expected type: float32"),
    (None, "Type: Null is not of expected type: float32"),
])
def test_rest_refuses_nan_inf_and_non_numbers_in_float_input(served, value, words):
    """NaN/Inf are refused (a deliberate difference: TF Serving passes them to the model);
    a numeric string is refused as TF Serving refuses it. Row and columnar formats alike."""
    server, x, expected = served
    rows = _with(x[:2], value)
    for body in ({"instances": rows}, {"inputs": {"images": rows}}, {"instances": [{"images": r} for r in rows]}):
        code, answer = http(f"{server.url}/v1/models/classify:predict", "POST", json.dumps(body).encode())
        assert code == 400, (code, answer)
        assert "'images'" in answer["error"] and words in answer["error"], answer
    # the same request with the element left alone is answered
    code, answer = http(f"{server.url}/v1/models/classify:predict", "POST", {"instances": x[:2].tolist()})
    assert code == 200
    np.testing.assert_allclose(answer["predictions"], expected[2][:2], atol=ATOL)


def test_grpc_refuses_nan_and_inf_naming_the_input(served):
    from serving.client import GrpcClient, ServingClientError

    server, x, expected = served
    client = GrpcClient(server.target)
    try:
        for value in (np.nan, np.inf, -np.inf):
            bad = x[:2].copy()
            bad[1, 27, 27, 0] = value
            with pytest.raises(ServingClientError) as error:
                client.predict("classify", {"images": bad})
            assert error.value.status == "INVALID_ARGUMENT"
            assert "input 'images': 1 of 1568 values are NaN or infinite" in error.value.message
        np.testing.assert_allclose(client.predict("classify", {"images": x[:2]})["probabilities"],
                                   expected[2][:2], atol=ATOL)
    finally:
        client.close()


def test_rest_body_limit_and_grpc_validation(served):
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    from serving.client import GrpcClient, ServingClientError

    server, x, _ = served
    # A body declared over the limit is refused from its headers alone, before
    # it is sent (sending it would race the server closing the connection).
    import http.client
    import urllib.parse

    url = urllib.parse.urlsplit(server.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        connection.putrequest("POST", "/v1/models/classify:predict")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str((1 << 20) + 1))
        connection.endheaders()
        response = connection.getresponse()
        code, answer = response.status, json.loads(response.read())
    finally:
        connection.close()
    assert code == 413 and "over" in answer["error"]

    client = GrpcClient(server.target)
    bad = [({"images": x[..., 0]}, "expected shape"),
           ({"images": x.astype(np.int32)}, "int32"),
           ({"pixels": x}, "alias not found"),
           ({}, "missing")]
    try:
        for inputs, words in bad:
            with pytest.raises(ServingClientError) as error:
                client.predict("classify", inputs)
            assert error.value.status == "INVALID_ARGUMENT" and words in error.value.message
        # A proto that claims a huge shape with a few bytes is refused before any allocation.
        from tensorflow_serving.apis import predict_pb2

        for dims, content in (([1 << 30, 28, 28, 1], b"\0" * 16), ([1, 28, 28, 1], b"\0" * 5)):
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "classify"
            request.inputs["images"].CopyFrom(tensor_pb2.TensorProto(
                dtype=types_pb2.DT_FLOAT, tensor_content=content,
                tensor_shape=tensor_shape_pb2.TensorShapeProto(
                    dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims])))
            with pytest.raises(ServingClientError) as error:
                client._invoke(client.predictions.Predict, request)
            assert error.value.status in ("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED")
    finally:
        client.close()
    assert server.alive()


def test_concurrent_burst_of_good_and_malformed_requests(served):
    """48 REST + 48 gRPC requests, half malformed, 8 at a time, bounded in time."""
    from serving.client import GrpcClient, RestClient, ServingClientError

    server, x, expected = served
    grpc_client = GrpcClient(server.target, timeout=30)
    bad_rest = [b"{", {"instances": [[1, 2, 3]]}, {"inputs": {"zzz": [1]}}, {"instances": "text"},
                b"\xff\xfe", {"inputs": [[[["x"]] * 28] * 28]}]

    def one(i):
        rows = slice(i % 5, i % 5 + 1 + i % 3)
        if i % 4 == 0:
            client = RestClient(server.url)
            try:
                return "good", rows, client.predict("classify", {"images": x[rows]}, row=bool(i % 8))["outputs"]
            finally:
                client.close()
        if i % 4 == 1:
            return "good", rows, grpc_client.predict("classify", {"images": x[rows]})["probabilities"]
        if i % 4 == 2:
            client = RestClient(server.url)
            try:
                status, body = client.request("POST", "/v1/models/classify:predict", bad_rest[i % len(bad_rest)])
                return "bad", status, body
            finally:
                client.close()
        try:
            grpc_client.predict("classify", {"images": x[rows, :, :14]})
        except ServingClientError as error:
            return "bad", error.status, error.message
        return "bad", "OK", None

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, range(96), timeout=120))
    grpc_client.close()
    assert time.monotonic() - start < 120
    goods = [r for r in results if r[0] == "good"]
    bads = [r for r in results if r[0] == "bad"]
    assert len(goods) == 48 and len(bads) == 48
    for _, rows, probabilities in goods:
        np.testing.assert_allclose(probabilities, expected[2][rows], atol=ATOL)
    for _, status, body in bads:
        assert status == "INVALID_ARGUMENT" or (isinstance(status, int) and 400 <= status < 500), (status, body)
        assert body  # an error message, TF Serving style
    assert server.alive()
    assert http(f"{server.url}/v1/models/classify")[0] == 200


def test_client_cli_rest_and_grpc(served, tmp_path, capsys):
    from PIL import Image

    from conftest import run_python

    server, x, expected = served
    paths = []
    for i in range(2):
        path = str(tmp_path / f"im{i}.png")
        Image.fromarray(x[i, :, :, 0].astype(np.uint8)).save(path)
        paths.append(path)
    pixels = np.stack([np.asarray(Image.open(p), np.float32)[..., None] for p in paths])
    from serving.client import RestClient

    reference = RestClient(server.url).predict("classify", {"images": pixels})["outputs"]
    labels = os.path.join(server.root, "classify", "2", "assets.extra", "labels.txt")
    common = ["client", "--model", "classify", "--url", server.url, "--target", server.target,
              "--labels", labels, "--top", "1", *[a for p in paths for a in ("--image", p)]]
    # REST from a fresh process (the REST client needs no TensorFlow); gRPC in-process (its stubs import TF).
    result = run_python(["-m", "serving", *common, "--protocol", "rest"], timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    from serving.__main__ import main

    main([*common, "--protocol", "grpc"])
    for output in (result.stdout, capsys.readouterr().out):
        lines = output.strip().splitlines()
        assert len(lines) == 2
        for line, row in zip(lines, reference):
            assert f"class{int(row.argmax())} {row.max():.3f}" in line
    npy = str(tmp_path / "pixels.npy")
    np.save(npy, pixels)
    result = run_python(["-m", "serving", "client", "--model", "nothing", "--npy", npy,
                         "--url", server.url], timeout=60)
    assert result.returncode == 2 and "404" in result.stderr


def test_new_version_and_config_reload_without_restart(served):
    """A version dropped into the folder is served within a poll; ModelService
    reloads the config (policy change) and refuses folders outside the models root."""
    from tensorflow_serving.apis import model_management_pb2

    from serving import config as config_lib
    from serving.client import GrpcClient, RestClient, ServingClientError

    server, x, expected = served
    root = server.root
    assert server.versions("fresh") == [1]
    staging = os.path.join(root, "fresh", ".staging-2")
    shutil.copytree(os.path.join(root, "classify", "2"), staging)
    os.replace(staging, os.path.join(root, "fresh", "2"))   # appears whole, as export_model does it
    from test_serving_support import wait_for

    assert wait_for(lambda: server.versions("fresh") == [2], timeout=30), server.log()
    rest = RestClient(server.url)
    np.testing.assert_allclose(rest.predict("fresh", {"images": x})["outputs"], expected[2], atol=ATOL)
    rest.close()

    client = GrpcClient(server.target)
    try:
        with open(os.path.join(root, "models.config")) as f:
            original = config_lib.parse_config(f.read())
        pinned = type(original)()
        pinned.CopyFrom(original)
        fresh = [c for c in pinned.model_config_list.config if c.name == "fresh"][0]
        fresh.model_version_policy.specific.versions.append(1)
        request = model_management_pb2.ReloadConfigRequest(config=pinned)
        assert client._invoke(client.models.HandleReloadConfigRequest, request).status.error_code == 0
        assert server.versions("fresh") == [1]
        np.testing.assert_allclose(client.predict("fresh", {"images": x})["probabilities"], expected[1], atol=ATOL)

        outside = type(original)()
        outside.CopyFrom(original)
        outside.model_config_list.config[0].base_path = "/etc"
        with pytest.raises(ServingClientError) as error:
            client._invoke(client.models.HandleReloadConfigRequest,
                           model_management_pb2.ReloadConfigRequest(config=outside))
        assert error.value.status == "PERMISSION_DENIED"

        request = model_management_pb2.ReloadConfigRequest(config=original)
        assert client._invoke(client.models.HandleReloadConfigRequest, request).status.error_code == 0
        assert server.versions("fresh") == [2] and server.versions("classify") == [2]
    finally:
        client.close()


@pytest.mark.slow
def test_serve_command_in_its_own_process(served):
    """`python -m serving serve` as a user starts it (slow: a second TensorFlow start-up)."""
    from serving.client import GrpcClient, RestClient

    server, x, expected = served
    process = LocalServer(os.path.join(server.root, "models.config"), "classify")
    try:
        np.testing.assert_allclose(RestClient(process.url).predict("classify", {"images": x})["outputs"],
                                   expected[2], atol=ATOL)
        np.testing.assert_allclose(GrpcClient(process.target).predict("classify_v1", {"images": x})["probabilities"],
                                   expected[1], atol=ATOL)
    finally:
        process.stop()
    assert process.process.returncode == 0 or process.process.returncode == -15
