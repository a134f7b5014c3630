"""Activation-probe quality and scan throughput on the default base model.

What it measures
* **Quality.** The probe (``safety.probe``) is trained ONLY on the project's own prompt
  sets (``harmful_train`` vs ``benign_train``); the layer set is chosen by AUROC on a
  stratified held-out split of those sets (ties: lower log-loss). It is then evaluated
  on public benchmark prompts it never saw, read from ``--data-dir``: AdvBench +
  HarmBench behaviours (harmful) vs MT-Bench ``turns[0]`` + a seeded GSM8K sample
  (benign). Reported per layer choice (single layers and means over layer ranges):
  held-out AUROC, external AUROC, TPR at 5 % FPR (threshold set on the external
  benign prompts, i.e. the best achievable operating point), TPR / FPR at the probe's
  own operating threshold (0.5, raised if needed to keep the held-out FPR within 5 %:
  the verdict a scan uses),
  and a per-source breakdown. Also: the built-in eval sets (``harmful_eval`` vs
  ``benign_eval``), the logistic head for comparison, and with ``--pool-ablation``
  mean pooling over all prompt tokens (template included) instead of content pooling.
* **Throughput** (examples/s, same prompts, same batch size): a plain full forward pass
  of the model (baseline: logits for every token, as any HF forward computes them) and
  of its decoder without the LM head, ``Probe.predict_proba`` (stops after its deepest
  layer),
  ``scan_dataset`` with the probe on chat examples, ``LocalJudge`` (the same model
  reading the rubric prompt), and ``OpenAICompatibleJudge`` against a local fake
  OpenAI-compatible server answering instantly and after a simulated 0.5 s latency
  (synthetic: it measures the client, not a real judge).

    python bench/probe_quality.py                  # ~15-25 min on 2 shared cores
    python bench/probe_quality.py --pool-ablation  # + mean-pooling ablation
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, RESULTS_DIR, git_info, machine_info, print_table, ratio  # noqa: E402
from safety.base_models import DEFAULT_BASE_MODEL, load_base_model  # noqa: E402
from safety.generation import pad_batch, pad_token_id, position_ids_from_mask, render_prompt  # noqa: E402
from safety.judge import LocalJudge, OpenAICompatibleJudge  # noqa: E402
from safety.probe import (  # noqa: E402
    Probe,
    ProbeConfig,
    auroc,
    default_layers,
    extract_features,
    layer_candidates,
    tpr_at_fpr,
    train_probe_on_features,
)
from safety.prompt_sets import load_builtin, load_prompt_file, load_refusals  # noqa: E402
from safety.scan import scan_dataset  # noqa: E402

TARGET_AUROC = 0.95
TARGET_FPR = 0.05


def name_of(layers: Sequence[int]) -> str:
    return str(layers[0]) if len(layers) == 1 else f"{layers[0]}-{layers[-1]}"


def load_sets(data_dir: Path, gsm8k_n: int, seed: int) -> dict[str, list[str]]:
    gsm8k = load_prompt_file(data_dir / "gsm8k_train.jsonl")
    return {
        "harmful_train": [p.text for p in load_builtin("harmful_train")],
        "benign_train": [p.text for p in load_builtin("benign_train")],
        "harmful_eval": [p.text for p in load_builtin("harmful_eval")],
        "benign_eval": [p.text for p in load_builtin("benign_eval")],
        "advbench": [p.text for p in load_prompt_file(data_dir / "advbench_harmful_behaviors.txt")],
        "harmbench": [p.text for p in load_prompt_file(data_dir / "harmbench_behaviors_text_val.csv")],
        "mtbench": [p.text for p in load_prompt_file(data_dir / "mt_bench_questions.jsonl")],
        "gsm8k": [p.text for p in random.Random(seed).sample(gsm8k, min(gsm8k_n, len(gsm8k)))],
    }


HARMFUL_EXT = ("advbench", "harmbench")
BENIGN_EXT = ("mtbench", "gsm8k")


def external_metrics(probe: Probe, feats: dict[str, torch.Tensor], layers: Sequence[int]) -> dict[str, Any]:
    """AUROC / TPR on the external sets, overall and per source; built-in eval AUROC."""
    p = {name: probe.predict_proba_features(feats[name], layers).tolist() for name in feats}
    harmful = [x for n in HARMFUL_EXT for x in p[n]]
    benign = [x for n in BENIGN_EXT for x in p[n]]
    scores, labels = harmful + benign, [1] * len(harmful) + [0] * len(benign)
    tpr, _ = tpr_at_fpr(scores, labels, TARGET_FPR)
    out: dict[str, Any] = {
        "auroc": auroc(scores, labels),
        "tpr_at_5pct_fpr": tpr,
        "at_probe_threshold": {
            "tpr": sum(x >= probe.threshold for x in harmful) / len(harmful),
            "fpr": sum(x >= probe.threshold for x in benign) / len(benign),
        },
        "builtin_eval_auroc": auroc(
            p["harmful_eval"] + p["benign_eval"], [1] * len(p["harmful_eval"]) + [0] * len(p["benign_eval"])
        ),
    }
    for n in HARMFUL_EXT:
        out[f"auroc_{n}_vs_benign"] = auroc(p[n] + benign, [1] * len(p[n]) + [0] * len(benign))
    for n in BENIGN_EXT:
        out[f"auroc_harmful_vs_{n}"] = auroc(harmful + p[n], [1] * len(harmful) + [0] * len(p[n]))
        out[f"fpr_{n}_at_probe_threshold"] = sum(x >= probe.threshold for x in p[n]) / len(p[n])
    return out


def quality(
    model: Any, tokenizer: Any, sets: dict[str, list[str]], config: ProbeConfig, kinds: Sequence[str]
) -> tuple[dict[str, Any], Probe]:
    """Train per candidate (and the selection run); evaluate on the external sets."""
    num_layers = model.config.num_hidden_layers
    candidates = layer_candidates(num_layers)
    needed = sorted({layer for c in candidates for layer in c})
    t0 = time.perf_counter()
    feats = {
        name: extract_features(
            model, tokenizer, texts, needed, pool=config.pool,
            batch_size=config.feature_batch_size, max_len=config.max_len,
        )
        for name, texts in sets.items()
    }
    extract_s = time.perf_counter() - t0
    train_x = torch.cat([feats["harmful_train"], feats["benign_train"]])
    labels = [1] * len(sets["harmful_train"]) + [0] * len(sets["benign_train"])
    evals = {k: v for k, v in feats.items() if k not in ("harmful_train", "benign_train")}

    result: dict[str, Any] = {"pool": config.pool, "feature_extraction_s": extract_s, "kinds": {}}
    chosen_probe: Probe | None = None
    for kind in kinds:
        cfg = dataclasses.replace(config, kind=kind)
        rows = []
        for cand in candidates:
            probe, report = train_probe_on_features(train_x, labels, needed, cfg, layer_candidates=[cand])
            rows.append({"layers": name_of(cand), "val_auroc": report.auroc,
                         "val_log_loss": report.candidates[0]["val_log_loss"],
                         **external_metrics(probe, evals, needed)})
        probe, report = train_probe_on_features(train_x, labels, needed, cfg, layer_candidates=candidates)
        chosen = name_of(report.layers)
        default = name_of(default_layers(num_layers))
        result["kinds"][kind] = {
            "chosen_layers": chosen,
            "chosen": next(r for r in rows if r["layers"] == chosen),
            "default_layers": default,
            "default": next(r for r in rows if r["layers"] == default),
            "probe_threshold": report.threshold,
            "heldout": {k: v for k, v in report.to_dict().items() if k != "candidates"},
            "per_layer_choice": rows,
        }
        if kind == config.kind:
            chosen_probe = probe
        print(f"\n[{config.pool} pooling, {kind}] chosen by held-out AUROC: layers {chosen}")
        print_table(
            ["layers", "val AUROC", "ext AUROC", "TPR@5%FPR", "TPR@thr", "FPR@thr", "AdvB", "HarmB", "vs MT", "vs GSM", "own eval"],
            [[r["layers"], r["val_auroc"], r["auroc"], r["tpr_at_5pct_fpr"], r["at_probe_threshold"]["tpr"],
              r["at_probe_threshold"]["fpr"], r["auroc_advbench_vs_benign"], r["auroc_harmbench_vs_benign"],
              r["auroc_harmful_vs_mtbench"], r["auroc_harmful_vs_gsm8k"], r["builtin_eval_auroc"]] for r in rows],
            digits=3,
        )  # fmt: skip
    assert chosen_probe is not None
    return result, chosen_probe


class _FakeJudgeServer(BaseHTTPRequestHandler):
    latency_s = 0.0

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(self.latency_s)
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": "#thereason: ok\n#thescore: 1"}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def _rate(n: int, fn: Callable[[], Any]) -> dict[str, float]:
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    return {"n": n, "seconds": seconds, "examples_per_s": n / seconds}


def plain_forward(model: Any, tokenizer: Any, prompts: Sequence[str], batch_size: int, max_len: int) -> None:
    """The baseline: forward passes of ``model`` (the full LM, or its decoder without the
    LM head) over the same rendered, length-sorted prompts."""
    encoded = sorted(
        (tokenizer(render_prompt(tokenizer, p), add_special_tokens=False)["input_ids"][-max_len:] for p in prompts),
        key=len,
    )
    for start in range(0, len(encoded), batch_size):
        ids, mask = pad_batch(encoded[start : start + batch_size], pad_token_id(tokenizer), "right")
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask), use_cache=False)


def throughput(model: Any, tokenizer: Any, probe: Probe, prompts: list[str], args: argparse.Namespace) -> dict[str, Any]:
    refusals = load_refusals()
    examples = [
        {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": refusals[i % len(refusals)]}]}
        for i, p in enumerate(prompts)
    ]
    pairs = [(ex["messages"][0]["content"], ex["messages"][1]["content"]) for ex in examples]
    bs = args.batch_size
    out: dict[str, Any] = {"batch_size": bs, "probe_layers": list(probe.layers)}
    decoder = model.get_decoder()
    plain_forward(model, tokenizer, prompts[:bs], bs, probe.max_len)  # warm-up
    out["plain_forward"] = _rate(len(prompts), lambda: plain_forward(model, tokenizer, prompts, bs, probe.max_len))
    out["plain_forward_no_lm_head"] = _rate(
        len(prompts), lambda: plain_forward(decoder, tokenizer, prompts, bs, probe.max_len)
    )
    out["probe_predict"] = _rate(len(prompts), lambda: probe.predict_proba(model, tokenizer, prompts, bs))
    out["probe_scan"] = _rate(
        len(examples), lambda: scan_dataset(examples, probe=probe, model=model, tokenizer=tokenizer, batch_size=bs)
    )
    n_local = min(args.local_judge_n, len(pairs))
    local = LocalJudge(model, tokenizer, batch_size=4)
    out["local_judge"] = _rate(n_local, lambda: local.score(pairs[:n_local]))

    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeJudgeServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        for latency in (0.0, 0.5):
            _FakeJudgeServer.latency_s = latency
            judge = OpenAICompatibleJudge(url, "sk-bench", "fake-judge", max_concurrency=8)
            n = len(pairs) if latency == 0 else min(64, len(pairs))
            out[f"http_judge_fake_{latency:g}s_c8"] = _rate(n, lambda: judge.score(pairs[:n]))
            judge.close()
    finally:
        server.shutdown()
        server.server_close()

    base = out["plain_forward"]["examples_per_s"]
    out["ratios_vs_plain_forward"] = {
        k: ratio(v["examples_per_s"], base) for k, v in out.items() if isinstance(v, dict) and "examples_per_s" in v
    }
    print("\nthroughput (examples/s)")
    print_table(["path", "n", "examples/s", "x plain forward"],
                [[k, v["n"], v["examples_per_s"], out["ratios_vs_plain_forward"][k]]
                 for k, v in out.items() if isinstance(v, dict) and "examples_per_s" in v])  # fmt: skip
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--cache-dir", type=Path, default=REPO / "var" / "models")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "probe_quality.json")
    parser.add_argument("--gsm8k-n", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--throughput-n", type=int, default=96)
    parser.add_argument("--local-judge-n", type=int, default=8)
    parser.add_argument("--pool-ablation", action="store_true", help="also evaluate mean pooling over all tokens")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    model, tokenizer = load_base_model(DEFAULT_BASE_MODEL, cache_dir=args.cache_dir)
    sets = load_sets(args.data_dir, args.gsm8k_n, args.seed)
    config = ProbeConfig(seed=args.seed, feature_batch_size=args.batch_size)
    print(f"model {DEFAULT_BASE_MODEL}: {model.config.num_hidden_layers} layers; "
          + ", ".join(f"{k} {len(v)}" for k, v in sets.items()))  # fmt: skip

    main_result, probe = quality(model, tokenizer, sets, config, kinds=(config.kind, "logistic"))
    results = {config.pool: main_result}
    if args.pool_ablation:
        ablation = dataclasses.replace(config, pool="mean")
        results["mean"], _ = quality(model, tokenizer, sets, ablation, kinds=(config.kind,))

    rng = random.Random(args.seed)
    mix = [t for n in (*HARMFUL_EXT, *BENIGN_EXT) for t in sets[n]]
    speed = throughput(model, tokenizer, probe, rng.sample(mix, min(args.throughput_n, len(mix))), args)

    chosen = main_result["kinds"][config.kind]
    headline = {
        "config": dataclasses.asdict(config),
        "chosen_layers": chosen["chosen_layers"],
        "external_auroc": chosen["chosen"]["auroc"],
        "external_tpr_at_5pct_fpr": chosen["chosen"]["tpr_at_5pct_fpr"],
        "target_auroc": TARGET_AUROC,
        "target_met": chosen["chosen"]["auroc"] >= TARGET_AUROC,
        "probe_vs_plain_forward_throughput": speed["ratios_vs_plain_forward"]["probe_predict"],
    }
    doc = {
        "benchmark": "probe_quality",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": "python bench/probe_quality.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "git": git_info(),
        "machine": machine_info(),
        "model": DEFAULT_BASE_MODEL,
        "num_layers": model.config.num_hidden_layers,
        "data": {
            "train": {"harmful_train": len(sets["harmful_train"]), "benign_train": len(sets["benign_train"])},
            "external_harmful": {n: len(sets[n]) for n in HARMFUL_EXT},
            "external_benign": {n: len(sets[n]) for n in BENIGN_EXT},
            "builtin_eval": {"harmful_eval": len(sets["harmful_eval"]), "benign_eval": len(sets["benign_eval"])},
            "notes": "HarmBench: behaviour text only (no ContextString), all 80 validation rows incl. copyright; "
                     f"GSM8K: {len(sets['gsm8k'])} questions sampled with seed {args.seed}.",
        },
        "headline": headline,
        "quality": results,
        "throughput": speed,
        "wall_s": time.perf_counter() - t0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    print(f"\nchosen layers {headline['chosen_layers']}: external AUROC {headline['external_auroc']:.3f} "
          f"(target {TARGET_AUROC}: {'met' if headline['target_met'] else 'NOT met'}), "
          f"TPR@5%FPR {headline['external_tpr_at_5pct_fpr']:.3f}; probe {headline['probe_vs_plain_forward_throughput']:.2f}x "
          f"the throughput of a plain forward pass; wrote {args.out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
