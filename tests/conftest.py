import functools
import http.server
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

#: torch.compile on a CPU builds C++ kernels: without a compiler it cannot run at all.
needs_cxx = pytest.mark.skipif(
    not any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "c++", "clang++")),
    reason="torch.compile on a CPU needs a C++ compiler (apt install g++)",
)

torch.set_num_threads(2)


@pytest.fixture(scope="session", autouse=True)
def _private_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """resnetkit's caches (hub weights, zoo statistics) in a temporary folder, not ~/.cache."""
    import os

    before = os.environ.get("RESNETKIT_HOME")
    os.environ["RESNETKIT_HOME"] = str(tmp_path_factory.mktemp("resnetkit-home"))
    yield
    if before is None:
        os.environ.pop("RESNETKIT_HOME", None)
    else:
        os.environ["RESNETKIT_HOME"] = before


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread():  # noqa: ANN201
    """Run a test on one torch thread (small models: less overhead, steadier timings)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """Serve tmp_path/serve on 127.0.0.1 (random free port); yield (folder, base URL)."""
    serve = tmp_path / "serve"
    serve.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(serve))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield serve, f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def dead_url() -> str:
    """A loopback URL on which nothing listens (a port that was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"
