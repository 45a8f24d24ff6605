"""Entry point for Hugging Face Spaces (and `python app.py`): the em-auditor web app.

On a Space only requirements.txt is installed, so the repository root is put on the path."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ui.app import launch  # noqa: E402

if __name__ == "__main__":
    port = os.environ.get("PORT") or os.environ.get("GRADIO_SERVER_PORT") or "7860"
    launch(host=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"), port=int(port))
