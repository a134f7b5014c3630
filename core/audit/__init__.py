"""The audit log domain: the hash-chained records (:mod:`.service`), their queries
(:mod:`.repository`) and the signed anchors kept outside the database (:mod:`.anchors`)."""
