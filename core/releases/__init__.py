"""The releases domain: released fine-tuned adapters, their names and digests
(:mod:`.digests`), their queries (:mod:`.repository`) and release / approve / revoke
(:mod:`.service`)."""
