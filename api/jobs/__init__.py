"""The jobs domain: routes, service, repository and wire schemas."""
