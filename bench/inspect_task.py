"""The generation workload for Inspect AI (bench only): em-core's questions, repeated to N samples,
one generate() each, no scorer. Run by bench/run_all.py in its own virtual environment."""

import os

import yaml
from inspect_ai import Task, task
from inspect_ai.dataset import Sample
from inspect_ai.model import GenerateConfig
from inspect_ai.solver import generate

HERE = os.path.dirname(os.path.abspath(__file__))


@task
def em_generation(n: int = 800):
    with open(os.path.join(HERE, "..", "probesets", "em-core.yaml"), encoding="utf-8") as f:
        spec = yaml.safe_load(f)
    questions = [p for e in spec["entries"] for p in (e.get("paraphrases") or [])]
    samples = [Sample(input=questions[i % len(questions)], id=i) for i in range(n)]
    return Task(
        dataset=samples,
        solver=generate(),
        config=GenerateConfig(temperature=1.0, max_tokens=600),
    )
