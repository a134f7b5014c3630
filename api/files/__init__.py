"""The files domain: routes, service, repository and wire schemas."""
