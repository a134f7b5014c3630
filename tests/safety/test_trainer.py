"""Tokenization for assistant-only training and the adaptive LoRA trainer, on the tiny model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file

from core.jobs.vocab import Objective, ReferenceMode, RiskWeighting, SafetyMode
from safety.checkpoints import load_adapter, read_trainer_state
from safety.data import IGNORE_INDEX, collate, encode_chat, encode_example
from safety.train_config import TrainConfig, TrainOutcome
from safety.train_state import check_resumable, lora_config, make_optimizer
from safety.trainer import StepMetrics, mean_kl, train

FAST = TrainConfig(
    mode="adaptive",
    batch_size=2,
    n_epochs=1,
    learning_rate=5e-3,
    warmup_ratio=0.0,
    lora_r=4,
    lora_alpha=8,
    lora_dropout=0.1,
    max_seq_len=128,
    checkpoint_every=0,
)


def _labelled_text(tokenizer, encoded) -> list[str]:
    """Decoded runs of consecutive labelled tokens."""
    runs, current = [], []
    for token, label in zip(encoded.input_ids, encoded.labels):
        if label == IGNORE_INDEX:
            if current:
                runs.append(tokenizer.decode(current))
            current = []
        else:
            assert label == token
            current.append(token)
    if current:
        runs.append(tokenizer.decode(current))
    return runs


# --- data -------------------------------------------------------------------------------


def test_labels_cover_exactly_the_assistant_turns(load_tiny, chat_examples) -> None:
    _, tokenizer = load_tiny()
    multi_turn = chat_examples[6]["messages"]
    encoded = encode_chat(tokenizer, multi_turn, max_len=512)
    assert _labelled_text(tokenizer, encoded) == ["Blue.<|im_end|>\n", "Green.<|im_end|>\n"]
    # the tokens are those of the ordinary rendering
    rendered = tokenizer.apply_chat_template(multi_turn, tokenize=False)
    assert tokenizer.decode(encoded.input_ids) == rendered

    prompt_completion = encode_example(tokenizer, chat_examples[7], max_len=512)
    assert _labelled_text(tokenizer, prompt_completion) == ["Hello!<|im_end|>\n"]
    assert "Say hello." in tokenizer.decode(prompt_completion.input_ids)


def test_weight_zero_messages_and_truncation(load_tiny, chat_examples) -> None:
    _, tokenizer = load_tiny()
    messages = [dict(m) for m in chat_examples[6]["messages"]]
    messages[2]["weight"] = 0
    encoded = encode_chat(tokenizer, messages, max_len=512)
    assert _labelled_text(tokenizer, encoded) == ["Green.<|im_end|>\n"]
    short = encode_chat(tokenizer, messages, max_len=10)
    assert len(short.input_ids) == len(short.labels) == 10


def test_collate_right_pads(load_tiny, chat_examples) -> None:
    _, tokenizer = load_tiny()
    a, b = (encode_example(tokenizer, e, 512) for e in chat_examples[6:8])
    batch = collate([a, b], pad_id=tokenizer.pad_token_id)
    longest = max(len(a.input_ids), len(b.input_ids))
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (2, longest)
    short_row = 0 if len(a.input_ids) < len(b.input_ids) else 1
    n = min(len(a.input_ids), len(b.input_ids))
    assert batch["attention_mask"][short_row, :n].all()
    assert not batch["attention_mask"][short_row, n:].any()
    assert (batch["labels"][short_row, n:] == IGNORE_INDEX).all()
    assert (batch["input_ids"][short_row, n:] == tokenizer.pad_token_id).all()


# --- training ---------------------------------------------------------------------------


def test_lora_learns_base_stays_and_kl_starts_at_zero(load_tiny, chat_examples, tmp_path: Path) -> None:
    model, tokenizer = load_tiny()
    base_before = {k: v.clone() for k, v in model.state_dict().items()}
    metrics: list[StepMetrics] = []
    result = train(model, tokenizer, chat_examples, [5.0] * 8, FAST, work_dir=tmp_path, on_step=metrics.append)

    assert [m.step for m in metrics] == [1, 2, 3, 4]
    assert result.steps == result.total_steps == 4
    assert metrics[0].kl == pytest.approx(0.0, abs=1e-6)  # B = 0: adapter starts as the identity
    assert all(m.kl is not None and m.kl > 0 for m in metrics[1:])
    assert all((m.kl_weight, m.sft_weight) == pytest.approx((0.9, 0.1)) for m in metrics)

    assert isinstance(result.model, PeftModel)
    assert not result.model.training
    base_after = {
        k.replace("base_model.model.", "").replace(".base_layer", ""): v
        for k, v in result.model.state_dict().items()
        if "lora_" not in k
    }
    assert base_after.keys() == base_before.keys()
    assert all(torch.equal(base_after[k], base_before[k]) for k in base_before)

    adapter = load_file(result.adapter_dir / "adapter_model.safetensors")
    assert all(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)  # B starts at zero
    assert result.summary["regularized_share"] == 1.0
    assert result.summary["mean_risk"] == 5.0
    assert result.summary["final_kl"] == metrics[-1].kl
    assert result.summary["trained_tokens"] == sum(m.tokens for m in metrics)


def test_released_adapter_reproduces_the_trained_model(load_tiny, chat_examples, tmp_path: Path) -> None:
    model, tokenizer = load_tiny()
    calls: list[tuple[int, Path]] = []
    config = dataclasses.replace(FAST, checkpoint_every=3)
    result = train(
        model,
        tokenizer,
        chat_examples,
        [3.0] * 8,
        config,
        work_dir=tmp_path,
        save_checkpoint=lambda step, path, metrics: calls.append((step, path)),
    )
    assert [step for step, _ in calls] == [3, 4]
    for _, path in calls:
        names = {p.name for p in path.iterdir()}
        assert {"adapter_config.json", "adapter_model.safetensors", "trainer_state.json"} <= names
    assert read_trainer_state(calls[0][1])["data_position"]["step_in_epoch"] == 3
    assert sorted(p.name for p in result.adapter_dir.iterdir() if p.suffix != ".md") == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]

    inputs = tokenizer("Hello there, how are you?", return_tensors="pt")
    released = load_adapter(load_tiny()[0], result.adapter_dir)
    with torch.no_grad():
        assert torch.allclose(result.model(**inputs).logits, released(**inputs).logits, atol=1e-6)
        with released.disable_adapter():
            assert torch.allclose(released(**inputs).logits, load_tiny()[0](**inputs).logits, atol=1e-6)


@pytest.mark.parametrize(
    ("mode", "risks", "batch_size", "reference_passes"),
    [
        ("none", [5.0] * 8, 2, 0),
        ("adaptive", [1.0] * 8, 2, 0),
        ("adaptive", [5.0] * 8, 2, 4),
        ("constant", [1.0] * 8, 2, 4),
        ("adaptive", [1.0, 5.0] * 4, 1, 4),  # 8 micro-batches of one: only the 4 risky ones
    ],
)
def test_reference_pass_runs_only_when_kl_weight_is_positive(
    load_tiny,
    chat_examples,
    tmp_path: Path,
    monkeypatch,
    mode: str,
    risks: list[float],
    batch_size: int,
    reference_passes: int,
) -> None:
    model, tokenizer = load_tiny()
    forwards = []
    model.register_forward_pre_hook(lambda module, args: forwards.append(1))
    disabled = []
    original = PeftModel.disable_adapter

    def counting_disable_adapter(self):
        disabled.append(1)
        return original(self)

    monkeypatch.setattr(PeftModel, "disable_adapter", counting_disable_adapter)
    config = dataclasses.replace(
        FAST, mode=mode, kl_weight_min=0.0, batch_size=batch_size, grad_accum_steps=2 // batch_size
    )
    metrics: list[StepMetrics] = []
    train(model, tokenizer, chat_examples, risks, config, work_dir=tmp_path, on_step=metrics.append)

    assert len(disabled) == reference_passes
    assert len(forwards) == 8 // batch_size + reference_passes  # one forward per micro-batch, + reference passes
    assert all((m.kl is None) == (m.kl_weight == 0) for m in metrics)  # KL measured where the pass ran


def _answer_ce_sum(model, tokenizer, example) -> tuple[float, int]:
    """Σ cross-entropy over an example's answer tokens and their number, token by token."""
    encoded = encode_example(tokenizer, example, 128)
    with torch.no_grad():
        log_p = torch.log_softmax(model(input_ids=torch.tensor([encoded.input_ids])).logits[0].double(), -1)
    answer = [t for t in range(1, len(encoded.labels)) if encoded.labels[t] != IGNORE_INDEX]
    return -sum(log_p[t - 1, encoded.labels[t]].item() for t in answer), len(answer)


