"""The models domain: routes, service, repository and wire schemas."""
