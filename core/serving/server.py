"""The local model server: TF Serving's REST and gRPC APIs over models.config.

    python -m core.serving serve --config saved_models/models.config

Binds 127.0.0.1 by default (pass --host 0.0.0.0 deliberately to expose it).
REST runs on uvicorn (Starlette), gRPC on grpcio's server; both share one
ModelManager, whose poll thread picks up new versions and config edits.
"""

import sys
import time

from core.serving import config as config_lib
from core.serving.manager import ModelManager


def build(config_path, *, container_root=config_lib.CONTAINER_ROOT, log=print):
    """A ModelManager with the config's models loaded (before any port opens)."""
    specs = config_lib.read_config(config_path, container_root=container_root)
    manager = ModelManager(specs, config_path=config_path, container_root=container_root, log=log)
    manager.refresh()
    return manager


def create(config_path, *, host="127.0.0.1", rest_port=8501, grpc_port=8500, poll_seconds=1.0,
           container_root=config_lib.CONTAINER_ROOT, max_body_bytes=8 << 20, max_concurrency=8,
           max_connections=64, max_batch=256, log=None):
    """The manager (models loaded, polling), the started gRPC server and the
    not-yet-running uvicorn server."""
    import uvicorn

    from core.serving import grpc_service, rest

    log = log or (lambda message: print(time.strftime("%H:%M:%S ") + message, file=sys.stderr, flush=True))
    manager = build(config_path, container_root=container_root, log=log)
    manager.start_polling(poll_seconds)
    grpc_server = None
    if grpc_port is not None and grpc_port >= 0:
        grpc_server, bound = grpc_service.create_server(
            manager, host, grpc_port, max_workers=max_concurrency, max_concurrent_rpcs=max_connections,
            max_message_bytes=max_body_bytes, max_batch=max_batch)
        grpc_server.start()
        log(f"gRPC API on {host}:{bound}")
    app = rest.create_app(manager, max_body_bytes=max_body_bytes, max_concurrency=max_concurrency,
                          max_batch=max_batch)
    rest_server = uvicorn.Server(uvicorn.Config(app, host=host, port=rest_port, log_level="warning",
                                                limit_concurrency=max_connections, timeout_keep_alive=10,
                                                access_log=False))
    log(f"REST API on http://{host}:{rest_port}/v1/models/<name>; models: {', '.join(manager.model_names())}")
    return manager, grpc_server, rest_server


def serve(config_path, **kwargs):
    """Run both APIs until interrupted (SIGINT/SIGTERM)."""
    manager, grpc_server, rest_server = create(config_path, **kwargs)
    try:
        rest_server.run()
    finally:
        manager.stop()
        if grpc_server is not None:
            grpc_server.stop(grace=1)


class ThreadedServer:
    """Both APIs in background threads of this process (tests, notebooks):
    `with ThreadedServer(config, rest_port=..., grpc_port=...) as s: ...`."""

    def __init__(self, config_path, **kwargs):
        import threading

        self.manager, self.grpc_server, self.rest_server = create(config_path, **kwargs)
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
        self.rest_server.should_exit = True
        self.thread.join(timeout=15)
        self.manager.stop()
        if self.grpc_server is not None:
            self.grpc_server.stop(grace=1)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
