"""Everything that needs torch: base models, risk estimators, the adaptive trainer,
evaluation and the release-gate policy. No database, no queue: plain Python."""
