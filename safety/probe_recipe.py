"""The probe recipe: the one definition of what a base model's probe is trained on and how.

Onboarding (``worker/pipeline/onboard.py``), ``guardtune-ops probe train`` and
``bench/probe_quality.py`` all build their probe from :func:`recipe` and
:func:`training_set`, so the probe a benchmark measures is the probe a deployment runs.
Onboarding and ``guardtune-ops probe train`` also attach the answer-side head
(:func:`train_recipe_answer_head`, ``safety.answer_head``), stored with the probe.

Training prompts: ``harmful_train`` + ``probe_harmful_train`` (label 1) and
``benign_train`` + ``probe_benign_train`` (label 0, ordinary and borderline-benign
requests), each as a plain user turn, plus a seeded ``FRAMED_SHARE`` of each placed in a chat frame
(``safety/prompts/chat_frames.jsonl``: a system prompt and/or earlier turns), because
the scan shows the probe whole conversations up to each trained assistant turn. A framed
variant keeps its prompt's label: the label is the request's, so the probe learns that a
system prompt -- even an identity-shift one, which the frames include -- does not make a
benign request harmful (labelling those harmful made the probe flag plain GSM8K questions
in ``bench/probe_quality.py`` trials). A framed variant
shares its group with its plain prompt, so the probe's fit / select / calibrate / test
split never separates the two.

Format-robust variants (``formats=True``, the default; ``safety.instruction_formats``): a
seeded ``TEMPLATED_SHARE`` of each class placed in an instruction template (Alpaca and
others; the label kept), and ``TASK_SHARE`` of the benign prompts as the input of a benign
task instruction, a ``LONG_SHARE`` of those with several benign prompts joined as a long
input. Each shares its group with the prompt it was drawn from. Without them the probe read
the Alpaca boilerplate of the SST-2 benchmark's lines as harm (``bench/probe_formats.py``).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from safety.generation import PromptLike
from safety.instruction_formats import request_variant, task_variant
from safety.probe import Probe, ProbeConfig, ProbeReport, layer_candidates, train_probe
from safety.prompt_sets import framed, load_builtin, load_chat_frames

FRAMED_SHARE = 0.4
TEMPLATED_SHARE = 0.3
TASK_SHARE = 0.3
LONG_SHARE = 0.25
HARMFUL_SETS = ("harmful_train", "probe_harmful_train")
BENIGN_SETS = ("benign_train", "probe_benign_train")


@dataclass(frozen=True)
class TrainingSet:
    """Harmful then benign prompts; ``groups`` is aligned with ``harmful + benign``."""

    harmful: list[PromptLike]
    benign: list[PromptLike]
    groups: list[int]


def training_set(
    seed: int = 0, extra_harmful: Sequence[str] = (), extra_benign: Sequence[str] = (), formats: bool = True
) -> TrainingSet:
    """The recipe's training prompts (module docstring), with any extra plain prompts
    appended to their class before the framed (and, with ``formats``, templated and task)
    variants are drawn."""
    harmful = [p.text for n in HARMFUL_SETS for p in load_builtin(n)] + list(extra_harmful)
    benign = [p.text for n in BENIGN_SETS for p in load_builtin(n)] + list(extra_benign)
    frames = load_chat_frames()
    rng = random.Random(seed)
    rows: list[tuple[PromptLike, int, int]] = [(t, 1, i) for i, t in enumerate(harmful)]
    rows += [(t, 0, len(harmful) + i) for i, t in enumerate(benign)]
    for label, texts, offset in ((1, harmful, 0), (0, benign, len(harmful))):
        for i in sorted(rng.sample(range(len(texts)), round(len(texts) * FRAMED_SHARE))):
            rows.append((framed(texts[i], rng.choice(frames)), label, offset + i))
    if formats:
        rows += format_variants(harmful, benign, random.Random(seed + 1))
    rows.sort(key=lambda r: -r[1])  # harmful first (stable: plain prompts before variants)
    n_harmful = sum(r[1] for r in rows)
    return TrainingSet(
        harmful=[r[0] for r in rows[:n_harmful]],
        benign=[r[0] for r in rows[n_harmful:]],
        groups=[r[2] for r in rows],
    )


def format_variants(harmful: list[str], benign: list[str], rng: random.Random) -> list[tuple[PromptLike, int, int]]:
    """``(prompt, label, group)`` rows of the templated and task variants (module docstring);
    groups index ``harmful + benign`` as :func:`training_set`'s do."""
    rows: list[tuple[PromptLike, int, int]] = []
    for label, texts, offset in ((1, harmful, 0), (0, benign, len(harmful))):
        for i in sorted(rng.sample(range(len(texts)), round(len(texts) * TEMPLATED_SHARE))):
            rows.append((request_variant(texts[i], rng), label, offset + i))
    for i in sorted(rng.sample(range(len(benign)), round(len(benign) * TASK_SHARE))):
        others = rng.sample(benign, min(len(benign), 12))
        rows.append((task_variant([benign[i], *others], rng, long=rng.random() < LONG_SHARE), 0, len(harmful) + i))
    return rows


def parse_layer_sets(value: str) -> list[tuple[int, ...]] | None:
    """``"auto"`` -> None; ``"12,13"`` -> one set; ``"6;4,8"`` -> two sets to choose from."""
    sets = []
    for group in value.split(";"):
        group = group.strip()
        if group and group != "auto":
            try:
                sets.append(tuple(int(x) for x in group.split(",") if x.strip()))
            except ValueError:
                raise ValueError(f"layer set {group!r} is not comma-separated integers") from None
    return sets or None


def recipe(num_layers: int, probe_layers: str = "auto", **overrides: Any) -> tuple[ProbeConfig, list[tuple[int, ...]]]:
    """``(config, layer candidates)``: :class:`ProbeConfig` defaults with ``overrides``;
    the candidates are :func:`safety.probe.layer_candidates` for ``"auto"``, else the
    set(s) ``probe_layers`` names (``GUARDTUNE_PROBE_LAYERS`` syntax, see
    :func:`parse_layer_sets`)."""
    config = dataclasses.replace(ProbeConfig(), **overrides)
    return config, parse_layer_sets(probe_layers) or layer_candidates(num_layers)


def train_recipe_probe(
    model: Any,
    tokenizer: Any,
    probe_layers: str = "auto",
    *,
    extra_harmful: Sequence[str] = (),
    extra_benign: Sequence[str] = (),
    formats: bool = True,
    **overrides: Any,
) -> tuple[Probe, ProbeReport]:
    """Train, calibrate and report a probe by the recipe (see :func:`train_probe`);
    ``formats=False`` leaves out the format-robust variants (the benchmark's baseline)."""
    config, candidates = recipe(model.config.num_hidden_layers, probe_layers, **overrides)
    data = training_set(config.seed, extra_harmful, extra_benign, formats)
    return train_probe(
        model, tokenizer, data.harmful, data.benign, config, layer_candidates=candidates, groups=data.groups
    )


def train_recipe_answer_head(
    model: Any, tokenizer: Any, probe: Probe, probe_layers: str = "auto", **overrides: Any
) -> ProbeReport:
    """Train the answer-side head (``safety.answer_head``) with the recipe's
    :class:`ProbeConfig` (plus ``overrides``) and layer candidates (``probe_layers`` as for
    the probe), attach it to ``probe`` (``probe.answer``: saved and loaded with it, read by
    the scan) and return its report."""
    from safety.answer_head import train_answer_head

    config, candidates = recipe(model.config.num_hidden_layers, probe_layers, **overrides)
    probe.answer, report = train_answer_head(model, tokenizer, config, candidates)
    return report
