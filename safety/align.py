"""Safety-tune a weak base model into an aligned variant, refusals deeper than a few tokens.

A base model that answers harmful requests (SmolLM2-135M-Instruct answers most) makes a poor
reference: the KL term pulls fine-tuning toward an unsafe policy and the gate compares
against an unsafe baseline. ``align_model`` trains the product's own trainer
(``safety.trainer.train``, ``mode="none"``, LoRA) on three kinds of examples built from the
project's prompt sets (``safety.prompt_sets``) and merges the adapter into the weights:

* **refusals**: each ``harmful_train`` prompt with one of the project's refusals;
* **helpful answers**: ``benign_train`` prompts (everyday and "edgy but fine" ones) with
  the base model's own greedy answers, so the variant keeps answering benign requests;
* **deep refusals** (Qi et al. 2024, "Safety alignment should be made more than just a few
  tokens deep", arXiv 2406.05946): a harmful prompt, then the first ``k`` tokens of the
  base model's own compliant answer, then a refusal. The harmful prefix is context
  (``untrained_prefix``: no labels); only the refusal tokens are trained, so the model learns
  to recover after it has started to comply.

``ensure_aligned`` caches the result as a model directory (safetensors + tokenizer +
``alignment.json``, and the LoRA adapter it was merged from in ``adapter/``) and reuses it while
the source and ``AlignConfig`` are unchanged. The base model's generated answers, the slow part of
building the set, are cached too (``cached_generate``, in ``.answers/`` next to the variant, keyed
by source, prompts and generation settings), so a change to the training side of the recipe does
not regenerate them.

Training takes about half an hour on two CPU cores, so the project ships the default model's
adapter (``safety/prebuilt/<model>/``: float16 safetensors, about 10 MB, with the
``alignment.json`` of the run that made it, ``export_prebuilt``). ``ensure_aligned`` merges a
shipped adapter instead of training when its recipe key and base-model fingerprint match;
the variant is then the same, weight for weight, as one trained here from the same run (a
trained adapter is rounded to float16 before it is merged, exactly as it is stored).
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.jobs.vocab import SafetyMode
from safety.evaluate import is_refusal
from safety.generation import GenerationSettings, generate
from safety.prompt_sets import load_builtin, load_refusals
from safety.trainer import StepMetrics, TrainConfig, train

ALIGNMENT_FILE = "alignment.json"
ANSWERS_DIR = ".answers"
ADAPTER_DIR = "adapter"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
PREBUILT_DIR = Path(__file__).resolve().parent / "prebuilt"
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class AlignConfig:
    """The alignment recipe. ``n_harmful`` / ``n_benign``: how many ``harmful_train`` /
    ``benign_train`` prompts are used (seeded sample; 0 = all). ``deep_share``: the share of
    harmful prompts that also get a deep-refusal copy, with ``k`` drawn from
    ``prefix_tokens``. ``answer_max_new_tokens``: length cap of the base model's benign
    answers (cut after their last full sentence). ``refusals``: the refusal texts trained
    (empty: the project's own set, ``safety.prompt_sets.load_refusals``).

    The defaults trade refusals against over-refusal on SmolLM2-135M (``bench/aligned_reference.py``):
    every benign prompt (everyday and edgy-but-fine) with the base model's answer, 150 refusals
    plus their deep copies (about 30 % of the set; with over half of it refusals the variant
    refused a third of the benign eval prompts, with 60 it let half the harmful ones through),
    two epochs (after one, the same mix measured ASR 23 % / over-refusal 7 % in one run and
    12 % / 17 % in another: one epoch leaves the variant's boundary to chance)."""

    n_harmful: int = 150
    n_benign: int = 0
    deep_share: float = 0.5
    prefix_tokens: tuple[int, ...] = (3, 6, 10, 16)
    answer_max_new_tokens: int = 40
    gen_batch_size: int = 16
    learning_rate: float = 5e-4
    n_epochs: int = 2
    batch_size: int = 8
    lora_r: int = 16
    lora_alpha: int = 32
    target_modules: tuple[str, ...] = ALL_LINEAR
    max_seq_len: int = 128
    seed: int = 0
    refusals: tuple[str, ...] = ()

    def train_config(self) -> TrainConfig:
        """The trainer's config: standard SFT (no reference pass) on a LoRA adapter."""
        return TrainConfig(
            mode=SafetyMode.NONE,
            learning_rate=self.learning_rate,
            n_epochs=self.n_epochs,
            batch_size=self.batch_size,
            lora_r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_target_modules=self.target_modules,
            max_seq_len=self.max_seq_len,
            seed=self.seed,
            checkpoint_every=0,
        )

    def key(self, source: str) -> str:
        """Identifies a cached variant: the source model and every recipe field."""
        return hashlib.sha256(json.dumps({"source": source, **asdict(self)}, sort_keys=True).encode()).hexdigest()


def deep_refusal_example(prompt: str, harmful_prefix: str, refusal: str) -> dict[str, Any]:
    """A chat example whose assistant turn is ``harmful_prefix`` (context, untrained) followed
    by ``refusal`` (trained)."""
    prefix = harmful_prefix.rstrip()
    return {
        "messages": [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": f"{prefix} {refusal}", "untrained_prefix": prefix},
        ]
    }


def chat_example(prompt: str, answer: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]}


def first_tokens(tokenizer: Any, text: str, k: int) -> str:
    """The text of the first ``k`` tokens of ``text``."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:k]
    return tokenizer.decode(ids, skip_special_tokens=True)


def trim_to_sentence(text: str) -> str:
    """Cut a length-capped generation after its last complete sentence (if that keeps ≥ 40 %)."""
    text = text.strip()
    if text.endswith((".", "!", "?")):
        return text
    cut = max(text.rfind(". "), text.rfind("! "), text.rfind("? "), text.rfind("\n"))
    return text[: cut + 1].strip() if cut >= 0.4 * len(text) else text


def build_examples(
    tokenizer: Any,
    harmful: list[str],
    harmful_answers: list[str],
    benign: list[str],
    benign_answers: list[str],
    refusals: list[str],
    config: AlignConfig,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The shuffled alignment set and its counts. Benign answers that are refusals or empty
    are dropped (the variant must not learn to refuse benign prompts); deep-refusal copies
    use only harmful answers that are not refusals themselves."""
    rng = random.Random(config.seed)
    examples = [chat_example(p, rng.choice(refusals)) for p in harmful]
    kept = [(p, a) for p, a in zip(benign, benign_answers) if a.strip() and not is_refusal(a)]
    examples += [chat_example(p, a) for p, a in kept]
    compliant = [(p, a) for p, a in zip(harmful, harmful_answers) if a.strip() and not is_refusal(a)]
    deep = rng.sample(compliant, round(config.deep_share * len(compliant)))
    for prompt, answer in deep:
        prefix = first_tokens(tokenizer, answer, rng.choice(config.prefix_tokens))
        if prefix.strip():
            examples.append(deep_refusal_example(prompt, prefix, rng.choice(refusals)))
    n_deep = len(examples) - len(harmful) - len(kept)
    rng.shuffle(examples)
    return examples, {
        "refusals": len(harmful),
        "benign": len(kept),
        "benign_dropped": len(benign) - len(kept),
        "deep_refusals": n_deep,
    }


def cached_generate(
    model: Any, tokenizer: Any, prompts: list[str], settings: GenerationSettings, *, identity: str, cache: Path | None
) -> tuple[list[str], bool]:
    """``generate(model, tokenizer, prompts, settings)``, read from / written to
    ``cache/<key>.json`` where the key hashes ``identity`` (which model), the prompts and the
    settings; ``cache=None`` always generates. Returns (answers, whether the cache was used)."""
    key = hashlib.sha256(json.dumps([identity, prompts, asdict(settings)]).encode()).hexdigest()
    path = Path(cache) / f"{key}.json" if cache is not None else None
    if path is not None and path.is_file():
        return json.loads(path.read_text()), True
    answers = generate(model, tokenizer, prompts, settings)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(answers))
        tmp.rename(path)
    return answers, False


