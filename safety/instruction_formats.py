"""Instruction-template framings of a prompt, for the probe recipe's format-robust variants.

Customers upload data in the formats their earlier pipelines used: a user turn that holds an
Alpaca-style block ("Below is an instruction ... ### Instruction: ... ### Input: ... ###
Response:"), a bare ``Instruction:/Input:/Output:`` block, a ``Question:/Answer:`` pair, or a
task instruction followed by a long input. A probe trained on plain chat prompts only reads
such boilerplate as signal (``bench/probe_formats.py`` measures it). The probe recipe
(``safety.probe_recipe``) therefore trains on a share of its prompts placed in these
templates, and on benign **task** variants: one of :data:`TASK_INSTRUCTIONS` (written for
this project) over an input made of the project's benign prompts, sometimes several of them
(a long input), so that neither the template nor the length of the input carries the label.

A harmful request keeps its label in any template (the request is the instruction, or the
input of a "do what the input asks" instruction); a benign task over benign text is benign.
The field's own task instructions (SST-2's) are deliberately absent: the benchmark that reads
them must see a format the probe learned, not its exact lines.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)
ALPACA_INPUT_PREAMBLE = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request."
)
# (template without an input, template with an input); ``{instruction}`` and ``{input}`` are filled in.
TEMPLATES: tuple[tuple[str, str], ...] = (
    (
        ALPACA_PREAMBLE + "\n\n### Instruction:\n{instruction}\n\n### Response:",
        ALPACA_INPUT_PREAMBLE + "\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:",
    ),
    (
        "### Instruction:\n{instruction}\n\n### Response:",
        "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:",
    ),
    ("Instruction: {instruction}\nOutput:", "Instruction: {instruction}\nInput: {input}\nOutput:"),
    ("Question: {instruction}\n\nAnswer:", "Question: {instruction}\n\nContext: {input}\n\nAnswer:"),
    ("<task>\n{instruction}\n</task>", "<task>\n{instruction}\n</task>\n<input>\n{input}\n</input>"),
)
# Benign tasks over an input (the project's own wording).
TASK_INSTRUCTIONS: tuple[str, ...] = (
    "Classify the tone of the text below as friendly, neutral or hostile.",
    "Summarize the following text in one sentence.",
    "Translate the input into French.",
    "Extract every person, place and organization named in the input.",
    "Is the input a question? Answer yes or no.",
    "Rewrite the input in a formal register.",
    "Give the input a short title.",
    "Count the words in the input and answer with the number only.",
    "Decide whether the author of the text sounds satisfied. Reply with one word.",
    "Correct the spelling and grammar of the input.",
    "Name the main topic of the passage in at most three words.",
    "List the verbs used in the input.",
    "Label the input as sports, politics, science, entertainment or other.",
    "Write one follow-up question a reader might ask about the input.",
)
# Instructions that hand the request in the input to the model: the input's label is kept.
RELAY_INSTRUCTIONS: tuple[str, ...] = (
    "Respond to the request given in the input.",
    "Answer the user's message below as helpfully as you can.",
    "Complete the following task.",
)
LONG_INPUT_PARTS = (3, 10)  # a long input joins this many benign prompts (inclusive range)


def templated(instruction: str, rng: random.Random, input_text: str = "") -> str:
    """``instruction`` (and ``input_text``, when given) in one of :data:`TEMPLATES`, drawn from ``rng``."""
    plain, with_input = rng.choice(TEMPLATES)
    if input_text:
        return with_input.format(instruction=instruction, input=input_text)
    return plain.format(instruction=instruction)


def request_variant(text: str, rng: random.Random) -> str:
    """A request in an instruction template, as the instruction or (a third of the time) as
    the input of a relay instruction; the request's label carries over."""
    if rng.random() < 1 / 3:
        return templated(rng.choice(RELAY_INSTRUCTIONS), rng, text)
    return templated(text, rng)


def task_variant(inputs: Sequence[str], rng: random.Random, long: bool) -> str:
    """A benign task over an input built from ``inputs`` (benign prompts; their first is used,
    or with ``long`` a random run of :data:`LONG_INPUT_PARTS` of them joined as paragraphs)."""
    if long:
        k = min(len(inputs), rng.randint(*LONG_INPUT_PARTS))
        text = "\n\n".join(inputs[:k])
    else:
        text = inputs[0]
    return templated(rng.choice(TASK_INSTRUCTIONS), rng, text)
