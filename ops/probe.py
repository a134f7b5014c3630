"""``guardtune-ops probe``: train a base model's activation probe, score prompts with it.

These commands need the ``worker`` extra (torch); ``safety`` is imported inside them so
the rest of the CLI starts fast without it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from core.settings import get_settings
from ops.modelload import default_probe_dir, load_model
from ops.output import JsonOpt, console, echo_json, err_console, fail, handle_errors, progress_bar, render_record

if TYPE_CHECKING:
    from safety.generation import PromptLike
    from safety.probe import RiskMode

T = TypeVar("T")

app = typer.Typer(
    help="Activation probes (harmful-prompt classifiers on a model's hidden states).", no_args_is_help=True
)

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Built-in name, local model directory or HF id.")]
_TEXT_KEYS = ("text", "prompt", "goal", "instruction", "question")


@app.command("train")
@handle_errors
def train(
    model: ModelOpt,
    out: Annotated[
        Path | None, typer.Option("--out", help="Where to save the probe (default: the model cache).")
    ] = None,
    harmful: Annotated[
        list[Path] | None,
        typer.Option(
            "--harmful", help="Extra harmful prompts (AdvBench/HarmBench/StrongREJECT/JSONL/txt); repeatable."
        ),
    ] = None,
    benign: Annotated[
        list[Path] | None,
        typer.Option("--benign", help="Extra benign prompts (JSONL/CSV/txt, MT-Bench, GSM8K); repeatable."),
    ] = None,
    layers: Annotated[
        list[str] | None,
        typer.Option(
            "--layers",
            help="Layer set(s) to try, e.g. 6 or 4,8; repeat (or '6;4,8') to choose by AUROC on the select split. Default: GUARDTUNE_PROBE_LAYERS.",
        ),
    ] = None,
    kind: Annotated[
        str | None, typer.Option("--kind", help="logistic or mlp (default: the recipe's, as onboarding).")
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Default: the recipe's, as onboarding.")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Train a probe by onboarding's recipe (plus any files given); print its calibrated report."""
    if kind not in (None, "logistic", "mlp"):
        raise typer.BadParameter("kind must be logistic or mlp", param_hint="--kind")
    from safety.probe_recipe import parse_layer_sets, train_recipe_answer_head, train_recipe_probe
    from safety.prompt_sets import load_prompt_file

    probe_layers = ";".join(layers) if layers else get_settings().probe_layers
    try:
        parse_layer_sets(probe_layers)
        extra_harmful = [p.text for path in harmful or [] for p in load_prompt_file(path, label="harmful")]
        extra_benign = [p.text for path in benign or [] for p in load_prompt_file(path, label="benign")]
    except ValueError as exc:
        raise fail(str(exc)) from None
    overrides: dict[str, Any] = {"seed": seed, "target_recall": get_settings().probe_target_recall}
    overrides.update({k: v for k, v in (("kind", kind), ("epochs", epochs)) if v is not None})

    model_obj, tokenizer = load_model(model)
    with err_console().status("training the probe by the onboarding recipe…"):
        probe, report = train_recipe_probe(
            model_obj, tokenizer, probe_layers, extra_harmful=extra_harmful, extra_benign=extra_benign, **overrides
        )
        head = train_recipe_answer_head(model_obj, tokenizer, probe, probe_layers, **overrides)
    directory = probe.save(out or default_probe_dir(model))
    result = {"model": model, "probe_dir": str(directory), "kind": probe.kind, **report.to_dict()}
    result["answer_head"] = {k: v for k, v in head.to_dict().items() if k != "candidates"}
    (Path(directory) / "report.json").write_text(json.dumps(result, indent=2))
    if as_json:
        echo_json(result)
        return
    render_record(
        {k: v for k, v in result.items() if k not in ("candidates", "answer_head")}, as_json=False, title="probe report"
    )
    answer = result["answer_head"]
    console().print(
        f"answer-side head: AUROC {answer['auroc']:.3f}, at threshold {answer['threshold']:.3f} "
        f"TPR {answer['tpr_at_threshold']:.1%} / FPR {answer['fpr_at_threshold']:.1%} on {answer['n_test']} held-out answers"
    )
    console().print(f"[green]probe saved to {directory}[/green]")


