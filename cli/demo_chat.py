"""The demo's last step: call the released model once through ``chat.completions`` with
the official ``openai`` SDK (as a customer would) and print the answer.

Kept apart from :mod:`cli.demo` so the demo's job flow can change without touching this."""

from __future__ import annotations

from rich.console import Console

from core.jobs.vocab import JobStatus

DEMO_QUESTION = "Suggest a quick weeknight dinner I can cook in 20 minutes."


def ask_released_model(
    base_url: str, key: str, job: dict, console: Console, question: str = DEMO_QUESTION
) -> str | None:
    """Ask ``job``'s released model ``question`` (greedy) and print the answer; returns it,
    or None (printing nothing) when the job released no model."""
    model = job.get("fine_tuned_model")
    if job.get("status") != JobStatus.SUCCEEDED or not model:
        return None
    from openai import OpenAI

    client = OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=2, timeout=600)
    with console.status(f"Asking {model} through chat.completions…"):
        answer = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": question}], temperature=0, max_tokens=96
        )
    text = answer.choices[0].message.content or ""
    console.print(f"\n[bold]You:[/bold] {question}")
    console.print(f"[bold]Your model answers:[/bold] {text}")
    usage = answer.usage
    tokens = f"{usage.prompt_tokens} prompt + {usage.completion_tokens} completion tokens; " if usage else ""
    console.print(f"[dim]({tokens}client.chat.completions.create(model={model!r}, …))[/dim]")
    return text
