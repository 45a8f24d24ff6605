"""A local OpenAI-compatible HTTP server for tests, benchmarks and trying the HTTP path without
keys: chat completions (:mod:`.app`), files and fine-tuning jobs (:mod:`.finetuning`), the Batch
API (:mod:`.batch`). Run it with ``python -m auditor.sim.server``."""
