"""DDCS Explorer: `python app.py --runs DIR` serves the app over a run store (http://127.0.0.1:7860).

`--demo` also makes sure the store holds the demo attack run: on first start the shipped, precomputed run
(checkpoints/demo-run, sha256-verified) is installed; without it, the run is created on the shipped world
and attacked in the background (its pools appear as they finish), resumed if it was interrupted.
"""

from __future__ import annotations

import argparse
import sys

from ddcs_core.errors import DDCSInputError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Browse DDCS evaluations of model inversion attacks in the browser.")
    p.add_argument("--runs", default="runs", help="run store folder (default: ./runs); the only folder files are served from")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    p.add_argument("--auth", metavar="USER:PASSWORD", help="require this login")
    p.add_argument("--device", default="auto", help="device for jobs started from the app: auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--demo", action="store_true",
                   help="open onto the demo attack run: the shipped, precomputed one on first start (else it is "
                        "attacked in the background)")
    return p.parse_args(argv)


def parse_auth(text: str | None) -> tuple[str, str] | None:
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise DDCSInputError("--auth must look like user:password (both non-empty)")
    return user, password


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        auth = parse_auth(args.auth)
        from ddcs_core.perceptual import resolve_device
        from ddcs_core.ui import build_app, launch
        from ddcs_core.ui.views import Explorer

        resolve_device(args.device)
        explorer = Explorer(args.runs, args.device)
        if args.demo:
            run = explorer.ensure_demo_run()
            status = explorer.job_status(run.name)
            if status is not None and status.active:
                print(f"demo run {run.path}: attacking in the background; pools appear in the app as they finish "
                      "(progress in the Run tab)", file=sys.stderr)
        launch(build_app(args.runs, device=args.device, explorer=explorer), args.runs, host=args.host, port=args.port,
               share=args.share, auth=auth)
    except DDCSInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
