"""The HTTP service: FastAPI app, OpenAI-shaped routes, auth and the dashboard. Never imports torch."""
