"""The organizations domain: organizations and their API keys (:mod:`.apikeys`: key
material; :mod:`.repository`: queries; :mod:`.service`: the audited changes), used by the
admin API, ops and the demo alike."""
