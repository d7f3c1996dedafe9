"""What several firegate processes really share, and nothing that does I/O on its own
initiative (no threads, sockets or servers; a helper touches only the path its caller gives):
TOML config validation whose errors name the key (:mod:`common.config`), back-off
(:mod:`common.backoff`), whether a pid is alive (:mod:`common.proc`) and owner-only state
files and directories (:mod:`common.files`). Standard library only; it imports no other
firegate package."""
