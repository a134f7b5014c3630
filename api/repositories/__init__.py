"""Queries. Every lookup of an organization's data takes its ``org_id``: another
organization's ids are simply not found."""
