"""Real server processes for tests and chaos runs: ``chroma run`` and Toxiproxy.

Both bind 127.0.0.1 on a free port, are waited for with a bounded loop, and are
stopped with SIGTERM (then SIGKILL). ``ToxiproxyClient`` speaks Toxiproxy's
HTTP API directly, with a timeout on every request and every non-2xx answer
raised, which the toxiproxy-python client does not do; ``ToxiproxyServer.api()``
gives toxiproxy-python's client behind the same guarantees
(``memsys.testing.network.ToxiproxyAPI``), which the network fault matrix uses.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from memsys.domain.errors import StoreUnavailableError

TOXIPROXY_MODULE = "github.com/Shopify/toxiproxy/v2/cmd/server@v2.12.0"


class ServerUnavailable(RuntimeError):
    """A server could not be found or started; the message says why."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http(method: str, url: str, body: Any = None, timeout: float = 5.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        payload = response.read()
    return json.loads(payload) if payload.strip() else None


class _Process:
    def __init__(self, args: list[str], log_path: str, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=env, start_new_session=True)

    def wait_until(self, ready: Any, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerUnavailable(f"{what} exited with {self.process.returncode}; log: {self.tail()}")
            try:
                if ready():
                    return
            except (OSError, urllib.error.URLError, ValueError):
                pass
            time.sleep(0.1)
        self.stop()
        raise ServerUnavailable(f"{what} did not answer within {timeout:.0f}s; log: {self.tail()}")

    def tail(self, n: int = 2000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()


class ChromaServer:
    """``chroma run --path DIR --host 127.0.0.1 --port P``, from the chromadb package."""

    def __init__(self, path: str, port: int | None = None, timeout: float = 60.0) -> None:
        executable = shutil.which("chroma") or os.path.join(os.path.dirname(sys.executable), "chroma")
        if not os.path.exists(executable):
            raise ServerUnavailable("the `chroma` command is not installed (pip install 'memsys[chroma]')")
        self.host = "127.0.0.1"
        self.port = port or free_port()
        os.makedirs(path, exist_ok=True)
        env = dict(os.environ, ANONYMIZED_TELEMETRY="False")
        self._process = _Process([executable, "run", "--path", path, "--host", self.host, "--port", str(self.port)],
                                 os.path.join(path, "..", f"chroma-{self.port}.log"), env=env)
        self._process.wait_until(lambda: _http("GET", f"{self.url}/api/v2/heartbeat", timeout=1.0) is not None,
                                 "chroma run", timeout)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self) -> None:
        self._process.stop()


def toxiproxy_binary() -> str:
    """Where the Toxiproxy server binary is: $TOXIPROXY_SERVER, the PATH, or Go's bin folder."""
    candidates = [os.environ.get("TOXIPROXY_SERVER", ""), shutil.which("toxiproxy-server") or ""]
    gopath = os.environ.get("GOPATH") or os.path.expanduser("~/go")
    candidates.append(os.path.join(gopath, "bin", "server"))
    go = shutil.which("go")
    if go:
        try:
            out = subprocess.run([go, "env", "GOPATH"], capture_output=True, text=True, timeout=20).stdout.strip()
            if out:
                candidates.append(os.path.join(out.split(os.pathsep)[0], "bin", "server"))
        except (OSError, subprocess.SubprocessError):
            pass
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise ServerUnavailable(f"no Toxiproxy server binary; install it with `go install {TOXIPROXY_MODULE}` "
                            "(or bash chaos/install-toxiproxy.sh) or set TOXIPROXY_SERVER")


class ToxiproxyServer:
    """A Toxiproxy server on 127.0.0.1 and a client for its API."""

    def __init__(self, port: int | None = None, log_dir: str | None = None, timeout: float = 20.0) -> None:
        binary = toxiproxy_binary()
        self.host = "127.0.0.1"
        self.port = port or free_port()
        log_dir = log_dir or os.environ.get("TMPDIR", "/tmp")
        self._process = _Process([binary, "-host", self.host, "-port", str(self.port)],
                                 os.path.join(log_dir, f"toxiproxy-{self.port}.log"))
        self.client = ToxiproxyClient(f"http://{self.host}:{self.port}")
        self._process.wait_until(lambda: self.client.version() is not None, "toxiproxy", timeout)

    @property
    def address(self) -> str:
        """"HOST:PORT" of the API, as ``memsys.testing.network`` and chaos configs take it."""
        return f"{self.host}:{self.port}"

    def api(self, timeout: float = 5.0) -> Any:
        """The toxiproxy-python client for this server, with timeouts and typed errors
        (``memsys.testing.network.ToxiproxyAPI``)."""
        from memsys.testing.network import ToxiproxyAPI

        return ToxiproxyAPI(self.address, timeout=timeout)

    def stop(self) -> None:
        self._process.stop()


class ToxiproxyClient:
    """Toxiproxy's HTTP API: proxies, toxics, reset. Every call has a timeout; errors raise."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            return _http(method, self.url + path, body, timeout=self.timeout)
        except (urllib.error.URLError, OSError) as exc:
            raise StoreUnavailableError(f"toxiproxy {method} {path} failed: {exc}", store="toxiproxy") from exc

    def version(self) -> Any:
        with urllib.request.urlopen(self.url + "/version", timeout=self.timeout) as response:
            return response.read().decode()

    def create_proxy(self, name: str, upstream: str, listen: str | None = None) -> Proxy:
        listen = listen or f"127.0.0.1:{free_port()}"
        self._call("POST", "/proxies", {"name": name, "listen": listen, "upstream": upstream, "enabled": True})
        return Proxy(self, name, listen, upstream)

    def reset(self) -> None:
        """Enable every proxy and remove every toxic."""
        self._call("POST", "/reset")

    def delete_proxy(self, name: str) -> None:
        self._call("DELETE", f"/proxies/{name}")


class Proxy:
    def __init__(self, client: ToxiproxyClient, name: str, listen: str, upstream: str) -> None:
        self.client = client
        self.name = name
        self.listen = listen
        self.upstream = upstream
        self.host, port = listen.rsplit(":", 1)
        self.port = int(port)

    def add_toxic(self, type: str, *, stream: str = "downstream", toxicity: float = 1.0,
                  name: str | None = None, **attributes: Any) -> str:
        name = name or f"{type}_{stream}"
        self.client._call("POST", f"/proxies/{self.name}/toxics",
                          {"name": name, "type": type, "stream": stream, "toxicity": toxicity,
                           "attributes": attributes})
        return name

    def remove_toxic(self, name: str) -> None:
        self.client._call("DELETE", f"/proxies/{self.name}/toxics/{name}")

    def set_enabled(self, enabled: bool) -> None:
        self.client._call("POST", f"/proxies/{self.name}",
                          {"enabled": enabled, "listen": self.listen, "upstream": self.upstream})

    @contextmanager
    def down(self) -> Iterator[None]:
        self.set_enabled(False)
        try:
            yield
        finally:
            self.set_enabled(True)

    @contextmanager
    def toxic(self, type: str, **kwargs: Any) -> Iterator[str]:
        name = self.add_toxic(type, **kwargs)
        try:
            yield name
        finally:
            self.remove_toxic(name)


def docker_unavailable_reason() -> str | None:
    """None if a Docker engine answers a ping; otherwise why not (for a skip's reason)."""
    try:
        import docker
    except ImportError:
        return "the docker package is not installed (pip install 'memsys[test]')"
    try:
        client = docker.from_env(timeout=3)
        client.ping()
    except Exception as exc:  # the docker client raises several unrelated types for "no engine"
        return f"no Docker engine answers ({type(exc).__name__}: {str(exc)[:160]})"
    client.close()
    return None
