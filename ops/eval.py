"""``guardtune-ops eval``: measure a model's (or adapter's) attack success rate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from core.settings import get_settings
from ops.modelload import load_model
from ops.output import echo_json, err_console, fail, handle_errors, progress_bar
from ops.probe import ModelOpt

if TYPE_CHECKING:
    from safety.evaluate import GenerationRecord
    from safety.judge import Judge
    from safety.prompt_sets import Prompt

app = typer.Typer(help="Safety evaluation.", no_args_is_help=True)

BUILTIN = "builtin:"


def load_prompts(spec: str, limit: int | None) -> list[Prompt]:
    """Harmful prompts from a file (AdvBench/HarmBench/StrongREJECT CSV, txt, JSONL) or ``builtin:NAME``."""
    from safety.prompt_sets import load_builtin, load_prompt_file

    try:
        if spec.startswith(BUILTIN):
            prompts = load_builtin(spec[len(BUILTIN) :])
        else:
            path = Path(spec)
            if not path.is_file():
                raise fail(f"{spec}: no such file")
            prompts = load_prompt_file(path, label="harmful")
    except (ValueError, KeyError) as exc:
        raise fail(str(exc).strip("'\"")) from None
    prompts = prompts[:limit] if limit else prompts
    if not prompts:
        raise fail(f"{spec}: no prompts")
    return prompts


def make_judge() -> Judge | None:
    """The configured judge (endpoint or local model, ``safety.judge.judge_from_settings``), or None."""
    from safety.judge import judge_from_settings

    return judge_from_settings(get_settings())


@app.command("asr")
@handle_errors
def asr(
    model: ModelOpt,
    prompts: Annotated[str, typer.Option("--prompts", help="Harmful prompts file, or builtin:harmful_eval.")],
    adapter: Annotated[
        Path | None,
        typer.Option(
            "--adapter", exists=True, file_okay=False, help="A PEFT LoRA adapter directory on top of --model."
        ),
    ] = None,
    max_new_tokens: Annotated[
        int | None, typer.Option("--max-new-tokens", min=1, help="Default: GUARDTUNE_EVAL_MAX_NEW_TOKENS.")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", min=1, help="Default: GUARDTUNE_EVAL_BATCH_SIZE.")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N prompts.")] = None,
    no_judge: Annotated[
        bool, typer.Option("--no-judge", help="Refusal keywords only, even with a judge configured.")
    ] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Also write every generation as JSONL here.")
    ] = None,
) -> None:
    """Greedy answers to harmful prompts; print a JSON summary (asr_keyword, asr_judge with a judge, n)."""
    from safety.evaluate import asr_summary, evaluate_asr

    settings = get_settings()
    items = load_prompts(prompts, limit)
    judge = None if no_judge else make_judge()
    model_obj, tokenizer = load_model(model, adapter)
    tokens = max_new_tokens or settings.eval_max_new_tokens
    batch_size = batch_size or settings.eval_batch_size
    records: list[GenerationRecord] = []
    unparsed = 0
    try:
        with progress_bar() as progress:
            task = progress.add_task("generating" + (" and judging" if judge else ""), total=len(items))
            for start in range(0, len(items), batch_size):
                chunk = items[start : start + batch_size]
                report = evaluate_asr(
                    model_obj, tokenizer, chunk, judge=judge, max_new_tokens=tokens, batch_size=batch_size
                )
                records.extend(report.generations)
                unparsed += report.judge_unparsed
                progress.advance(task, len(chunk))
    finally:
        if judge is not None:
            judge.close()
    summary = {
        "model": model,
        "adapter": str(adapter) if adapter else None,
        "prompts": prompts,
        "max_new_tokens": tokens,
        "judge": settings.judge_model if judge else None,
        **asr_summary(records, judged=judge is not None),
    }
    if judge is not None:
        summary["judge_unparsed"] = unparsed
    if output:
        with output.open("w", encoding="utf-8") as f:
            for r in records:
                f.write(
                    json.dumps(
                        {
                            "prompt": r.prompt,
                            "category": r.category,
                            "response": r.response,
                            "refused": r.refused,
                            "judge_score": r.judge_score,
                        }
                    )
                    + "\n"
                )
        err_console().print(f"{len(records)} generations → {output}")
    echo_json(summary)
