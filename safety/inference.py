"""Chat inference for serving: base models loaded once, LoRA adapters in an LRU, and
concurrent requests batched.

Contract:

* :meth:`Engine.submit` takes a :class:`ChatRequest` and returns at once; the request's
  ``events`` queue then receives ``("delta", Delta)`` items as tokens are generated and one
  final ``("done", Completion)`` (or ``("error", message)``, or ``("invalid", (param,
  message))`` for a request the model cannot serve: a ``logit_bias`` token outside its
  vocabulary).
* A worker thread takes the first waiting request, collects more for up to
  ``batch_wait_s`` (at most ``max_batch``), groups them by (base model, adapter, sampling
  settings) and runs each group as one left-padded ``generate`` call, a request with
  ``n`` choices as ``n`` rows. Each row stops on its own EOS, its own stop sequences
  (:mod:`safety.decoding`; ``finish_reason`` ``stop``) or its own ``max_tokens``;
  penalties, logit bias and log-probabilities are per row too.
* Decoding matches :func:`safety.generation.generate` (the evaluation's): the prompt is the
  chat template up to the assistant turn, left-truncated to ``max_prompt_len``; the answer
  is the generated tokens decoded with special tokens skipped, stripped and cut before the
  first stop sequence. The streamed deltas of a choice concatenate to exactly that text. ``temperature == 0`` is greedy decoding.
* Adapters: the first adapter of a base wraps it in a ``PeftModel``; base-model requests
  then run with the adapter disabled (the LoRA layers return the base layer's output).
  At most ``max_adapters`` adapters per base stay loaded (least recently used evicted).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from core.jobs import config as defaults
from safety.decoding import Detokenizer, RowControls, RowSettings
from safety.generation import MAX_PROMPT_LEN, encode_prompts, model_device, pad_token_id
from safety.reference import reference_forward

LoadBase = Callable[[str], tuple[Any, Any]]


@dataclass
class ChatRequest:
    """One chat completion to generate; read ``events`` for the result."""

    messages: list[dict[str, str]]
    base: str  # the base model's source (a built-in name, a local path or a hub id)
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    n: int = 1  # choices, each a row of the batch
    stop: list[str] = field(default_factory=list)
    decoding: RowSettings = field(default_factory=RowSettings)
    adapter: str | None = None  # the adapter's name (the ft: model id)
    adapter_dir: Path | None = None  # its PEFT files on local disk
    events: queue.Queue = field(default_factory=queue.Queue)

    @property
    def group(self) -> tuple:
        greedy = self.temperature <= 0
        return (self.base, self.adapter, greedy, None if greedy else (self.temperature, self.top_p, self.seed))


@dataclass(frozen=True)
class Delta:
    """New text of choice ``index`` and, with ``logprobs``, the entries of its new tokens."""

    index: int
    text: str
    logprobs: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class Choice:
    text: str
    finish_reason: str  # "stop" | "length"
    completion_tokens: int
    logprobs: list[dict[str, Any]] | None = None  # per token, when asked


@dataclass(frozen=True)
class Completion:
    choices: list[Choice]
    prompt_tokens: int

    @property
    def completion_tokens(self) -> int:
        return sum(c.completion_tokens for c in self.choices)


class _Row:
    def __init__(self, request: ChatRequest, index: int, tokenizer: Any, prompt_tokens: int):
        self.request, self.index = request, index
        self.detok = Detokenizer(tokenizer, request.stop)
        self.prompt_tokens = prompt_tokens
        self.count = 0
        self.finish_reason: str | None = None
        self.logprobs: list[dict[str, Any]] | None = [] if request.decoding.logprobs else None

    def choice(self) -> Choice:
        return Choice(self.detok.emitted, self.finish_reason or "length", self.count, self.logprobs)


class _Emit(StoppingCriteria):
    """Called by ``generate`` after every step with the whole batch: hands each row's new
    token to its request and stops rows at their EOS, a stop sequence or their own
    ``max_tokens``."""

    def __init__(self, rows: list[_Row], eos_ids: set[int], controls: RowControls | None, tokenizer: Any):
        self.rows, self.eos_ids, self.controls, self.tokenizer = rows, eos_ids, controls, tokenizer

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        last = input_ids[:, -1].tolist()
        for i, (row, token) in enumerate(zip(self.rows, last)):
            if row.finish_reason is not None:
                continue
            if token in self.eos_ids:
                row.finish_reason = "stop"
                continue
            row.count += 1
            delta = row.detok.push(token)
            entry = self.controls.entry(self.tokenizer, i, token) if self.controls is not None else None
            if entry is not None and row.logprobs is not None:
                row.logprobs.append(entry)
            if delta or entry is not None:
                row.request.events.put(("delta", Delta(row.index, delta, None if entry is None else [entry])))
            if row.detok.stopped:
                row.finish_reason = "stop"
            elif row.count >= row.request.max_tokens:
                row.finish_reason = "length"
        return torch.tensor([r.finish_reason is not None for r in self.rows], device=input_ids.device)


class _Base:
    """A loaded base model and the adapters loaded into it (LRU order)."""

    def __init__(self, model: Any, tokenizer: Any):
        self.model, self.tokenizer = model, tokenizer
        self.adapters: OrderedDict[str, str] = OrderedDict()  # model id -> PEFT adapter name
        self._n = 0

    def activate(self, name: str | None, adapter_dir: Path | None, max_adapters: int) -> Any:
        """The context to generate in: the adapter ``name`` active, or (None) the base alone."""
        if name is None:
            return reference_forward(self.model) if self.adapters else nullcontext()
        if name not in self.adapters:
            assert adapter_dir is not None, "an adapter not yet loaded needs its directory"
            self._n += 1
            internal = f"a{self._n}"
            if not self.adapters:
                from peft import PeftModel

                self.model = PeftModel.from_pretrained(self.model, adapter_dir, adapter_name=internal).eval()
            else:
                self.model.load_adapter(adapter_dir, adapter_name=internal)
            self.adapters[name] = internal
            self.model.set_adapter(internal)
            while len(self.adapters) > max_adapters:
                _, evicted = self.adapters.popitem(last=False)
                self.model.delete_adapter(evicted)
        self.adapters.move_to_end(name)
        self.model.set_adapter(self.adapters[name])
        return nullcontext()


class Engine:
    """The batching inference loop (see the module docstring). ``load_base(source)`` returns
    ``(model, tokenizer)`` in eval mode on the serving device; it is called once per base."""

    def __init__(
        self,
        load_base: LoadBase,
        *,
        max_adapters: int = defaults.INFER_MAX_ADAPTERS,
        max_batch: int = defaults.INFER_MAX_BATCH,
        batch_wait_s: float = defaults.INFER_BATCH_WAIT_MS / 1000,
        max_prompt_len: int = MAX_PROMPT_LEN,
        on_batch: Callable[[int], None] | None = None,
    ):
        self.load_base = load_base
        self.on_batch = on_batch  # called with each group's size before it is generated (metrics)
        self.max_adapters = max(1, max_adapters)
        self.max_batch = max(1, max_batch)
        self.batch_wait_s = batch_wait_s
        self.max_prompt_len = max_prompt_len
        self.bases: dict[str, _Base] = {}
        self.batches: list[int] = []  # sizes of the groups generated, for health and tests
        self._queue: queue.Queue[ChatRequest] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="inference", daemon=True)
        self._thread.start()

    def submit(self, request: ChatRequest) -> None:
        self._queue.put(request)

    def loaded(self) -> dict[str, list[str]]:
        """Loaded base models and, per base, its adapters (least recently used first)."""
        return {source: list(base.adapters) for source, base in self.bases.items()}

    def _collect(self) -> list[ChatRequest]:
        batch = [self._queue.get()]
        deadline = time.monotonic() + self.batch_wait_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(self._queue.get(timeout=remaining))
            except queue.Empty:
                break
        return batch

    def _loop(self) -> None:
        while True:
            groups: dict[tuple, list[ChatRequest]] = {}
            for request in self._collect():
                groups.setdefault(request.group, []).append(request)
            for group in groups.values():
                try:
                    self._run(group)
                except Exception as exc:  # one bad group must not stop the loop
                    for request in group:
                        request.events.put(("error", f"{type(exc).__name__}: {exc}"))

    def _base(self, source: str) -> _Base:
        if source not in self.bases:
            self.bases[source] = _Base(*self.load_base(source))
        return self.bases[source]

    def _run(self, group: list[ChatRequest]) -> None:
        first = group[0]
        base = self._base(first.base)
        vocab = int(base.model.config.vocab_size)
        group = [r for r in group if _valid_bias(r, vocab)]
        if not group:
            return
        context = base.activate(first.adapter, first.adapter_dir, self.max_adapters)
        tokenizer = base.tokenizer
        expanded = [(r, i) for r in group for i in range(r.n)]
        ids, mask = encode_prompts(tokenizer, [r.messages for r, _ in expanded], max_len=self.max_prompt_len)
        rows = [_Row(r, i, tokenizer, int(m.sum())) for (r, i), m in zip(expanded, mask)]
        controls = None
        if any(r.decoding.changes_logits or r.decoding.logprobs for r in group):
            controls = RowControls([r.decoding for r, _ in expanded], ids.shape[1], vocab)
        sampling: dict[str, Any] = {"do_sample": False}
        if first.temperature > 0:
            sampling = {"do_sample": True, "temperature": first.temperature, "top_p": first.top_p}
            if first.seed is not None:
                torch.manual_seed(first.seed)
        device = model_device(base.model)
        self.batches.append(len(rows))
        if self.on_batch is not None:
            self.on_batch(len(rows))
        with context, torch.no_grad():
            base.model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max(r.max_tokens for r in group),
                pad_token_id=pad_token_id(tokenizer),
                stopping_criteria=StoppingCriteriaList(
                    [_Emit(rows, _eos_ids(base.model, tokenizer), controls, tokenizer)]
                ),
                logits_processor=LogitsProcessorList([controls] if controls is not None else []),
                **sampling,
            )
        for row in rows:
            if tail := row.detok.finish():
                row.request.events.put(("delta", Delta(row.index, tail)))
        for request in group:
            mine = [row for row in rows if row.request is request]
            request.events.put(("done", Completion([row.choice() for row in mine], mine[0].prompt_tokens)))


def _valid_bias(request: ChatRequest, vocab: int) -> bool:
    """False (and the request answered ``invalid``) when its logit_bias names a token
    outside the model's vocabulary."""
    outside = sorted(t for t in request.decoding.logit_bias if not 0 <= t < vocab)
    if outside:
        request.events.put(
            ("invalid", ("logit_bias", f"token {outside[0]} is outside the model's vocabulary of {vocab}"))
        )
    return not outside


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """The ids ``generate`` stops on: the generation config's EOS (the tokenizer's if unset)."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    return set(eos if isinstance(eos, list) else [eos])