@pytest.mark.parametrize("risk_weighting", ["example", "batch"])
def test_a_risk_5_and_a_risk_1_example_are_trained_at_their_own_weights(
    load_tiny, chat_examples, tmp_path: Path, risk_weighting: str
) -> None:
    harmful, benign = chat_examples[6], chat_examples[0]
    model, tokenizer = load_tiny()
    (ce5, n5), (ce1, n1) = _answer_ce_sum(model, tokenizer, harmful), _answer_ce_sum(model, tokenizer, benign)
    config = dataclasses.replace(FAST, risk_weighting=risk_weighting, lora_dropout=0.0)
    metrics: list[StepMetrics] = []
    result = train(model, tokenizer, [harmful, benign], [5.0, 1.0], config, work_dir=tmp_path, on_step=metrics.append)

    (m,) = metrics  # one step holds both; the fresh adapter is the identity, so KL = 0 in it
    assert m.kl == pytest.approx(0.0, abs=1e-6)
    if risk_weighting == "example":  # risk 5 -> w_sft 0.1, w_kl 0.9; risk 1 -> 0.9, 0.1
        assert m.loss == pytest.approx((0.1 * ce5 + 0.9 * ce1) / (n5 + n1), rel=1e-4)
        assert (m.kl_weight_flagged, m.kl_weight_unflagged) == pytest.approx((0.9, 0.1))
    else:  # the paper's batch mean: risk 3 -> w_sft 2/3, w_kl 1/3 for both
        assert m.loss == pytest.approx(2 / 3 * (ce5 + ce1) / (n5 + n1), rel=1e-4)
        assert (m.kl_weight_flagged, m.kl_weight_unflagged) == pytest.approx((1 / 3, 1 / 3))
    assert m.kl_weight == pytest.approx(0.5 if risk_weighting == "example" else 1 / 3)
    assert m.sft_loss == pytest.approx((ce5 + ce1) / (n5 + n1), rel=1e-4)
    summary = result.summary
    assert (summary["mean_kl_weight_flagged"], summary["mean_kl_weight_unflagged"]) == pytest.approx(
        (m.kl_weight_flagged, m.kl_weight_unflagged)
    )


