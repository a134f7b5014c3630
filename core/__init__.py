"""Settings, database models and sessions, object storage, audit log, ids, errors."""
