"""``guardtune-ops``: audit, jobs, orgs and keys, webhooks, releases, models, probes and evaluation.

Each command group lives in its own module of :mod:`ops`. The database commands import only
``core``; ``probe``, ``eval`` and ``models onboard`` import ``safety`` / the pipeline
inside the command, so the CLI starts without torch.
"""

from __future__ import annotations

import typer

from core.logging import configure_logging
from ops import audit, jobs, keys, models, orgs, probe, release, storage, webhooks
from ops import eval as eval_cmd

app = typer.Typer(help="guardtune ops CLI.", no_args_is_help=True, add_completion=False)
app.add_typer(orgs.app, name="orgs")
app.add_typer(keys.app, name="keys")
app.add_typer(webhooks.app, name="webhooks")
app.add_typer(jobs.app, name="jobs")
app.add_typer(audit.app, name="audit")
app.add_typer(release.app, name="release")
app.add_typer(storage.app, name="storage")
app.add_typer(models.app, name="models")
app.add_typer(probe.app, name="probe")
app.add_typer(eval_cmd.app, name="eval")


@app.callback()
def main() -> None:
    """Operate a guardtune deployment. Reads GUARDTUNE_DATABASE_URL like the services.

    Mutating commands record who acted in the audit log as ops:<$USER> (or --actor /
    GUARDTUNE_OPS_ACTOR). Logs go to stderr, as the services' do, so that stdout (--json)
    holds only the command's output.
    """
    configure_logging()


if __name__ == "__main__":
    app()