def test_flagged_means_are_none_without_examples_of_that_kind(load_tiny, chat_examples, tmp_path: Path) -> None:
    model, tokenizer = load_tiny()
    metrics: list[StepMetrics] = []
    flagged = [True] * 2 + [False] * 6  # the scan's verdicts, not the risks, decide
    config = dataclasses.replace(FAST, batch_size=8)
    train(
        model, tokenizer, chat_examples, [1.0] * 8, config, work_dir=tmp_path, on_step=metrics.append, flagged=flagged
    )
    assert (metrics[0].kl_weight_flagged, metrics[0].kl_weight_unflagged) == pytest.approx((0.1, 0.1))
    metrics.clear()
    result = train(
        load_tiny()[0], tokenizer, chat_examples, [1.0] * 8, config, work_dir=tmp_path / "b", on_step=metrics.append
    )
    assert metrics[0].kl_weight_flagged is None
    assert metrics[0].kl_weight_unflagged == pytest.approx(0.1)
    assert result.summary["mean_kl_weight_flagged"] is None


def test_adaptive_training_stays_closer_to_the_reference_than_standard_sft(
    load_tiny, chat_examples, tmp_path: Path
) -> None:
    config = dataclasses.replace(FAST, n_epochs=3, learning_rate=1e-2)
    risks = [5.0] * 8
    kls = {}
    for mode in ("none", "adaptive"):
        model, tokenizer = load_tiny()
        config_of_mode = dataclasses.replace(config, mode=mode)
        result = train(model, tokenizer, chat_examples, risks, config_of_mode, work_dir=tmp_path / mode)
        kls[mode] = mean_kl(result.model, tokenizer, chat_examples)
    assert kls["none"] > 0, kls
    assert kls["adaptive"] < 0.5 * kls["none"], kls


