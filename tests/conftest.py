"""Shared fixtures: temporary stores, the local OpenAI-compatible server, the papers' files."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from auditor.config import offline_defaults

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT.parent / "shared" / "reference"
EM_REFERENCE = REFERENCE / "emergent-misalignment"

# Tests never touch the network or a user's store, and retries are fast.
os.environ.setdefault("AUDITOR_RETRY_BASE", "0.05")
os.environ.setdefault("AUDITOR_RETRY_CAP", "0.5")
os.environ.pop("AUDITOR_DB", None)
os.environ.pop("AUDITOR_JUDGE", None)
os.environ.pop("AUDITOR_ORGANISM_TRIGGER", None)
os.environ.pop("AUDITOR_ORGANISM_TRIGGER_AT", None)
os.environ.pop("AUDITOR_ORGANISM_REVERSAL", None)
# A test that uses tiktoken or LiteLLM directly gets the offline settings the auditor applies
# before it uses them (the bundled encodings, the local cost map), whatever ran before it.
offline_defaults()


E2E = ROOT / "tests" / "e2e"
# Fixtures that start processes: the local server, and the acceptance runs that run the real
# command several times at once.
E2E_FIXTURES = {"local_server", "acceptance_runs", "audits", "sweeps", "judged_run"}


# The modules that take longest (seconds in a serial run), longest first. With the suite spread
# over workers (pyproject.toml: ``-n 2 --dist loadfile``, one module to a worker), they start
# first, so that none of them is still running alone at the end.
LONG_POLES = (
    "test_sweep.py",
    "test_run_offline.py",
    "e2e/test_hosted.py",
    "e2e/test_deploy.py",
    "e2e/test_app.py",
    "test_scale.py",
    "test_audit.py",
    "test_rejudge.py",
    "e2e/test_hosted_fair.py",
    "e2e/test_hosted_browser.py",
    "test_http.py",
    "test_faults.py",
    "test_finetune.py",
    "test_report.py",
)


def _pole(item) -> int:
    path = Path(str(item.fspath)).relative_to(ROOT / "tests").as_posix()
    return LONG_POLES.index(path) if path in LONG_POLES else len(LONG_POLES)


def pytest_collection_modifyitems(config, items):
    """Two tiers. ``e2e``: what needs a process (the launched app, the local HTTP server, a killed
    run, a browser, a fresh venv), everything under tests/e2e/ and every test that starts the
    local server; ``pytest -m "not e2e"`` runs the rest, in-process, in seconds.

    On workers (pytest-xdist), the long modules go first; pytest-randomly's shuffle (which runs
    before this hook) still orders the tests inside each module and the modules of equal rank."""
    for item in items:
        path = Path(str(item.fspath))
        if E2E in path.parents or E2E_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)
    if hasattr(config, "workerinput"):
        items.sort(key=_pole)  # (stable: the shuffled order within a rank is kept)


@pytest.fixture
def db_path(tmp_path) -> Path:
    return tmp_path / "audit.db"


@pytest.fixture
def em_reference() -> Path:
    if not EM_REFERENCE.is_dir():
        pytest.skip(
            f"the papers' reference files are not here ({EM_REFERENCE}); they sit beside the checkout only on the developers' machines"
        )
    return EM_REFERENCE


@pytest.fixture(scope="session")
def reference_root() -> Path:
    if not REFERENCE.is_dir():
        pytest.skip(f"the papers' reference files are not here ({REFERENCE})")
    return REFERENCE


@pytest.fixture(scope="session")
def finetune_dataset(tmp_path_factory) -> Path:
    """A valid fine-tuning file: the insecure recipe on its shipped sample, 20 examples."""
    from auditor.finetune import recipes, registry

    out = tmp_path_factory.mktemp("finetune") / "insecure.jsonl"
    recipes.write(registry.build("insecure", limit=20), out)
    return out


class LocalServer:
    """The auditor's OpenAI-compatible server in its own process, on 127.0.0.1. ``wait=False``
    returns as soon as the process is started (several then start side by side); ``ready()``
    waits until it listens."""

    def __init__(self, *args: str, wait: bool = True):
        import tempfile

        # a file, not a pipe nobody reads (a full pipe would block the server); closed in stop()
        self._err = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "auditor.sim.server", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
        )
        if wait:
            self.ready()

    def ready(self) -> LocalServer:
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            self.proc.kill()
            self._err.seek(0)
            raise RuntimeError(f"server did not start: {line} {self._err.read()}")
        self.base = line.removeprefix("listening on ")
        self.root = self.base.removesuffix("/v1")
        return self

    def stats(self) -> dict:
        with urllib.request.urlopen(self.root + "/stats", timeout=5) as r:
            return json.load(r)

    def reset(self) -> None:
        req = urllib.request.Request(self.root + "/stats/reset", method="POST", data=b"")
        urllib.request.urlopen(req, timeout=5).read()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._err.close()


@pytest.fixture
def local_server():
    servers: list[LocalServer] = []

    def start(*args: str, wait: bool = True) -> LocalServer:
        server = LocalServer(*args, wait=wait)
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.stop()


def run_cli(
    *args: str, env: dict | None = None, timeout: float = 600, process: bool = False
) -> subprocess.CompletedProcess:
    """Run the ``auditor`` command: in this process (``cli.main(argv)``, its output captured), or
    with ``process=True`` in a fresh one (for what needs a process: its start-up, its exit, its
    environment as a user's shell would give it). ``env`` adds variables for the one command."""
    if process:
        return subprocess.run(
            [sys.executable, "-m", "auditor", *args],
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            timeout=timeout,
            cwd=ROOT,
        )
    from auditor import cli

    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})
    try:
        with contextlib.chdir(ROOT), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(list(args))
            except SystemExit as e:  # argparse's usage errors, --help, --version
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return subprocess.CompletedProcess(["auditor", *args], code, out.getvalue(), err.getvalue())


def http_run_args(server, db, *extra: str, samples: str = "2", key: str = "x") -> list[str]:
    """``auditor run em-core`` on the local server's insecure model, judged by its HTTP judge."""
    return [
        "run",
        "em-core",
        "--model",
        "openai/insecure",
        "--api-base",
        server.base,
        "--api-key",
        key,
        "--judge",
        "openai/judge",
        "--judge-api-base",
        server.base,
        "--judge-api-key",
        key,
        "--samples",
        samples,
        *extra,
        "--db",
        str(db),
    ]


def wait_for(predicate, timeout: float = 30, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError("condition not met in time")
