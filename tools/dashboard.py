"""Serve the VisualDL dashboard: ``python tools/dashboard.py [--logdir output] [--port 8040] [--host 127.0.0.1]``.

Every run folder below ``--logdir`` appears under its own name (``lenet``, ``pooling_zoo/max/seed_0``), with
per-step training curves, per-epoch test metrics and the HParams view. Works for any browser language
(plain ``visualdl`` answers HTTP 500 unless the browser asks for English or Chinese) and never calls home.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_lenet.cli import ArgParser, positive_int, run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = ArgParser(description="Serve the VisualDL dashboard over the run folders.")
    parser.add_argument("--logdir", default="output", help="folder holding run folders (default: output)")
    parser.add_argument("--host", default="127.0.0.1", help="127.0.0.1 (this machine only) or 0.0.0.0 (the network)")
    parser.add_argument("--port", type=positive_int, default=8040)
    parser.add_argument("--language", choices=("en", "zh"), help="force the page language (default: the browser's)")
    args = parser.parse_args(argv)
    if args.port > 65535:
        parser.error(f"--port {args.port} is not a port number (1-65535)")
    import ipaddress

    try:  # an address, not a name: resolving a name here could wait on a network that is not there
        ipaddress.ip_address(args.host if args.host != "localhost" else "127.0.0.1")
    except ValueError:
        parser.error(f"--host {args.host!r} is not an IP address; use 127.0.0.1 (this machine) or 0.0.0.0 (the network)")
    from paddle_lenet.dashboard import serve

    serve(args.logdir, args.host, args.port, args.language)
    return 0


if __name__ == "__main__":
    run(main)