def _row_text(row: dict[str, Any]) -> tuple[str, PromptLike]:
    """(display text, what the probe reads) of one JSONL row."""
    if isinstance(row.get("messages"), list):
        messages = row["messages"]
        last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=None)
        if last_user is None:
            raise ValueError("a messages row has no user turn")
        convo = [{"role": m["role"], "content": m.get("content") or ""} for m in messages[: last_user + 1]]
        return convo[-1]["content"], convo
    for key in _TEXT_KEYS:
        if isinstance(row.get(key), str):
            return row[key], row[key]
    raise ValueError(f"row has none of the keys messages, {', '.join(_TEXT_KEYS)}")


def read_inputs(path: Path) -> list[tuple[str, PromptLike]]:
    """A prompt a line, or JSONL rows (``messages`` or ``text``/``prompt``/…); CSV via the prompt-set reader."""
    if path.suffix.lower() == ".csv":
        from safety.prompt_sets import load_prompt_file

        return [(p.text, p.text) for p in load_prompt_file(path, label="harmful")]
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    is_jsonl = path.suffix.lower() in (".jsonl", ".json")
    if not is_jsonl and lines:
        try:
            is_jsonl = isinstance(json.loads(lines[0]), dict)
        except json.JSONDecodeError:
            is_jsonl = False
    if not is_jsonl:
        return [(line.strip(), line.strip()) for line in lines]
    items = []
    for n, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("expected a JSON object")
            items.append(_row_text(row))
        except (ValueError, KeyError) as exc:
            raise fail(f"{path}: JSONL row {n}: {exc}") from None
    return items


def _batches(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@app.command("score")
@handle_errors
def score(
    model: ModelOpt,
    input: Annotated[
        Path, typer.Option("--input", "-i", exists=True, dir_okay=False, help="A prompt a line, or JSONL.")
    ],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="JSONL out (default: stdout).")] = None,
    probe_dir: Annotated[
        Path | None,
        typer.Option("--probe", help="Probe directory (default: where `probe train` saves for this model)."),
    ] = None,
    risk_mode: Annotated[
        str,
        typer.Option(
            "--risk-mode",
            help="calibrated (1+4p), binary (5/1 at the probe's threshold) or graded (through the weighting "
            "threshold at 3.5 and the reporting one at 4).",
        ),
    ] = "calibrated",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 16,
) -> None:
    """Score prompts with a trained probe: JSONL rows {"text", "p_harmful", "risk"}."""
    modes: dict[str, RiskMode] = {"calibrated": "calibrated", "binary": "binary", "graded": "graded"}
    if risk_mode not in modes:
        raise typer.BadParameter("risk mode must be calibrated, binary or graded", param_hint="--risk-mode")
    mode = modes[risk_mode]
    from safety.probe import Probe

    directory = probe_dir or default_probe_dir(model)
    if not (directory / "probe.json").is_file():
        raise fail(
            f"no probe in {directory}; train one with `guardtune-ops probe train --model {model} --out {directory}`"
        )
    probe = Probe.load(directory)
    items = read_inputs(input)
    model_obj, tokenizer = load_model(model)
    sink = output.open("w", encoding="utf-8") if output else None
    try:
        with progress_bar() as progress:
            task = progress.add_task("scoring", total=len(items))
            for batch in _batches(items, batch_size):
                probs = probe.predict_proba(model_obj, tokenizer, [p for _, p in batch], batch_size=batch_size)
                for (text, _), p in zip(batch, probs, strict=True):
                    line = json.dumps({"text": text, "p_harmful": round(p, 6), "risk": round(probe.risk(p, mode), 4)})
                    if sink:
                        sink.write(line + "\n")
                    else:
                        typer.echo(line)
                progress.advance(task, len(batch))
    finally:
        if sink:
            sink.close()
    if output:
        err_console().print(f"scored {len(items)} prompts → {output}")