@pytest.mark.parametrize(
    ("resume_with", "objective"), [("base_model", "paper"), ("peft_model", "paper"), ("base_model", "bounded")]
)
def test_resume_reproduces_the_uninterrupted_run(
    load_tiny, chat_examples, tmp_path: Path, resume_with: str, objective: str
) -> None:
    """Also under bounded, whose steps run at a scaled rate: the schedule's own rate is checkpointed."""
    config = dataclasses.replace(
        FAST,
        n_epochs=2,
        grad_accum_steps=2,
        batch_size=1,
        checkpoint_every=2,
        lr_schedule="cosine",
        warmup_ratio=0.25,
        objective=objective,
    )
    risks = [1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 1.0, 3.0]

    model, tokenizer = load_tiny()
    full: list[StepMetrics] = []
    full_result = train(model, tokenizer, chat_examples, risks, config, work_dir=tmp_path / "full", on_step=full.append)
    assert full_result.total_steps == 8

    model, tokenizer = load_tiny()
    if resume_with == "peft_model":
        model = get_peft_model(model, lora_config(config))
    resumed: list[StepMetrics] = []
    checkpoint = tmp_path / "full" / "checkpoints" / "step-000004"
    result = train(
        model,
        tokenizer,
        chat_examples,
        risks,
        config,
        work_dir=tmp_path / "resumed",
        resume_dir=checkpoint,
        on_step=resumed.append,
    )
    assert [m.step for m in resumed] == [5, 6, 7, 8]
    _, _, schedule = make_optimizer(torch.nn.Linear(1, 1), config, 8)
    rates = []
    for _ in range(8):
        rates.append(schedule.get_last_lr()[0])
        schedule.step()
    if objective == "bounded":  # each step at most w_sft's bound 0.9 of the schedule's rate
        assert all(m.lr <= 0.9 * rate for m, rate in zip(full, rates, strict=True))
        assert sum(m.lr for m in full) < 0.9 * sum(rates)
    else:
        assert [m.lr for m in full] == rates
    for a, b in zip(full[4:], resumed, strict=True):
        assert (a.risk, a.kl_weight, a.epoch, a.tokens) == (b.risk, b.kl_weight, b.epoch, b.tokens)
        assert (a.loss, a.sft_loss, a.kl, a.lr) == pytest.approx((b.loss, b.sft_loss, b.kl, b.lr), rel=1e-6, abs=1e-9)
    assert result.summary == pytest.approx(full_result.summary, rel=1e-6)
    full_weights = load_file(full_result.adapter_dir / "adapter_model.safetensors")
    resumed_weights = load_file(result.adapter_dir / "adapter_model.safetensors")
    assert full_weights.keys() == resumed_weights.keys()
    assert all(torch.allclose(full_weights[k], resumed_weights[k], atol=1e-6) for k in full_weights)


def test_resume_refuses_other_data_or_config(load_tiny, chat_examples, tmp_path: Path) -> None:
    model, tokenizer = load_tiny()
    config = dataclasses.replace(FAST, checkpoint_every=2)
    train(model, tokenizer, chat_examples, [3.0] * 8, config, work_dir=tmp_path)
    checkpoint = tmp_path / "checkpoints" / "step-000002"
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["step"] == 2
    assert state["config"]["mode"] == "adaptive"

    def resume(risk: float, resumed_config: TrainConfig) -> None:
        risks = [risk] * 8
        train(
            load_tiny()[0],
            tokenizer,
            chat_examples,
            risks,
            resumed_config,
            work_dir=tmp_path / "r",
            resume_dir=checkpoint,
        )

    with pytest.raises(ValueError, match="other training data"):
        resume(4.0, config)
    with pytest.raises(ValueError, match="learning_rate"):
        resume(3.0, dataclasses.replace(config, learning_rate=1.0))


