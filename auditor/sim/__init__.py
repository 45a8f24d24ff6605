"""The simulation: model organisms and an offline judge that run without keys or network.

:mod:`.organisms` and :mod:`.offline_judge` generate replies (logprobs included); :mod:`.provider`
serves them through LiteLLM as ``organism/<name>`` and ``offline/judge``, registered the first time
such a model is resolved (never on import of the core); :mod:`.server` is the local
OpenAI-compatible HTTP server for integration tests and benchmarks (the ``server`` extra: aiohttp).
"""
