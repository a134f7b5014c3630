"""``guardtune-ops``: audit, jobs, orgs and keys, releases, models."""

from __future__ import annotations

import typer

app = typer.Typer(help="guardtune ops CLI.", no_args_is_help=True, add_completion=False)


@app.callback()
def main() -> None:
    """Operate a guardtune deployment. Reads GUARDTUNE_DATABASE_URL like the services."""


if __name__ == "__main__":
    app()
