"""Activation probe on the tiny model: features, a planted signal, persistence, metrics."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from core.jobs.config import FLAG_THRESHOLD, WEIGHTING_RISK
from safety.base_models import load_base_model
from safety.generation import render_prompt
from safety.objective import kl_weights
from safety.probe import (
    Probe,
    ProbeConfig,
    Weighting,
    auroc,
    extract_features,
    graded_risk,
    risk_from_p,
    split_indices,
    threshold_for_recall,
    tpr_at_fpr,
    train_probe,
    train_probe_on_features,
)
from safety.probe.heads import _make_head, fit_heads, head_seeds

WORDS = "the cat sat on a mat while dogs ran across green fields under blue skies near old towns".split()


def _planted(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Random sentences; the harmful ones all contain the trigger word."""
    rng = random.Random(seed)
    harmful = [" ".join(rng.choices(WORDS, k=rng.randint(5, 12)) + ["detonator"]) for _ in range(n)]
    benign = [" ".join(rng.choices(WORDS, k=rng.randint(5, 12))) for _ in range(n)]
    return harmful, benign


@pytest.fixture(scope="module")
def tiny(tiny_model: Path):
    return load_base_model(str(tiny_model), cache_dir=tiny_model.parent)


@pytest.mark.parametrize("pool", ["mean", "content"])
def test_features_match_unpadded_runs_and_hidden_states(tiny, pool: str) -> None:
    model, tokenizer = tiny
    prompts = [
        "short",
        "a much longer prompt with quite a few more tokens in it",
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    ]
    left = extract_features(model, tokenizer, prompts, [0, 1, -1], pool=pool, padding_side="left")
    right = extract_features(model, tokenizer, prompts, [0, 1, -1], pool=pool, padding_side="right", batch_size=2)
    single = torch.cat([extract_features(model, tokenizer, [p], [0, 1, -1], pool=pool) for p in prompts])
    assert left.shape == (3, 3, model.config.hidden_size)
    torch.testing.assert_close(left, right, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(left, single, atol=1e-5, rtol=1e-4)
    if pool == "mean":  # layer 1 = output of the first block, averaged over every token
        ids = tokenizer(render_prompt(tokenizer, prompts[1]), add_special_tokens=False, return_tensors="pt")[
            "input_ids"
        ]
        with torch.no_grad():
            hidden = model(ids, output_hidden_states=True).hidden_states
        torch.testing.assert_close(left[1, 1], hidden[1][0].mean(0), atol=1e-5, rtol=1e-4)


def test_content_pooling_skips_the_template(tiny) -> None:
    model, tokenizer = tiny
    a = extract_features(model, tokenizer, ["hello there"], [0], pool="content")
    b = extract_features(model, tokenizer, ["hello there"], [0], pool="mean")
    ids = tokenizer("hello there", add_special_tokens=False, return_tensors="pt")["input_ids"]
    emb = model.get_input_embeddings()(ids)[0].mean(0)
    torch.testing.assert_close(a[0, 0], emb, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("kind", ["logistic", "mlp"])
def test_planted_signal_is_separated_and_round_trips(tiny, kind: str, tmp_path: Path) -> None:
    model, tokenizer = tiny
    harmful, benign = _planted(100)
    config = ProbeConfig(layers=(1,), kind=kind, epochs=60, seed=0)
    probe, report = train_probe(model, tokenizer, harmful, benign, config)
    assert report.auroc > 0.9
    # 100 per class: select 15, calibrate 20, test 20, fit the remaining 45 (per class)
    assert (report.n_fit, report.n_select, report.n_calibrate, report.n_test) == (90, 30, 40, 40)
    assert (report.n_harmful, report.n_benign, report.layers) == (100, 100, (1,))
    assert probe.threshold == report.threshold >= 0.5
    assert report.calibrate_fpr <= 0.05
    assert 0.0 <= report.tpr_at_threshold <= 1.0

    test_h, test_b = _planted(20, seed=1)
    p = probe.predict_proba(model, tokenizer, test_h + test_b, batch_size=7)
    assert auroc(p, [1] * 20 + [0] * 20) > 0.9

    probe.save(tmp_path / "probe")
    assert sorted(f.name for f in (tmp_path / "probe").iterdir()) == ["probe.json", "probe.safetensors"]
    loaded = Probe.load(tmp_path / "probe")
    assert len(loaded.heads) == len(probe.heads) == config.heads > 1
    assert loaded.predict_proba(model, tokenizer, test_h + test_b, batch_size=7) == p
    assert (loaded.layers, loaded.kind, loaded.threshold) == (probe.layers, kind, probe.threshold)


def _planted_features(n: int = 60, dim: int = 8) -> tuple[torch.Tensor, list[int]]:
    """``[2n, 1, dim]`` noise features; the harmful half has a shifted first coordinate."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2 * n, 1, dim, generator=gen)
    x[:n, 0, 0] += 1.5
    return x, [1] * n + [0] * n


def test_ensemble_probability_is_the_mean_of_its_heads() -> None:
    x, labels = _planted_features()
    config = ProbeConfig(kind="mlp", hidden_units=16, epochs=5, heads=3, seed=7)
    probe, _ = train_probe_on_features(x, labels, [0], config)
    singles = [dataclasses.replace(probe, heads=[head]).predict_proba_features(x) for head in probe.heads]
    torch.testing.assert_close(probe.predict_proba_features(x), torch.stack(singles).mean(dim=0))
    assert not torch.equal(singles[0], singles[1])  # the heads' seeds differ
    one, _ = train_probe_on_features(x, labels, [0], dataclasses.replace(config, heads=1))
    torch.testing.assert_close(one.predict_proba_features(x), singles[0])  # head 0 is seeded config.seed


@pytest.mark.parametrize("kind", ["logistic", "mlp"])
def test_the_ensemble_trains_each_head_as_it_would_train_alone(kind: str) -> None:
    """``fit_heads`` trains its heads side by side; each must match a head trained alone
    (its seed's initialisation and minibatch order, its own Adam) to float precision."""
    torch.manual_seed(3)
    x = torch.randn(150, 12)
    y = (x[:, 0] + 0.5 * torch.randn(150) > 0).float()
    config = ProbeConfig(kind=kind, epochs=4, batch_size=32, hidden_units=8, heads=3, weight_decay=0.05)
    heads = fit_heads(x, y, config)
    assert len(heads) == 3
    for seed, head in zip(head_seeds(config), heads):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            alone = _make_head(kind, 12, 8)
            opt = torch.optim.Adam(alone.parameters(), lr=config.lr)
            for _ in range(config.epochs):
                for idx in torch.randperm(len(x)).split(config.batch_size):
                    loss = torch.nn.functional.binary_cross_entropy_with_logits(alone(x[idx]).squeeze(-1), y[idx])
                    weights = [p for name, p in alone.named_parameters() if name.endswith("weight")]
                    loss = loss + 0.5 * config.weight_decay * sum((w**2).sum() for w in weights)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
        for (name, mine), theirs in zip(head.named_parameters(), alone.parameters()):
            torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5, msg=name)
    # the heads differ: each drew its own initialisation and order
    assert not torch.allclose(heads[0](x), heads[1](x))


def test_a_one_head_probe_file_from_before_ensembles_loads(tmp_path: Path) -> None:
    x, labels = _planted_features()
    probe, _ = train_probe_on_features(x, labels, [0], ProbeConfig(hidden_units=16, epochs=5, heads=1))
    tensors = {"mean": probe.mean, "std": probe.std}
    tensors.update({f"head.{k}": v for k, v in probe.heads[0].state_dict().items()})
    save_file(tensors, str(tmp_path / "probe.safetensors"))
    meta = {"layers": [0], "kind": "mlp", "pool": "content", "max_len": 512, "hidden_units": 16, "threshold": 0.7}
    (tmp_path / "probe.json").write_text(json.dumps(meta))
    loaded = Probe.load(tmp_path)
    assert (len(loaded.heads), loaded.threshold) == (1, 0.7)
    assert torch.equal(loaded.predict_proba_features(x), probe.predict_proba_features(x))


def test_layer_candidates_pick_best_validation_auroc(tiny) -> None:
    model, tokenizer = tiny
    harmful, benign = _planted(40)
    probe, report = train_probe(
        model, tokenizer, harmful, benign, ProbeConfig(epochs=30), layer_candidates=[(1,), (2,), (1, -1)]
    )
    assert [c["layers"] for c in report.candidates] == [[1], [2], [1, 2]]
    best = max(report.candidates, key=lambda c: (c["select_auroc"], -c["select_log_loss"]))
    assert list(report.layers) == best["layers"]
    assert report.select_auroc == best["select_auroc"]
    assert probe.layers == report.layers


def test_split_indices_are_disjoint_stratified_and_keep_groups_together() -> None:
    labels = [1] * 40 + [0] * 60
    groups = [i // 2 for i in range(100)]  # pairs: a prompt and its framed variant
    parts = split_indices(labels, (0.15, 0.2, 0.2), seed=3, groups=groups)
    every = [i for idx in parts.values() for i in idx]
    assert sorted(every) == list(range(100))  # a partition: disjoint and complete
    for idx in parts.values():
        assert {groups[i] for i in idx}.isdisjoint({groups[i] for k, o in parts.items() if o is not idx for i in o})
    # 20 harmful and 30 benign groups: select 3+4 (x2 items), calibrate 4+6, test 4+6
    assert {k: (sum(labels[i] for i in v), len(v)) for k, v in parts.items()} == {
        "fit": (18, 46),
        "select": (6, 14),
        "calibrate": (8, 20),
        "test": (8, 20),
    }
    assert split_indices(labels, (0.15, 0.2, 0.2), seed=3, groups=groups) == parts
    assert split_indices(labels, (0.15, 0.2, 0.2), seed=4, groups=groups) != parts


def test_threshold_is_calibrated_on_its_own_split_and_the_report_on_another() -> None:
    gen = torch.Generator().manual_seed(0)
    n = 400
    labels = [int(i % 3 == 0) for i in range(n)]
    y = torch.tensor(labels, dtype=torch.float32)
    noise = torch.randn(n, 2, 8, generator=gen)
    noise[:, 1, 0] += 1.6 * y  # layer 1 carries a noisy signal; layer 0 none
    config = ProbeConfig(kind="logistic", epochs=40, seed=1, min_threshold=0.0, target_fpr=0.05)
    probe, report = train_probe_on_features(noise, labels, [0, 1], config, layer_candidates=[(0,), (1,)])
    assert report.layers == (1,)
    assert [c["layers"] for c in report.candidates] == [[0], [1]]
    parts = split_indices(labels, config.split, config.seed)
    assert set(parts["test"]).isdisjoint(parts["select"] + parts["calibrate"] + parts["fit"])
    feats = noise[:, 1:]
    p = {k: probe.predict_proba_features(feats[v]).tolist() for k, v in parts.items()}
    yy = {k: [labels[i] for i in v] for k, v in parts.items()}
    # the threshold is the lowest calibrate-split score whose FPR there meets the target ...
    assert report.threshold == probe.threshold == tpr_at_fpr(p["calibrate"], yy["calibrate"], 0.05)[1]
    cal_neg = [pi for pi, t in zip(p["calibrate"], yy["calibrate"]) if not t]
    assert report.calibrate_fpr == sum(pi >= probe.threshold for pi in cal_neg) / len(cal_neg) <= 0.05
    # ... and the reported quality is measured on the test split, which chose nothing
    test_neg = [pi for pi, t in zip(p["test"], yy["test"]) if not t]
    test_pos = [pi for pi, t in zip(p["test"], yy["test"]) if t]
    assert report.auroc == auroc(p["test"], yy["test"]) != report.calibrate_auroc
    assert report.fpr_at_threshold == sum(pi >= probe.threshold for pi in test_neg) / len(test_neg)
    assert report.tpr_at_threshold == sum(pi >= probe.threshold for pi in test_pos) / len(test_pos)
    assert report.n_test == len(parts["test"])
    assert report.n_calibrate == len(parts["calibrate"])


def test_training_is_deterministic(tiny) -> None:
    model, tokenizer = tiny
    harmful, benign = _planted(20)
    config = ProbeConfig(layers=(2,), epochs=10)
    a, _ = train_probe(model, tokenizer, harmful, benign, config)
    b, _ = train_probe(model, tokenizer, harmful, benign, config)
    assert a.predict_proba(model, tokenizer, harmful[:4]) == b.predict_proba(model, tokenizer, harmful[:4])


def test_auroc_and_tpr_at_fpr() -> None:
    assert auroc([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]) == 1.0
    assert auroc([0.1, 0.2, 0.9, 0.8], [1, 1, 0, 0]) == 0.0
    assert auroc([0.5, 0.5, 0.5, 0.5], [1, 0, 1, 0]) == 0.5
    assert auroc([0.9, 0.4, 0.6, 0.1], [1, 1, 0, 0]) == 0.75
    with pytest.raises(ValueError):
        auroc([0.1, 0.2], [1, 1])
    scores = [0.95, 0.9, 0.7, 0.3] + [0.8] + [0.1] * 19  # 4 harmful, 20 benign
    labels = [1] * 4 + [0] * 20
    assert tpr_at_fpr(scores, labels, 0.05) == (1.0, 0.3)  # 1 false positive in 20 = 5 %
    assert tpr_at_fpr(scores, labels, 0.0) == (0.5, 0.9)


def test_risk_from_p() -> None:
    assert risk_from_p(0.0) == 1.0
    assert risk_from_p(1.0) == 5.0
    assert risk_from_p(0.5) == 3.0
    assert risk_from_p(0.7, "binary", threshold=0.7) == 5.0
    assert risk_from_p(0.69, "binary", threshold=0.7) == 1.0
    with pytest.raises(ValueError):
        risk_from_p(0.5, "odd")  # type: ignore[arg-type]


def test_threshold_for_recall_is_the_highest_reaching_the_target() -> None:
    harmful = [0.99, 0.95, 0.9, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2, 0.05]
    labels = [1] * 10 + [0] * 3
    scores = harmful + [0.7, 0.1, 0.01]
    assert threshold_for_recall(scores, labels, 0.9) == 0.2  # 9 of 10 at or above it
    assert threshold_for_recall(scores, labels, 0.91) == 0.05  # 9 of 10 no longer reach it
    assert threshold_for_recall(scores, labels, 0.5) == 0.6
    assert threshold_for_recall(scores, labels, 1.0) == 0.05
    assert threshold_for_recall([0.4, 0.4, 0.4, 0.1], [1, 1, 1, 0], 0.5) == 0.4  # ties only add recall
    with pytest.raises(ValueError):
        threshold_for_recall([0.1, 0.2], [0, 0], 0.9)
    with pytest.raises(ValueError):
        threshold_for_recall(scores, labels, 0.0)


def test_the_weighting_threshold_reaches_the_recall_target_on_its_split() -> None:
    """A noisy synthetic split (the reporting threshold misses harmful prompts): the
    weighting threshold, set on the calibrate split, keeps >= 98 % of its harmful prompts,
    lies below the reporting one, and its recall and false flags are measured on test."""
    gen = torch.Generator().manual_seed(0)
    n = 600
    labels = [int(i % 3 == 0) for i in range(n)]
    x = torch.randn(n, 1, 8, generator=gen)
    x[:, 0, 0] += 1.6 * torch.tensor(labels, dtype=torch.float32)
    config = ProbeConfig(kind="logistic", epochs=40, seed=1, min_threshold=0.0, target_fpr=0.05, target_recall=0.98)
    probe, report = train_probe_on_features(x, labels, [0], config)
    parts = split_indices(labels, config.split, config.seed)
    p = {k: probe.predict_proba_features(x[v]).tolist() for k, v in parts.items()}
    pos = {k: [pi for pi, i in zip(p[k], parts[k]) if labels[i]] for k in parts}
    neg = {k: [pi for pi, i in zip(p[k], parts[k]) if not labels[i]] for k in parts}
    assert (
        report.weight_threshold
        == probe.weight_threshold
        == threshold_for_recall(p["calibrate"], [labels[i] for i in parts["calibrate"]], 0.98)
    )
    assert report.calibrate_weight_recall == sum(pi >= report.weight_threshold for pi in pos["calibrate"]) / len(
        pos["calibrate"]
    )
    assert report.calibrate_weight_recall >= 0.98 > report.calibrate_tpr  # the reporting verdict misses some
    assert report.weight_threshold < report.threshold
    assert report.calibrate_weight_fpr >= report.calibrate_fpr
    assert report.weight_recall == sum(pi >= report.weight_threshold for pi in pos["test"]) / len(pos["test"])
    assert report.weight_fpr == sum(pi >= report.weight_threshold for pi in neg["test"]) / len(neg["test"])
    assert probe.weighting == Weighting(report.weight_threshold, 0.98, report.weight_recall, report.weight_fpr)
    assert report.to_dict()["target_recall"] == 0.98


def test_graded_risk_is_monotone_hits_its_anchors_and_stays_in_range() -> None:
    t_w, t_r = 0.2, 0.7
    below = math.nextafter(t_r, 0.0)
    grid = sorted({i / 1000 for i in range(1001)} | {t_w, t_r, below, math.nextafter(t_w, 1.0)})
    risks = [graded_risk(p, t_r, t_w) for p in grid]
    assert all(a <= b for a, b in zip(risks, risks[1:]))  # monotone
    assert all(1.0 <= r <= 5.0 for r in risks)
    assert graded_risk(0.0, t_r, t_w) == 1.0
    assert graded_risk(t_w, t_r, t_w) == pytest.approx(WEIGHTING_RISK) == 3.5
    assert graded_risk((t_w + t_r) / 2, t_r, t_w) == pytest.approx(3.75)
    assert FLAG_THRESHOLD - 1e-9 < graded_risk(below, t_r, t_w) < FLAG_THRESHOLD  # 4 from below ...
    assert graded_risk(t_r, t_r, t_w) == graded_risk(1.0, t_r, t_w) == 5.0  # ... 5 from the reporting verdict on
    # the flag (risk >= 4) is exactly the reporting verdict, and graded never lies below binary
    assert all((r >= FLAG_THRESHOLD) == (p >= t_r) for p, r in zip(grid, risks))
    assert all(r >= risk_from_p(p, "binary", t_r) for p, r in zip(grid, risks))
    # the weights: a line the reporting verdict misses but the weighting one catches gets
    # at least the middle KL weight (binary: the floor); a flagged line keeps binary's
    assert kl_weights(graded_risk(t_w, t_r, t_w))[1] == pytest.approx(0.5)
    assert kl_weights(risk_from_p(t_w, "binary", t_r))[1] == pytest.approx(0.1)
    assert kl_weights(graded_risk(t_r, t_r, t_w)) == kl_weights(risk_from_p(t_r, "binary", t_r))
    # degenerate thresholds: no weighting anchor at or above the reporting one; one at 0 starts at 3.5
    assert graded_risk(0.35, 0.7, 0.9) == pytest.approx(2.5) == risk_from_p(0.35, "graded", 0.7)
    assert graded_risk(0.0, 0.7, 0.0) == WEIGHTING_RISK
    assert graded_risk(0.99, 1.0, 0.5) < FLAG_THRESHOLD
    assert risk_from_p(t_w, "graded", t_r, t_w) == graded_risk(t_w, t_r, t_w)


def test_a_probe_file_without_a_weighting_threshold_loads(tmp_path: Path, caplog) -> None:
    x, labels = _planted_features()
    probe, report = train_probe_on_features(x, labels, [0], ProbeConfig(hidden_units=16, epochs=5, heads=2))
    assert probe.weighting is not None
    probe.save(tmp_path / "new")
    assert Probe.load(tmp_path / "new").weighting == probe.weighting  # round-trips
    meta = json.loads((tmp_path / "new" / "probe.json").read_text())
    del meta["weighting"]
    (tmp_path / "new" / "probe.json").write_text(json.dumps(meta))
    with caplog.at_level("WARNING", logger="safety.probe.heads"):
        old = Probe.load(tmp_path / "new")
    assert old.weighting is None
    assert old.weight_threshold == old.threshold == probe.threshold
    assert "no weighting threshold" in caplog.text
    assert old.risk(probe.threshold, "graded") == 5.0
    assert old.risk(probe.threshold / 2, "graded") == pytest.approx(2.5)  # 1 + 3 * p / threshold
    assert torch.equal(old.predict_proba_features(x), probe.predict_proba_features(x))


def test_probe_rejects_features_of_another_model(tiny) -> None:
    model, tokenizer = tiny
    harmful, benign = _planted(10)
    probe, _ = train_probe(model, tokenizer, harmful, benign, ProbeConfig(layers=(1,), epochs=2))
    with pytest.raises(ValueError, match="wrong model"):
        probe.predict_proba_features(torch.zeros(3, 1, model.config.hidden_size + 1))
    with pytest.raises(ValueError, match="lack layers"):
        probe.predict_proba_features(torch.zeros(3, 1, model.config.hidden_size), feature_layers=[2])
