"""The job pipeline: validate → scan → train → evaluate → gate → release.

Each stage is a plain function ``run(job_id) -> next stage name | None`` that opens its
own sessions, is idempotent (safe to run again after a crash) and never overwrites a
terminal status; :mod:`worker.tasks` wraps each as a Celery task.
"""
