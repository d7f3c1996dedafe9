"""What several firegate processes really share, and nothing that does I/O of its own: TOML
config validation whose errors name the key (:mod:`common.config`) and back-off
(:mod:`common.backoff`). Standard library only; it imports no other firegate package."""
