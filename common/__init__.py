"""What several firegate processes really share, and nothing that does I/O of its own: TOML
config validation whose errors name the key (:mod:`common.config`), back-off
(:mod:`common.backoff`) and whether a pid is alive (:mod:`common.proc`). Standard library only;
it imports no other firegate package."""
