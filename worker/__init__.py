"""Celery app and tasks: the job pipeline as stages (plain functions first, tasks second)."""
