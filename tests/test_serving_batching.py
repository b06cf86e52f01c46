"""Server-side batching (serving.batching, `serve --enable-batching`): TF Serving's parameters file, batches
that close when full or timed out, padding to the allowed sizes, the queue limit, and a real server whose
batched answers are the model's."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from test_serving_support import InProcessServer, export_version, images, tiny_classifier

from serving.batching import Batcher, BatchingParameters, parse_parameters
from serving.errors import ServingError


def test_parameters_file_in_tf_servings_text_format():
    text = """
    max_batch_size { value: 32 }
    batch_timeout_micros { value: 5000 }   # 5 ms
    num_batch_threads { value: 4 }
    max_enqueued_batches { value: 100 }
    allowed_batch_sizes: 8
    allowed_batch_sizes: 32
    """
    assert parse_parameters(text) == BatchingParameters(32, 5000, 4, 100, (8, 32))
    assert parse_parameters("") == BatchingParameters()
    with pytest.raises(ValueError, match="line 2: cannot read 'max_batch_size: 32'"):
        parse_parameters("num_batch_threads { value: 1 }\nmax_batch_size: 32")
    with pytest.raises(ValueError, match="end at max_batch_size"):
        parse_parameters("max_batch_size { value: 32 }\nallowed_batch_sizes: 8")
    with pytest.raises(ValueError, match="num_batch_threads must be at least 1"):
        parse_parameters("num_batch_threads { value: 0 }")


def doubling_model(calls):
    """A model whose answer for a row depends on that row only; it records the batch sizes it was called with."""
    def call(inputs):
        calls.append(len(inputs["x"]))
        time.sleep(0.01)
        return {"y": inputs["x"] * 2.0, "row_sum": inputs["x"].sum(axis=1)}
    return call


def submit_all(batcher, call, requests, key="m"):
    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        return list(pool.map(lambda x: batcher.run(key, call, {"x": x}), requests))


def test_concurrent_requests_share_batches_and_get_their_own_rows_back():
    calls = []
    batcher = Batcher(BatchingParameters(max_batch_size=8, batch_timeout_micros=200_000, num_batch_threads=1))
    requests = [np.full((1 + i % 3, 4), float(i), np.float32) for i in range(12)]  # 1-3 rows each, 24 in all
    answers = submit_all(batcher, doubling_model(calls), requests)
    for x, answer in zip(requests, answers):
        np.testing.assert_array_equal(answer["y"], x * 2.0)  # each request gets exactly its rows
        np.testing.assert_array_equal(answer["row_sum"], x.sum(axis=1))
    assert sum(calls) == 24 and max(calls) <= 8 and len(calls) <= 6  # 12 requests in ≤ 6 model calls
    batcher.stop()


def test_batches_are_padded_to_the_allowed_sizes_and_a_lone_request_waits_for_the_timeout():
    calls = []
    batcher = Batcher(BatchingParameters(max_batch_size=8, batch_timeout_micros=50_000, num_batch_threads=1,
                                         allowed_batch_sizes=(4, 8)))
    start = time.monotonic()
    (answer,) = submit_all(batcher, doubling_model(calls), [np.ones((3, 2), np.float32)])
    assert time.monotonic() - start >= 0.05  # the batch stayed open for the timeout
    assert calls == [4] and answer["y"].shape == (3, 2)  # padded to 4 for the model, 3 rows back
    answers = submit_all(batcher, doubling_model(calls), [np.ones((1, 2), np.float32)] * 6)
    assert all(size in (4, 8) for size in calls) and all(a["y"].shape == (1, 2) for a in answers)
    batcher.stop()


def test_limits_and_errors_are_tf_servings():
    batcher = Batcher(BatchingParameters(max_batch_size=4, batch_timeout_micros=300_000, num_batch_threads=1,
                                         max_enqueued_batches=1))
    with pytest.raises(ServingError, match="larger than maximum input batch size 4"):
        batcher.run("m", doubling_model([]), {"x": np.ones((5, 2), np.float32)})
    waiting = threading.Thread(target=batcher.run, args=("m", doubling_model([]), {"x": np.ones((3, 2))}))
    waiting.start()
    time.sleep(0.05)
    with pytest.raises(ServingError) as full:  # 3 rows wait, 2 more would exceed one batch of 4
        batcher.run("m", doubling_model([]), {"x": np.ones((2, 2))})
    assert full.value.code == "UNAVAILABLE" and "queue" in full.value.message
    waiting.join()

    def broken(inputs):
        raise ServingError("INVALID_ARGUMENT", "the model refused")
    with pytest.raises(ServingError, match="the model refused"):  # each request of the batch gets the error
        submit_all(batcher, broken, [np.ones((1, 2))] * 2)
    batcher.stop()


def test_a_batching_server_answers_as_the_model_does(tmp_path):
    """16 concurrent gRPC requests to a real server with --enable-batching: fewer model calls than requests,
    and each answer is the model's for its rows. A row computed inside a batch of other sizes goes through
    other GEMM blockings, so the float32 probabilities may differ from the model run on that row alone by
    rounding (measured ≤ 2e-5); 1e-4 allows that and catches any mixed-up row (they differ by ~0.1)."""
    from serving import config as config_lib
    from serving.client import GrpcClient

    export_version(tiny_classifier(seed=1), str(tmp_path / "classify"), 1)
    config_path = config_lib.write_config(str(tmp_path / "models.config"), config_lib.build_config(["classify"]))
    parameters = BatchingParameters(max_batch_size=16, batch_timeout_micros=100_000, num_batch_threads=1)
    server = InProcessServer(config_path, batching_parameters=parameters, max_concurrency=16)
    try:
        server.wait_ready(["classify"])
        x = images(16, seed=3)
        client = GrpcClient(server.target, timeout=30)
        alone = np.concatenate([client.predict("classify", {"images": x[i:i + 1]})["probabilities"]
                                for i in range(2)])  # warms up; sequential requests: batches of one
        with ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(pool.map(lambda i: client.predict("classify", {"images": x[i:i + 1]})["probabilities"],
                                    range(16)))
        client.close()
        batcher = server.server.manager.batcher
        model = tiny_classifier(seed=1)
        expected = np.concatenate([model.predict(x[i:i + 1], verbose=0) for i in range(16)])
        np.testing.assert_allclose(np.concatenate(answers), expected, atol=1e-4, rtol=0)
        np.testing.assert_allclose(alone, expected[:2], atol=1e-4, rtol=0)
        assert np.array_equal(np.concatenate(answers).argmax(1), expected.argmax(1))
        assert batcher.batches_run < 2 + 16  # the 16 concurrent requests shared batches
    finally:
        server.stop()


def test_serve_refuses_a_bad_batching_file_in_one_line(tmp_path):
    from conftest import run_python

    config = tmp_path / "models.config"
    config.write_text("model_config_list {}\n")
    bad = tmp_path / "batching.txt"
    bad.write_text("max_batch_size: 32\n")
    for flags, words in ((["--batching-parameters-file", str(bad)], "needs --enable-batching"),
                         (["--enable_batching", "--batching_parameters_file", str(bad)], "line 1: cannot read"),
                         (["--enable-batching", "--batching-parameters-file", str(tmp_path / "none")], "cannot read")):
        done = run_python(["-m", "serving", "serve", "--config", str(config), *flags], timeout=60)
        assert done.returncode == 2 and words in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
