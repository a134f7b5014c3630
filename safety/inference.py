"""Chat inference for serving: base models loaded once, LoRA adapters in an LRU, and
concurrent requests batched.

Contract:

* :meth:`Engine.submit` takes a :class:`ChatRequest` and returns at once; the request's
  ``events`` queue then receives ``("delta", text)`` items as tokens are generated and one
  final ``("done", Completion)`` (or ``("error", message)``).
* A worker thread takes the first waiting request, collects more for up to
  ``batch_wait_s`` (at most ``max_batch``), groups them by (base model, adapter, sampling
  settings) and runs each group as one left-padded ``generate`` call. Each row stops on its
  own EOS or its own ``max_tokens``.
* Decoding matches :func:`safety.generation.generate` (the evaluation's): the prompt is the
  chat template up to the assistant turn, left-truncated to ``max_prompt_len``; the answer
  is the generated tokens decoded with special tokens skipped and stripped. The streamed
  deltas concatenate to exactly that text. ``temperature == 0`` is greedy decoding.
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
from transformers import StoppingCriteria, StoppingCriteriaList

from core.jobs import config as defaults
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
    adapter: str | None = None  # the adapter's name (the ft: model id)
    adapter_dir: Path | None = None  # its PEFT files on local disk
    events: queue.Queue = field(default_factory=queue.Queue)

    @property
    def group(self) -> tuple:
        greedy = self.temperature <= 0
        return (self.base, self.adapter, greedy, None if greedy else (self.temperature, self.top_p, self.seed))


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    completion_tokens: int


class Detokenizer:
    """Incremental decoding whose deltas add up to ``decode(all ids).strip()``.

    Leading whitespace is never emitted, trailing whitespace and incomplete UTF-8 are held
    back until more text follows; :meth:`finish` emits what is left of the stripped text."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.emitted = ""

    def _text(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True)

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = self._text().lstrip()
        if text.endswith("\ufffd"):
            return ""
        ready = text.rstrip()
        if not ready.startswith(self.emitted) or len(ready) <= len(self.emitted):
            return ""
        delta, self.emitted = ready[len(self.emitted) :], ready
        return delta

    def finish(self) -> str:
        final = self._text().strip()
        if not final.startswith(self.emitted):  # decoding changed earlier text: cannot happen with byte-level BPE
            raise RuntimeError("streamed text is not a prefix of the final text")
        delta, self.emitted = final[len(self.emitted) :], final
        return delta


class _Row:
    def __init__(self, request: ChatRequest, tokenizer: Any, prompt_tokens: int):
        self.request = request
        self.detok = Detokenizer(tokenizer)
        self.prompt_tokens = prompt_tokens
        self.count = 0
        self.finish_reason: str | None = None


class _Emit(StoppingCriteria):
    """Called by ``generate`` after every step with the whole batch: hands each row's new
    token to its request and stops rows at their EOS or their own ``max_tokens``."""

    def __init__(self, rows: list[_Row], eos_ids: set[int]):
        self.rows, self.eos_ids = rows, eos_ids

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        last = input_ids[:, -1].tolist()
        for row, token in zip(self.rows, last):
            if row.finish_reason is not None:
                continue
            if token in self.eos_ids:
                row.finish_reason = "stop"
                continue
            row.count += 1
            if delta := row.detok.push(token):
                row.request.events.put(("delta", delta))
            if row.count >= row.request.max_tokens:
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
    ):
        self.load_base = load_base
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
        context = base.activate(first.adapter, first.adapter_dir, self.max_adapters)
        tokenizer = base.tokenizer
        ids, mask = encode_prompts(tokenizer, [r.messages for r in group], max_len=self.max_prompt_len)
        rows = [_Row(r, tokenizer, int(m.sum())) for r, m in zip(group, mask)]
        eos_ids = _eos_ids(base.model, tokenizer)
        sampling: dict[str, Any] = {"do_sample": False}
        if first.temperature > 0:
            sampling = {"do_sample": True, "temperature": first.temperature, "top_p": first.top_p}
            if first.seed is not None:
                torch.manual_seed(first.seed)
        device = model_device(base.model)
        self.batches.append(len(group))
        with context, torch.no_grad():
            base.model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max(r.max_tokens for r in group),
                pad_token_id=pad_token_id(tokenizer),
                stopping_criteria=StoppingCriteriaList([_Emit(rows, eos_ids)]),
                **sampling,
            )
        for row in rows:
            if tail := row.detok.finish():
                row.request.events.put(("delta", tail))
            row.request.events.put(
                (
                    "done",
                    Completion(
                        text=row.detok.emitted,
                        finish_reason=row.finish_reason or "length",
                        prompt_tokens=row.prompt_tokens,
                        completion_tokens=row.count,
                    ),
                )
            )


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """The ids ``generate`` stops on: the generation config's EOS (the tokenizer's if unset)."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    return set(eos if isinstance(eos, list) else [eos])
