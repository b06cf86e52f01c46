"""The local model server: TF Serving's REST and gRPC APIs over models.config.

    python -m serving serve --config saved_models/models.config

Binds 127.0.0.1 by default (pass --host 0.0.0.0 deliberately to expose it).
REST runs on uvicorn (Starlette), gRPC on grpcio's server; both share one
ModelManager, whose poll thread picks up new versions and config edits, and one
Metrics (Prometheus text at /monitoring/prometheus/metrics on the REST port).

SIGTERM or SIGINT drains: both APIs stop taking new connections and calls at
once, the requests in flight are answered (for at most `drain_seconds`), then
the process exits with status 0.
"""

import asyncio
import contextlib
import signal
import sys
import threading
import time

from serving import config as config_lib
from serving.manager import ModelManager


def build(config_path, *, container_root=config_lib.CONTAINER_ROOT, log=print, batching_parameters=None):
    """A ModelManager with the config's models loaded (before any port opens); `batching_parameters`
    (serving.batching.BatchingParameters) turns server-side batching on."""
    specs = config_lib.read_config(config_path, container_root=container_root)
    manager = ModelManager(specs, config_path=config_path, container_root=container_root, log=log,
                           batching_parameters=batching_parameters)
    manager.refresh()
    return manager


def _uvicorn_server_class():
    import uvicorn

    class DrainingServer(uvicorn.Server):
        """uvicorn's server, draining gRPC alongside REST on shutdown, and exiting 0 after a
        signal-initiated drain (uvicorn re-raises the signal, which would end the process
        with -15 before the gRPC drain)."""

        before_shutdown = None   # called first (stop gRPC taking calls, stop polling)
        after_shutdown = None    # called in a thread once REST is drained (wait for gRPC)

        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            handled = (signal.SIGINT, signal.SIGTERM)
            original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

        async def shutdown(self, sockets=None):
            if self.before_shutdown is not None:
                self.before_shutdown()
            await super().shutdown(sockets=sockets)
            if self.after_shutdown is not None:
                await asyncio.get_running_loop().run_in_executor(None, self.after_shutdown)

    return DrainingServer


def create(config_path, *, host="127.0.0.1", rest_port=8501, grpc_port=8500, poll_seconds=1.0,
           config_poll_seconds=None, container_root=config_lib.CONTAINER_ROOT, max_body_bytes=8 << 20,
           max_concurrency=8, max_connections=64, max_batch=256, header_timeout=10.0, body_timeout=30.0,
           keep_alive=10, drain_seconds=30.0, batching_parameters=None, log=None):
    """The manager (models loaded, polling), the started gRPC server and the
    not-yet-running uvicorn server (its shutdown drains both)."""
    import uvicorn

    from serving import grpc_service, http_guard, rest
    from serving.metrics import Metrics

    log = log or (lambda message: print(time.strftime("%H:%M:%S ") + message, file=sys.stderr, flush=True))
    manager = build(config_path, container_root=container_root, log=log, batching_parameters=batching_parameters)
    if batching_parameters is not None:
        log(f"server-side batching: {batching_parameters}")
    metrics = Metrics(known_model=manager.has_model)
    metrics.gauge("local_serving_model_versions_loaded", "Versions serving now, by model (local server only).",
                  ("model_name",), lambda: {(name,): len(v) for name, v in manager.loaded_versions().items()})
    manager.start_polling(poll_seconds, config_poll_seconds)
    grpc_server = None
    if grpc_port is not None and grpc_port >= 0:
        grpc_server, bound = grpc_service.create_server(
            manager, host, grpc_port, max_workers=max_concurrency, max_concurrent_rpcs=max_connections,
            max_message_bytes=max_body_bytes, max_batch=max_batch, metrics=metrics)
        grpc_server.start()
        log(f"gRPC API on {host}:{bound}")
    app = rest.create_app(manager, max_body_bytes=max_body_bytes, max_concurrency=max_concurrency,
                          max_batch=max_batch, metrics=metrics)
    protocol = http_guard.guarded_protocol(max_connections=max_connections, header_timeout=header_timeout,
                                           body_timeout=body_timeout, write_timeout=body_timeout,
                                           metrics=metrics)
    metrics.gauge("local_serving_rest_connections", "Open REST connections (local server only).", (),
                  lambda: {(): len(rest_server.server_state.connections)})
    rest_server = _uvicorn_server_class()(uvicorn.Config(
        app, host=host, port=rest_port, log_level="warning", http=protocol, limit_concurrency=None,
        timeout_keep_alive=keep_alive, timeout_graceful_shutdown=max(1, int(round(drain_seconds))),
        access_log=False, lifespan="off"))
    grpc_drained = []

    def before_shutdown():
        log(f"draining: no new connections; answering the requests in flight (at most {drain_seconds:g} s)")
        manager.stop()
        if grpc_server is not None:
            grpc_drained.append(grpc_server.stop(grace=drain_seconds))

    def after_shutdown():
        for event in grpc_drained:
            event.wait(drain_seconds + 1)
        log("drained; stopped")

    rest_server.before_shutdown, rest_server.after_shutdown = before_shutdown, after_shutdown
    rest_server.metrics = metrics
    log(f"REST API on http://{host}:{rest_port}/v1/models/<name>; models: {', '.join(manager.model_names())}")
    return manager, grpc_server, rest_server


def serve(config_path, **kwargs):
    """Run both APIs until SIGTERM/SIGINT, then drain them and return."""
    manager, grpc_server, rest_server = create(config_path, **kwargs)
    try:
        rest_server.run()
    finally:
        manager.stop()
        if grpc_server is not None:
            grpc_server.stop(grace=0).wait(5)   # a no-op after a drain


class ThreadedServer:
    """Both APIs in background threads of this process (tests, notebooks):
    `with ThreadedServer(config, rest_port=..., grpc_port=...) as s: ...`."""

    def __init__(self, config_path, **kwargs):
        self.manager, self.grpc_server, self.rest_server = create(config_path, **kwargs)
        self.metrics = self.rest_server.metrics
        self.thread = threading.Thread(target=self.rest_server.run, name="rest-server", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.rest_server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise OSError("the REST server did not start (port taken?)")
            time.sleep(0.05)

    def alive(self):
        return self.thread.is_alive()

    def stop(self):
        """Drain and stop, as on SIGTERM."""
        self.rest_server.should_exit = True
        self.thread.join(timeout=60)
        self.manager.stop()
        if self.grpc_server is not None:
            self.grpc_server.stop(grace=0).wait(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
