"""The Gradio app (arrives with the app issue); it only wires widgets to auditor library calls."""