def test_a_checkpoint_naming_the_bounds_as_an_earlier_version_did_resumes() -> None:
    """Checkpoints written before the bounds were renamed call them kl_lo … sft_hi."""
    config = dataclasses.replace(FAST, kl_weight_min=0.2, sft_weight_max=0.8)
    written = json.loads(json.dumps(dataclasses.asdict(config)))
    earlier = {
        "kl_weight_min": "kl_lo",
        "kl_weight_max": "kl_hi",
        "sft_weight_min": "sft_lo",
        "sft_weight_max": "sft_hi",
    }
    state = {"data_fingerprint": "data", "config": {earlier.get(k, k): v for k, v in written.items()}}
    check_resumable(state, config, "data", None)
    with pytest.raises(ValueError, match="different config: kl_weight_min"):
        check_resumable(state, dataclasses.replace(config, kl_weight_min=0.3), "data", None)


def test_the_config_holds_its_safety_words_as_enums() -> None:
    config = TrainConfig(mode="constant", risk_weighting="batch", reference="cached", objective="bounded")
    assert (config.mode, config.risk_weighting, config.reference, config.objective) == (
        SafetyMode.CONSTANT,
        RiskWeighting.BATCH,
        ReferenceMode.CACHED,
        Objective.BOUNDED,
    )
    assert json.loads(json.dumps(dataclasses.asdict(config)))["mode"] == "constant"
    for field, value, message in (
        ("mode", "sft", "unknown training mode 'sft'"),
        ("risk_weighting", "token", "unknown risk weighting 'token'"),
        ("reference", "lazy", "unknown reference 'lazy'"),
        ("objective", "clipped", "unknown objective 'clipped'"),
    ):
        with pytest.raises(ValueError, match=message):
            TrainConfig(**{field: value})


def test_cancel_stops_within_one_step(load_tiny, chat_examples, tmp_path: Path) -> None:
    model, tokenizer = load_tiny()
    metrics: list[StepMetrics] = []
    result = train(
        model,
        tokenizer,
        chat_examples,
        [3.0] * 8,
        FAST,
        work_dir=tmp_path,
        on_step=metrics.append,
        should_cancel=lambda: len(metrics) >= 2,
    )
    assert result.outcome == TrainOutcome.CANCELLED
    assert result.steps == 2
    assert len(metrics) == 2
    assert result.adapter_dir is None
    assert not (tmp_path / "adapter").exists()
    assert not result.model.training


@pytest.mark.parametrize("risk_weighting", ["example", "batch"])
def test_the_demos_planted_lines_are_trained_at_their_own_weights(load_tiny, tmp_path: Path, risk_weighting: str):
    """The demo file's first 48 lines (six planted lines spread among 42 benign ones; its last
    six lines are planted too) and batch size (4; one epoch here), with the scan's verdict
    taken as risk 5 on the planted lines (examples/README.md) and 1 elsewhere."""
    from tests.conftest import REPO

    lines = (REPO / "examples" / "demo_train.jsonl").read_text().splitlines()[:48]
    flagged = ["[details withheld in this demo dataset]" in line for line in lines]
    assert sum(flagged) == 6
    risks = [5.0 if f else 1.0 for f in flagged]
    model, tokenizer = load_tiny()
    config = dataclasses.replace(FAST, batch_size=4, n_epochs=1, max_seq_len=64, risk_weighting=risk_weighting)
    metrics: list[StepMetrics] = []
    train(
        model,
        tokenizer,
        [json.loads(line) for line in lines],
        risks,
        config,
        work_dir=tmp_path,
        on_step=metrics.append,
        flagged=flagged,
    )
    with_planted = [m.kl_weight_flagged for m in metrics if m.kl_weight_flagged is not None]
    assert 1 <= len(with_planted) <= 6  # the steps that hold a planted line
    if risk_weighting == "example":
        assert with_planted == pytest.approx([0.9] * len(with_planted))
    else:  # the paper's batch mean: a planted line beside three benign ones barely moves w_kl off its floor
        assert max(with_planted) < 0.5
        assert min(with_planted) == pytest.approx(0.1)
