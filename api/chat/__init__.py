"""The chat domain: routes, service, repository and wire schemas."""
