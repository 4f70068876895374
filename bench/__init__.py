"""The broadcast benchmark: legacy manager vs WebSocketService vs shim vs raw websockets.

Each variant runs as its own server process on 127.0.0.1 and is driven by a separate
client process; ``scripts/bench.py`` orchestrates the runs and writes the report
(see BENCHMARKS.md for the command and the results).

Modules, in dependency order::

    variants.py   the variant table and server stacks (uvicorn settings); pure data
    protocol.py   the control channel's messages and the benchmark payload; no I/O
    stats.py      percentiles and median/min/max summaries; no I/O
    servers.py    one ASGI app per variant plus the control endpoint (burst, fill, stats)
    raw.py        the raw-websockets reference server (no ASGI)
    serve.py      ``python -m bench.serve``: one variant in one process
    client.py     ``python -m bench.client``: N picows connections, bursts, stalls -> JSON
    runner.py     starts server and client processes per (variant, N, compression)
    report.py     table, ratios vs legacy, targets, JSON and PNG
"""
