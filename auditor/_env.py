"""Offline-safe process settings, applied before LiteLLM, tiktoken or Gradio are imported.

This machine (and CI, and many users' sandboxes) has no internet. LiteLLM would otherwise try to
download its cost map, tiktoken its encodings, and Gradio would send analytics.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path


def configure() -> None:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_LOG", "ERROR")
    # LiteLLM's typed dicts trigger a pydantic warning on first use; it is noise for our users.
    warnings.filterwarnings("ignore", message=r"Items? .* using the `ReadOnly` qualifier")
    if "TIKTOKEN_CACHE_DIR" not in os.environ:
        spec = importlib.util.find_spec("litellm")
        if spec and spec.origin:
            tokenizers = Path(spec.origin).parent / "litellm_core_utils" / "tokenizers"
            if tokenizers.is_dir():
                os.environ["TIKTOKEN_CACHE_DIR"] = str(tokenizers)


configure()
