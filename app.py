"""DDCS Explorer: `python app.py --runs DIR` serves the app over a run store (http://127.0.0.1:7860).

`--demo` also makes sure the store holds the demo attack run: on first start the shipped, precomputed run
(checkpoints/demo-run, sha256-verified) is installed; without it, the run is created on the shipped world
and attacked in the background (its pools appear as they finish), resumed if it was interrupted.
Bound to another address than this machine, the app needs a login (DDCS_AUTH, --auth-file or --auth)
or an explicit --insecure-no-auth; see README "Security model".
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from ddcs_core.errors import DDCSInputError
from ddcs_core.roots import DataRoots
from ddcs_core.uploads import UploadLimits


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Browse DDCS evaluations of model inversion attacks in the browser.",
        epilog="A login comes from DDCS_AUTH=user:password, --auth-file FILE or --auth user:password (the first two "
               "keep the password out of `ps`). A --host other than this machine needs one, or --insecure-no-auth.")
    p.add_argument("--runs", default="runs", help="run store folder (default: ./runs); the only folder files are served from")
    p.add_argument("--data-root", action="append", metavar="DIR",
                   help="a folder whose contents the Evaluate view may read (repeatable); default: $DDCS_DATA when "
                        "set. The run store always is one")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    p.add_argument("--auth", metavar="USER:PASSWORD", help="require this login (visible in `ps`: prefer DDCS_AUTH "
                                                         "or --auth-file)")
    p.add_argument("--auth-file", metavar="FILE", help="require the login user:password on the first line of FILE")
    p.add_argument("--insecure-no-auth", action="store_true",
                   help="serve a network address without a login: anyone who reaches the port can use the app")
    p.add_argument("--max-upload-gb", type=float, default=UploadLimits().max_total_bytes / (1 << 30),
                   help="cap on one upload and on what it unpacks to (default: %(default)g)")
    p.add_argument("--device", default="auto", help="device for jobs started from the app: auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--nproc", type=int, default=1,
                   help="processes per job for the jobs that share their work (attack, transfer, invert, evaluate): "
                        "N > 1 runs them as `torchrun --nproc_per_node N -m ddcs_core run|evaluate` subprocesses "
                        "(one per GPU, or the CPU's cores shared out); default 1: in the app's process")
    p.add_argument("--demo", action="store_true",
                   help="open onto the demo attack run: the shipped, precomputed one on first start (else it is "
                        "attacked in the background)")
    return p.parse_args(argv)


def parse_auth(text: str | None, source: str = "--auth") -> tuple[str, str] | None:
    if text is None:
        return None
    user, sep, password = text.strip("\r\n").partition(":")
    if not sep or not user or not password:
        raise DDCSInputError(f"{source} must look like user:password (both non-empty)")
    return user, password


def read_auth(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> tuple[str, str] | None:
    """The login from --auth or --auth-file (not both), else from DDCS_AUTH, else None."""
    if args.auth is not None and args.auth_file is not None:
        raise DDCSInputError("give the login one way only, not --auth and --auth-file")
    if args.auth_file is not None:
        try:
            lines = Path(args.auth_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or exc
            raise DDCSInputError(f"--auth-file {args.auth_file}: cannot be read ({why})") from None
        return parse_auth(lines[0] if lines else "", f"--auth-file {args.auth_file}")
    if args.auth is None and environ.get("DDCS_AUTH"):
        return parse_auth(environ["DDCS_AUTH"], "DDCS_AUTH")
    return parse_auth(args.auth)


def is_loopback(host: str) -> bool:
    """Whether `host` binds to this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(args: argparse.Namespace, auth: tuple[str, str] | None, roots: str) -> str | None:
    """None where the app is safe as configured; the warning to print where --insecure-no-auth allows an
    open network address; DDCSInputError where it is open without that flag."""
    exposed = [f"--host {args.host}"] * (not is_loopback(args.host)) + ["--share"] * args.share
    if auth is not None or not exposed:
        return None
    if not args.insecure_no_auth:
        raise DDCSInputError(f"{' and '.join(exposed)} without a login would let anyone on the network use the app; "
                             "set DDCS_AUTH=user:password or give --auth-file FILE (or --insecure-no-auth)")
    return (f"warning: {' and '.join(exposed)} without a login (--insecure-no-auth): anyone who can reach this "
            f"address can browse and download every run in {Path(args.runs).resolve()} (private targets included), "
            f"copy images from {roots} into new runs, upload files and start jobs on this machine")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        auth = read_auth(args)
        if args.max_upload_gb <= 0:
            raise DDCSInputError("--max-upload-gb must be positive")
        limits = UploadLimits.for_gb(args.max_upload_gb)
        roots = DataRoots.for_store(Path(args.runs), args.data_root)
        warning = exposure_warning(args, auth, roots.describe())
        if warning:
            print(warning, file=sys.stderr)
        from ddcs_core.perceptual import resolve_device
        from ddcs_core.ui import build_app, launch
        from ddcs_core.ui.views import Explorer

        resolve_device(args.device)
        explorer = Explorer(args.runs, args.device, data_roots=args.data_root, upload_limits=limits,
                            nproc=args.nproc)
        if args.demo:
            run = explorer.ensure_demo_run()
            status = explorer.job_status(run.name)
            if status is not None and status.active:
                print(f"demo run {run.path}: attacking in the background; pools appear in the app as they finish "
                      "(progress in the Run tab)", file=sys.stderr)
        launch(build_app(args.runs, device=args.device, explorer=explorer), args.runs, host=args.host, port=args.port,
               share=args.share, auth=auth, max_upload_bytes=limits.max_total_bytes)
    except DDCSInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
