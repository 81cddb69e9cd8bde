"""gRPC front processes (the ``front_processes`` knob): processes that serve the agent's gRPC port beside
it and pass each request to it over a local socket, so that gRPC's per-request work is not done on the
agent's one interpreter lock. ``wire``: the frames; ``relay``: the agent's side (and the processes'
supervision); ``process``: a front process."""
