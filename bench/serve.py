"""Run one variant's server in this process: ``python -m bench.serve --variant NAME --port P``.

The ASGI variants run under uvicorn with their stack's settings (see
:mod:`bench.variants`); ``raw`` runs :mod:`bench.raw`. Logging is at WARNING for
everything (uvicorn, structlog), as in production: the service and the shim log
each connection at DEBUG, and printing that would be measured too.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import resource
import sys
from collections.abc import Sequence

import structlog

from .variants import STACKS, VARIANTS

__all__ = ["main"]


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
        except (ValueError, OSError):
            pass
    return soft


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serve", description=__doc__)
    parser.add_argument("--variant", required=True, choices=sorted(VARIANTS))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--cprofile", metavar="FILE", help="profile the bursts; write pstats to FILE"
    )
    args = parser.parse_args(argv)
    variant = VARIANTS[args.variant]
    raise_fd_limit()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    if variant.kind == "raw":
        from .raw import run

        logging.basicConfig(level=logging.WARNING)
        asyncio.run(run(args.port, profile=args.cprofile))
        return 0

    import uvicorn

    from .servers import build_app

    app, _ = build_app(variant, profile=args.cprofile)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=2,
        **STACKS[variant.stack].uvicorn_kwargs(),
    )
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
