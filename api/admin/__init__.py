"""The admin domain: routes, service, repository and wire schemas."""
