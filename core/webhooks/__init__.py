"""Webhooks: an organization's endpoints (:mod:`.endpoints`) receive its jobs' terminal
events (:mod:`.events`) in OpenAI's shape, signed per Standard Webhooks; the worker's
delivery task (``worker.webhooks``) sends them with retries and logs every attempt."""