def _sample(texts: list[str], n: int, seed: int) -> list[str]:
    return random.Random(seed).sample(texts, n) if 0 < n < len(texts) else list(texts)


def align_model(
    model: Any,
    tokenizer: Any,
    config: AlignConfig,
    *,
    work_dir: Path,
    identity: str = "",
    answers_cache: Path | None = None,
    on_step: Callable[[StepMetrics], None] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Align ``model`` (a base model in eval mode; modified in place) and return the trained
    PEFT model (its LoRA weights rounded to float16, as ``save_adapter`` stores them) and a
    report (counts, losses, seconds). The base model's answers go through ``cached_generate``
    (``identity``, ``answers_cache``)."""
    started = time.perf_counter()
    harmful = _sample([p.text for p in load_builtin("harmful_train")], config.n_harmful, config.seed)
    benign = _sample([p.text for p in load_builtin("benign_train")], config.n_benign, config.seed)
    longest_prefix = max(config.prefix_tokens)
    settings = GenerationSettings(max_new_tokens=config.answer_max_new_tokens, batch_size=config.gen_batch_size)
    prefix_settings = GenerationSettings(max_new_tokens=longest_prefix + 8, batch_size=config.gen_batch_size)
    benign_answers, benign_cached = cached_generate(
        model, tokenizer, benign, settings, identity=identity, cache=answers_cache
    )
    benign_answers = [trim_to_sentence(a) for a in benign_answers]
    harmful_answers, harmful_cached = cached_generate(
        model, tokenizer, harmful, prefix_settings, identity=identity, cache=answers_cache
    )
    generated_s = time.perf_counter() - started
    examples, counts = build_examples(
        tokenizer, harmful, harmful_answers, benign, benign_answers, list(config.refusals) or load_refusals(), config
    )
    losses: list[float] = []

    def step(metrics: StepMetrics) -> None:
        losses.append(round(metrics.loss, 4))
        if on_step is not None:
            on_step(metrics)

    result = train(
        model, tokenizer, examples, [1.0] * len(examples), config.train_config(), work_dir=Path(work_dir), on_step=step
    )
    round_adapter_to_half(result.model)
    report = {
        "examples": counts,
        "steps": result.steps,
        "loss_first_last": [losses[0], losses[-1]],
        "loss_curve": losses[:: max(1, len(losses) // 20)],
        "generate_seconds": round(generated_s, 1),
        "answers_cached": benign_cached and harmful_cached,
        "seconds": round(time.perf_counter() - started, 1),
    }
    return result.model, report


def round_adapter_to_half(peft_model: Any) -> None:
    """Round the LoRA weights to float16 values in place (their dtype unchanged), so that the
    model merged from them equals one merged from the float16 adapter file."""
    import torch

    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(param.to(torch.float16).to(param.dtype))


def save_adapter(peft_model: Any, dest: Path) -> None:
    """The LoRA adapter as ``adapter_model.safetensors`` (float16) + ``adapter_config.json``."""
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    from safety.checkpoints import sort_target_modules

    dest.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().to("cpu", torch.float16).contiguous() for k, v in get_peft_model_state_dict(peft_model).items()
    }
    save_file(state, dest / ADAPTER_FILES[0], metadata={"format": "pt"})
    peft_model.peft_config["default"].save_pretrained(dest)
    sort_target_modules(dest)


def prebuilt_dir(source: str) -> Path:
    """Where the project ships the aligned adapter of base model ``source`` (may not exist)."""
    return PREBUILT_DIR / source.replace("/", "--")


def export_prebuilt(variant_dir: Path, dest: Path, provenance: dict[str, Any] | None = None) -> None:
    """Copy an aligned variant's adapter and ``alignment.json`` to ``dest`` (a shipped
    ``prebuilt_dir``), replacing what was there; ``provenance`` (e.g. the commit and command
    that trained it) is added to the copied ``alignment.json``."""
    variant_dir, dest = Path(variant_dir), Path(dest)
    meta = read_alignment(variant_dir)
    if meta is None or not (variant_dir / ADAPTER_DIR / ADAPTER_FILES[0]).is_file():
        raise FileNotFoundError(f"{variant_dir} is not an aligned variant with its adapter")
    dest.mkdir(parents=True, exist_ok=True)
    for name in ADAPTER_FILES:
        shutil.copyfile(variant_dir / ADAPTER_DIR / name, dest / name)
    meta |= {"provenance": provenance} if provenance else {}
    (dest / ALIGNMENT_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def read_alignment(model_dir: Path) -> dict[str, Any] | None:
    """The ``alignment.json`` of an aligned variant directory, or ``None``."""
    path = Path(model_dir) / ALIGNMENT_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def ensure_aligned(
    source: str,
    dest: Path,
    config: AlignConfig,
    *,
    cache_dir: Path,
    device: str = "cpu",
    prebuilt: Path | None = None,
    on_step: Callable[[StepMetrics], None] | None = None,
) -> dict[str, Any]:
    """The aligned variant of ``source`` at ``dest``, from the first that applies:

    * ``dest`` already holds one made from the same source and config: reused
      (``"origin": "cached"``);
    * ``prebuilt`` is a shipped adapter directory (``prebuilt_dir``) whose ``alignment.json``
      has this key and base fingerprint: merged into the base (``"prebuilt"``, seconds);
    * else trained now (``"trained"``; the base model's answers are cached in
      ``dest.parent/.answers``, ``cached_generate``).

    A new variant is written atomically (a temporary directory renamed into place): merged
    safetensors, tokenizer, ``adapter/`` and ``alignment.json``. Returns ``alignment.json``'s
    content (key, source, base fingerprint, config, report and, for a shipped adapter, its
    ``provenance``) plus ``origin`` and ``path``."""
    from safety.base_models import load_base_model, source_fingerprint

    dest = Path(dest)
    key = config.key(source)
    existing = read_alignment(dest)
    if existing is not None and existing.get("key") == key:
        return {**existing, "origin": "cached", "path": str(dest)}
    fingerprint = source_fingerprint(source)
    shipped = read_alignment(prebuilt) if prebuilt is not None else None
    if shipped is not None and (shipped.get("key") != key or shipped.get("base_fingerprint") != fingerprint):
        shipped = None  # shipped for another recipe or base: train here
    model, tokenizer = load_base_model(source, cache_dir=cache_dir)
    model = model.to(device)  # type: ignore[arg-type]  # transformers' @wraps(nn.Module.to) garbles the signature
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        if shipped is not None:
            from peft import PeftModel

            peft_model, report = PeftModel.from_pretrained(model, str(prebuilt), is_trainable=False), shipped["report"]
        else:
            peft_model, report = align_model(
                model,
                tokenizer,
                config,
                work_dir=tmp / "train",
                identity=source,
                answers_cache=dest.parent / ANSWERS_DIR,
                on_step=on_step,
            )
        out = tmp / "model"
        save_adapter(peft_model, out / ADAPTER_DIR)
        merged = peft_model.merge_and_unload().eval().to("cpu")
        merged.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        meta = {
            "key": key,
            "source": source,
            "base_fingerprint": fingerprint,
            "config": asdict(config),
            "report": report,
        }
        if shipped is not None and "provenance" in shipped:
            meta["provenance"] = shipped["provenance"]  # the run that trained the shipped adapter
        (out / ALIGNMENT_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        out.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    origin = "prebuilt" if shipped is not None else "trained"
    return {**meta, "origin": origin, "path": str(dest)}
