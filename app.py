"""The web page: `python app.py`, then open http://127.0.0.1:7860."""

from __future__ import annotations

import os
import signal
import sys
import tempfile

from gan import cli


def make_parser() -> cli.argparse.ArgumentParser:
    """The command line, one flag per setting (docs/cli.md lists them)."""
    p = cli.ArgumentParser(
        prog="app.py",
        description="Serve a web page that writes numbers with the generator (for a "
        "generator of other classes than the digits: draws the classes picked).",
        formatter_class=cli.argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default=None,
                   help="a train.py --workdir or a generator.msgpack file (default: "
                   "the pretrained generator in weights/)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860)
    return p


def parse_args(argv: list[str] | None):
    return make_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not 1 <= args.port <= 65535:
        cli.fail(f"--port must be between 1 and 65535, got {args.port}")
    # SIGTERM ends the server as Ctrl-C does, so the page's files are removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: _interrupt())
    try:
        return _serve(args)
    except KeyboardInterrupt:  # before the server ran, or after it closed
        print("app.py: stopped", file=sys.stderr)
        return 130


def _serve(args) -> int:
    # No telemetry calls from a local demo (and none can leave a closed network).
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    cli.set_up_process()
    cli.check_xla_flags()
    cli.enable_compile_cache()
    from gan import webapp  # noqa: PLC0415 - --help stays instant.
    from gan.errors import CheckpointError  # noqa: PLC0415
    try:
        writer = webapp.DigitWriter.load(args.checkpoint)
    except CheckpointError as e:
        cli.fail(str(e))
    webapp.warm_up(writer)  # every program a request needs, compiled now
    # The page's downloads and Gradio's copies of uploads and outputs live in
    # folders removed when the server ends; while it runs both stay bounded
    # (webapp.KEPT_FILES, webapp.CACHE_SWEEP_S).
    with tempfile.TemporaryDirectory(prefix="cdcgan-web-") as folder:
        os.environ["GRADIO_TEMP_DIR"] = os.path.join(folder, "gradio")
        page = webapp.build(writer, os.path.join(folder, "downloads"))
        os.makedirs(os.path.join(folder, "downloads"))
        try:
            page.launch(server_name=args.host, server_port=args.port, show_error=True,
                        max_file_size=webapp.MAX_UPLOAD,
                        state_session_capacity=webapp.SESSIONS_KEPT)
        except OSError as e:
            cli.fail(f"cannot serve on {args.host}:{args.port}: {e}")
    return 0


def _interrupt() -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
