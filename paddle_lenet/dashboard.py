"""The VisualDL dashboard over the run folders, working for every browser language and fully offline.

Why not plain ``visualdl --logdir output``: VisualDL 2.5 picks its page language from the browser's
Accept-Language among English and Chinese only and answers HTTP 500 to everyone else (a German or French
browser, curl, headless Chromium). :func:`make_app` wraps VisualDL's own app with a tiny WSGI layer that
adds English as the last-choice language, so Chinese browsers still get Chinese. Telemetry (a call home
at start-up) is off.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from .errors import UserError


def _with_language_fallback(wsgi_app: Any) -> Any:
    def app(environ: dict, start_response: Any) -> Any:
        langs = environ.get("HTTP_ACCEPT_LANGUAGE", "")
        if not any(code in langs.lower() for code in ("en", "zh")):
            environ["HTTP_ACCEPT_LANGUAGE"] = (langs + ", " if langs.strip() else "") + "en;q=0.01"
        return wsgi_app(environ, start_response)

    return app


def make_app(logdir: str, host: str = "127.0.0.1", port: int = 8040, language: str | None = None) -> Any:
    """VisualDL's Flask app over ``logdir`` (every run folder below it), with the language fallback."""
    if not os.path.isdir(logdir):
        raise UserError(f"--logdir '{logdir}' is not a folder; train a run first (tools/train.py writes output/<name>/vdl)")
    from visualdl.server.app import create_app
    from visualdl.server.args import ParseArgs

    args = ParseArgs(logdir=[logdir], host=host, port=port, language=language, telemetry=False,
                     public_path="/app", api_only=False, open_browser=False)
    app = create_app(args)
    app.wsgi_app = _with_language_fallback(app.wsgi_app)
    return app


def check_logs(logdir: str) -> int:
    """Walk every VisualDL log's record frames (8-byte length + payload) without reading payloads; a frame longer
    than what is left of its file (garbage, a truncated copy) would make VisualDL allocate that length: refused,
    naming the file. Returns the number of logs."""
    import struct

    count = 0
    for folder, _, files in os.walk(logdir):
        for name in files:
            if not name.startswith("vdlrecords."):
                continue
            path = os.path.join(folder, name)
            size, pos = os.path.getsize(path), 0
            with open(path, "rb") as f:
                while pos < size:
                    head = f.read(8)
                    n = struct.unpack("Q", head)[0] if len(head) == 8 else size
                    if len(head) < 8 or n > size - pos - 8:
                        raise UserError(f"'{path}' is not a whole VisualDL log (a record claims {n:,} bytes, "
                                        f"{max(size - pos - 8, 0):,} are left); move it out of {logdir}")
                    pos += 8 + n
                    f.seek(pos)
            count += 1
    return count


def serve(logdir: str, host: str, port: int, language: str | None = None) -> None:
    import signal

    import socket

    from werkzeug.serving import make_server

    # werkzeug only prints "port in use" and exits, which VisualDL's reader threads then keep from happening:
    # try the address first, before anything starts
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            raise UserError(f"cannot listen on {host}:{port} ({e.strerror}); pass another --port") from None
    check_logs(logdir)
    app = make_app(logdir, host, port, language)
    import logging

    for name in list(logging.root.manager.loggerDict) + ["werkzeug", "visualdl", ""]:
        if name == "" or "visualdl" in name or "werkzeug" in name:  # one line per request is noise here
            logging.getLogger(name).setLevel(logging.ERROR)
    try:
        server = make_server(host, port, app, threaded=True)
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror}); pass another --port") from None
    signal.signal(signal.SIGINT, signal.default_int_handler)  # VisualDL sets SIG_DFL; we want a clean stop
    signal.signal(signal.SIGTERM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    print(f"dashboard: http://{host}:{port}/app  (runs under {os.path.abspath(logdir)}; Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        print("dashboard stopped", flush=True)
        sys.stderr.flush()
        # VisualDL's log readers run in non-daemon threads that would keep the process alive after Ctrl-C
        os._exit(0)
