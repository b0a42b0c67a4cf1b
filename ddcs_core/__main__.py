"""One CLI: `python -m ddcs_core {evaluate,lpips,bench,run,reproduce,generator} ...`; bad input exits 2 with a clear message."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from ddcs_core.choices import CACHE_DTYPES, FEATURES, LPIPS_NETS, PRDC_MODES, PROFILES, RESIZE_POLICIES
from ddcs_core.errors import DDCSInputError
from ddcs_core.generator_cli import add_generator, run_generator


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="DDCS and the standard MI metrics of any attack's reconstructions")
    p.add_argument("--targets", required=True, help="private training set: folder with one subfolder per class, or .npz")
    p.add_argument("--recon", required=True, help="reconstructions, same layout (class folder names must match)")
    p.add_argument("--out", required=True, help="output folder for report.json, targets.csv, evaluation.npz")
    p.add_argument("--profile", choices=PROFILES, default="fast",
                   help="paper: LPIPS-VGG at 256x256 (PIL resize); fast: LPIPS-alex at native size (default); "
                        "official: the official DDCS code's preparation, PPA-style PRDC")
    p.add_argument("--net", choices=LPIPS_NETS, help="override the profile's LPIPS backbone")
    p.add_argument("--size", type=int, help="bring every image to SIZE x SIZE (bilinear, by --resize) before evaluation; "
                   "with --profile official: the targets' shorter edge (default: the reconstructions' resolution)")
    p.add_argument("--resize", choices=RESIZE_POLICIES, default="stretch",
                   help="how images that are not SIZE x SIZE get there: stretch (default; aspect ratio changes), "
                        "center-crop (the central square) or pad (black borders); recorded in the report")
    p.add_argument("--max-image-pixels", type=int, metavar="N",
                   help="refuse images of more than N pixels, from their headers (default 4096*4096 or "
                        "$DDCS_MAX_IMAGE_PIXELS)")
    p.add_argument("--max-set-gb", type=float, metavar="X",
                   help="refuse an image set or .npz that decodes to more than X GB (default 4 or $DDCS_MAX_SET_GB)")
    p.add_argument("--class-agnostic", action="store_true", help="assign reconstructions over all targets, not only their class")
    p.add_argument("--skip-unknown-classes", action="store_true", help="drop reconstructions of classes absent from the targets")
    p.add_argument("--eval-model", help="evaluation classifier checkpoint: attack accuracy and KNN distance")
    p.add_argument("--features", default="auto", choices=FEATURES,
                   help="features for FID/PRDC (auto: Inception-v3 if its weights are on disk, else the LPIPS backbone)")
    p.add_argument("--inception-weights", help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth (FID Inception) "
                   "or torchvision's inception_v3_google-0cc3c7bd.pth, if you have one")
    p.add_argument("--prdc-mode", choices=PRDC_MODES,
                   help="naeem: the prdc package; ppa: Plug-and-Play Attacks' variant (default: ppa for --profile official, else naeem)")
    p.add_argument("--k", type=int, default=3, dest="nearest_k", help="k of precision/recall/density/coverage")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--memory-cap-gb", type=float, default=2.0, help="memory for embedding blocks")
    p.add_argument("--cache-cap-gb", type=float, default=8.0,
                   help="largest target-embedding cache kept on disk, GiB (default 8; larger sets are embedded "
                        "anew at every evaluation, and the report says so)")
    p.add_argument("--cache-dtype", choices=CACHE_DTYPES, default="float32",
                   help="precision of the target embeddings, cached or not: float16 halves the cache at under 1e-4 "
                        "relative error on d_tar (outside the float32 reproducibility contract; recorded)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _run_evaluate(args) -> int:
    from ddcs_core.evaluate import EvalConfig, evaluate
    from ddcs_core.job_process import progress_report

    fields = EvalConfig.__dataclass_fields__
    config = EvalConfig(**{k: v for k, v in vars(args).items() if k in fields})
    report = progress_report()  # an app job's subprocess: its progress file
    if report is not None:
        report(0.05, f"evaluating {args.recon} against {args.targets} ({config.profile} profile)")
    ev = evaluate(args.targets, args.recon, args.out, config, progress=not args.quiet)
    if ev is None:  # a torchrun rank other than 0: rank 0 wrote and reports
        return 0
    r = ev.report
    if report is not None:
        report(1.0, f"stored: DDCS {r['ddcs']:.4g}, matched {r['matched']}/{r['counts']['targets']}")
    print(json.dumps({k: r[k] for k in ("ddcs", "ddcs_avg", "matched", "matched_fraction", "exact_copies")}
                     | {"coverage": r["prdc"]["coverage"], "fid": r["fid"]["value"], "out": str(args.out)}, indent=2))
    for note in r["notes"]:
        print(f"note: {note}", file=sys.stderr)
    for warning in r["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _add_lpips(sub) -> None:
    p = sub.add_parser("lpips", help="LPIPS distance between two images")
    p.add_argument("img0")
    p.add_argument("img1")
    p.add_argument("--net", choices=LPIPS_NETS, default="alex")
    p.add_argument("--size", type=int, help="resize both images to SIZE x SIZE first")
    p.add_argument("--device", default="auto")


def _run_lpips(args) -> int:
    import numpy as np

    from ddcs_core.data.images import read_images
    from ddcs_core.perceptual import PerceptualDistance

    imgs = [read_images([p], size=args.size, progress=False) for p in (args.img0, args.img1)]
    if imgs[0].shape != imgs[1].shape:
        raise DDCSInputError(f"{args.img0} is {imgs[0].shape[1]}x{imgs[0].shape[2]} but {args.img1} is "
                             f"{imgs[1].shape[1]}x{imgs[1].shape[2]}; pass --size")
    d = PerceptualDistance(args.net, device=args.device).pairwise(imgs[0], imgs[1])
    print(f"{float(np.asarray(d)[0, 0]):.6f}")
    return 0


def _add_example(sub) -> None:
    p = sub.add_parser("example", help="evaluate LFW held-out photos (an oracle attack) against the private targets")
    p.add_argument("--out", default="out/example", help="output folder (default out/example)")
    p.add_argument("--data-root", help="folder holding lfw-deepfunneled/ (default: $DDCS_DATA or ./data)")


def _run_example(args) -> int:
    from ddcs_core.example import oracle_example

    r = oracle_example(args.out, args.data_root).report
    print(json.dumps({k: r[k] for k in ("ddcs", "ddcs_avg", "matched", "matched_fraction")}
                     | {"coverage": r["prdc"]["coverage"], "fid": r["fid"], "counts": r["counts"], "out": args.out}, indent=2))
    return 0


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the demo world: build (train) or check the shipped checkpoints")
    dsub = p.add_subparsers(dest="what", required=True)
    b = dsub.add_parser("build", help="use the shipped world, or retrain it with --from-scratch (resumable)")
    b.add_argument("--from-scratch", action="store_true", help="retrain victim, evaluator and generator, then export")
    b.add_argument("--out", help="where to export the world (default checkpoints/demo)")
    b.add_argument("--device", default="auto")
    b.add_argument("--data-root", help="folder holding lfw-deepfunneled/ (default: $DDCS_DATA or ./data)")
    b.add_argument("--only", help="comma-separated steps to run (victim,evaluator,gan), e.g. to train them in "
                                  "parallel processes; export happens once all are done")
    c = dsub.add_parser("check", help="verify the shipped world against the data and print its figures; with "
                                      "--run, re-evaluate one pool of the shipped demo run instead")
    c.add_argument("--folder", help="world folder (default checkpoints/demo), or with --run the shipped run's "
                                    "folder (default checkpoints/demo-run)")
    c.add_argument("--data-root")
    c.add_argument("--run", action="store_true", help="check the shipped demo run: sha256 of every file, the targets "
                                                      "rebuilt from LFW, and one pool re-evaluated against its numbers")
    c.add_argument("--pool", default="vanilla", help="with --run: the pool to re-evaluate (default vanilla)")
    c.add_argument("--device", default="auto")
    s = dsub.add_parser("ship-run", help="make the shipped demo run (checkpoints/demo-run): attack with "
                                         "assets/configs/demo.yaml (resumable), then store the finished run compactly")
    s.add_argument("--from", dest="source", help="a finished demo run folder to ship instead of attacking again")
    s.add_argument("--runs", help="run store for the fresh attack (default: work/demo/ship-runs)")
    s.add_argument("--out", help="where to write it (default checkpoints/demo-run)")
    s.add_argument("--device", default="auto")


def _run_demo(args) -> int:
    from pathlib import Path

    from ddcs_core import pipeline

    if args.what == "check" and args.run:
        from ddcs_core import shipped_run

        result = shipped_run.check(Path(args.folder) if args.folder else shipped_run.SHIPPED_RUN, args.pool,
                                   args.data_root, args.device, progress=True)
        print(json.dumps(result, indent=2))
        return 0 if result["ok"] else 1
    if args.what == "check":
        result = pipeline.check(Path(args.folder) if args.folder else pipeline.SHIPPED, args.data_root)
        print(json.dumps(result, indent=2))
        return 0 if result["ok"] else 1
    if args.what == "ship-run":
        return _ship_run(args)
    out = Path(args.out) if args.out else pipeline.SHIPPED
    if not args.from_scratch:
        world = pipeline.load_world(out)
        m = world.manifest["metrics"]
        print(f"shipped world in {out} verified (sha256): victim top-1 {m['victim_test']['top1']:.3f}, "
              f"evaluator top-1 {m['evaluator_test']['top1']:.3f}, generator FID {m['generator_fid']['value']:.2f}; "
              "`demo check` recomputes these, `demo build --from-scratch` retrains")
        return 0
    t = time.perf_counter()
    only = tuple(s.strip() for s in args.only.split(",")) if args.only else pipeline.STEPS
    result = pipeline.build(device=args.device, data_root=args.data_root, only=only)
    if not result["complete"]:
        print(f"steps done: {', '.join(result['results'])}; export waits for the others")
        return 0
    figures = pipeline.export(result, out)
    print(json.dumps({"out": str(out), "build_seconds": round(time.perf_counter() - t, 1)} | figures, indent=2))
    return 0


def _ship_run(args) -> int:
    from pathlib import Path

    from ddcs_core import pipeline, shipped_run
    from ddcs_core.experiment import DEMO_CONFIG, DEMO_RUN, load_config, run_experiment

    t = time.perf_counter()
    if args.source:
        source = Path(args.source)
    else:
        runs = Path(args.runs) if args.runs else pipeline.work_dir() / "ship-runs"
        source = run_experiment(load_config(DEMO_CONFIG), runs, DEMO_RUN, args.device).path
    manifest = shipped_run.export_run(source, Path(args.out) if args.out else shipped_run.SHIPPED_RUN)
    print(json.dumps({"from": str(source), "bytes": manifest["total_bytes"], "files": len(manifest["files"]) + 1,
                      "made": manifest["made"], "seconds": round(time.perf_counter() - t, 1)}, indent=2))
    return 0


def _add_data(sub) -> None:
    p = sub.add_parser("data", help="datasets: download LFW (deep-funneled) into the data root")
    dsub = p.add_subparsers(dest="what", required=True)
    d = dsub.add_parser("download-lfw", help="download and verify the official LFW deep-funneled release")
    d.add_argument("--data-root", help="destination (default: $DDCS_DATA or ./data)")


def _run_data(args) -> int:
    from pathlib import Path

    from ddcs_core.data.lfw import download_lfw

    print(download_lfw(Path(args.data_root) if args.data_root else None))
    return 0


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks (print JSON)")
    bsub = p.add_subparsers(dest="what", required=True)
    b = bsub.add_parser("lpips", help="naive vs cached vs ours, all-pairs LPIPS")
    b.add_argument("--n", type=int, default=200, help="reconstructions")
    b.add_argument("--m", type=int, default=200, help="targets")
    b.add_argument("--size", type=int, default=64)
    b.add_argument("--net", choices=LPIPS_NETS, default="alex")
    b.add_argument("--naive-pairs", type=int, default=0,
                   help="time the naive baseline on this many random pairs and extrapolate (default 0: every pair)")
    e = bsub.add_parser("evaluate", help="evaluate end to end on synthetic class-structured data")
    e.add_argument("--targets", type=int, default=3000)
    e.add_argument("--recon", type=int, default=5000)
    e.add_argument("--classes", type=int, default=62)
    e.add_argument("--size", type=int, default=64)
    t = bsub.add_parser("transfer", help="transfer step time: entropy vs ngd (reference), damped refresh cost")
    t.add_argument("--steps", type=int, default=20, help="timed steps per mode (interleaved)")
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--k", type=int, default=20, help="eigenpairs of the NGD basis")
    t.add_argument("--refresh-every", type=int, default=10, help="R of the damped projection")
    t.add_argument("--device", default="auto")
    t.add_argument("--world", choices=["demo", "sg2ada-256"], default="demo",
                   help="demo: the 64 px demo world; sg2ada-256: StyleGAN2-ADA paper256 G/D + irse50 victim (random)")
    t.add_argument("--reference-latents", type=int, default=4, help="latents of the reference NGD bases")
    t.add_argument("--warmup", type=int, default=3, help="untimed steps per mode first")
    t.add_argument("--no-damped", action="store_true", help="skip the damped projection's refresh timing")
    t.add_argument("--lanczos-maxiter", type=int, default=None,
                   help="cap the Hessian-vector products per basis (bounds the setup time, not the step time)")
    d = bsub.add_parser("distributed", help="inversion and evaluation throughput, 1 process vs N under torchrun "
                                            "(CPU: 1 x T threads vs N x T/N; GPUs: 1 vs all)")
    d.add_argument("--nproc", type=int, help="processes of the distributed setting (default: GPUs, or 2 on the CPU)")
    d.add_argument("--threads", type=int, help="CPU threads in all (default: torch's, capped at the cores)")
    d.add_argument("--device", default="auto", help="auto, cpu or cuda (each rank uses cuda:LOCAL_RANK)")
    d.add_argument("--classes", type=int, default=8, help="classes inverted")
    d.add_argument("--steps", type=int, default=10, help="optimisation steps per inversion chunk")
    d.add_argument("--eval-classes", type=int, default=8, help="classes of the synthetic evaluation (10+10 each)")
    m = bsub.add_parser("embed", help="images/s of our LPIPS embedding vs a bare torchvision backbone forward "
                                      "(CPU, and CUDA when available), interleaved")
    m.add_argument("--net", choices=LPIPS_NETS, default="vgg")
    m.add_argument("--size", type=int, default=256)
    m.add_argument("--n", type=int, default=16, help="images per timed rep")
    m.add_argument("--reps", type=int, default=3, help="interleaved reps per side (the median is reported)")
    m.add_argument("--device", default="auto", help="auto: the CPU, and CUDA when available")
    g = bsub.add_parser("generator", help="images/s of an imported StyleGAN2-ADA paper256 generator (CPU, and CUDA)")
    g.add_argument("--batch-size", type=int, default=2, help="batch on the CPU (CUDA uses at least 16)")
    g.add_argument("--seconds", type=float, default=20.0, help="time budget per device")
    g.add_argument("--device", default="auto", help="auto: the CPU, and CUDA when available")


def _run_bench(args) -> int:
    from ddcs_core import bench

    if args.what == "embed":
        from ddcs_core.bench_embed import embed_bench

        out = embed_bench(args.net, args.size, args.n, args.reps, args.device)
    elif args.what == "generator":
        from ddcs_core.bench_generator import generator_bench

        out = generator_bench(args.batch_size, args.seconds, args.device)
    elif args.what == "distributed":
        from ddcs_core.bench_distributed import distributed_bench

        out = distributed_bench(args.nproc, args.threads, args.device, args.classes, args.steps,
                                eval_classes=args.eval_classes)
    elif args.what == "transfer":
        out = bench.transfer_bench(args.steps, args.batch_size, args.k, args.refresh_every, args.warmup,
                                   device=args.device, world=args.world, reference_latents=args.reference_latents,
                                   damped=not args.no_damped, lanczos_maxiter=args.lanczos_maxiter)
    elif args.what == "lpips":
        out = bench.lpips_bench(args.n, args.m, args.size, args.net, args.naive_pairs)
    else:
        out = bench.evaluate_bench(args.targets, args.recon, args.classes, args.size)
    print(json.dumps(out, indent=2))
    return 0


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="the attack experiment: transfer (3 modes) -> inversion -> evaluation, resumable")
    p.add_argument("--config", required=True, help="experiment YAML, e.g. assets/configs/demo.yaml")
    p.add_argument("--runs", default="runs", help="run store folder (default runs)")
    p.add_argument("--name", help="run name (default: the config's name); rerun the same name to resume")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--only", help="comma-separated steps to run, e.g. transfer-ngd,fid-ngd (default: every step "
                                  "not yet done; the names are those in <run>/steps.json)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", dest="overrides",
                   help="change one config value, e.g. --set transfer.lam=0.3 --set name=ngd-lam0.3 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _run_run(args) -> int:
    from ddcs_core.experiment import load_config, run_experiment
    from ddcs_core.job_process import progress_report
    from ddcs_core.jobs import exclusive_job
    from ddcs_core.reproduce import reproduction_table, to_text
    from ddcs_core.runs import RunStore

    t = time.perf_counter()
    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None
    config = load_config(args.config, args.overrides)
    target = RunStore(args.runs).run(args.name or config.name)
    params = {"config": args.config, "only": args.only or "", "overrides": list(args.overrides), "device": args.device}
    with exclusive_job(target, "run (CLI)", params):  # the app's job lock: never two jobs on one run
        run = run_experiment(config, args.runs, args.name, args.device, progress=not args.quiet, only=only,
                             report=progress_report())
    print(to_text(reproduction_table(run)))
    print(f"run {run.path} complete in {time.perf_counter() - t:.1f} s this session "
          f"(steps: {run.path / 'steps.json'}; `python -m ddcs_core reproduce --run {run.path}`)")
    return 0


def _add_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="a study over methods x λ x seeds: one run per point, table and trade-off plots")
    p.add_argument("--config", required=True, help="sweep YAML, e.g. assets/configs/sweep-demo.yaml")
    p.add_argument("--runs", default="runs", help="run store folder (default runs); the sweep folder is <runs>/<name>")
    p.add_argument("--name", help="sweep name (default: the file's); names its folder and its points' runs")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", dest="overrides",
                   help="change one experiment value for every point, e.g. --set transfer.steps=100 (repeatable; "
                        "with --name, as runs of the same name must keep their config)")
    p.add_argument("--report-only", action="store_true",
                   help="only (re)write the table and plots from the points finished so far")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _run_sweep(args) -> int:
    from dataclasses import replace

    from ddcs_core import distributed
    from ddcs_core.runs import check_name
    from ddcs_core.sweep import load_sweep, run_sweep, write_outputs

    t = time.perf_counter()
    sweep = load_sweep(args.config, args.overrides)
    if args.name:
        sweep = replace(sweep, name=check_name(args.name, "sweep"))
    folder = Path(args.runs) / sweep.name
    if not args.report_only:
        run_sweep(sweep, args.runs, args.device, progress=not args.quiet)
    if not distributed.is_main():  # under torchrun rank 0 writes and prints the table
        return 0
    if args.report_only:
        write_outputs(folder, args.runs)
    print((folder / "table.md").read_text())
    print(f"sweep {folder} written in {time.perf_counter() - t:.1f} s this session "
          f"(table.csv, table.md, tradeoff.png, tradeoff.html)")
    return 0


def _add_reproduce(sub) -> None:
    p = sub.add_parser("reproduce", help="the reproduction table of an experiment run (text and markdown)")
    p.add_argument("--run", required=True, nargs="+",
                   help="run folder, e.g. runs/demo; several runs: their transfer modes in one table (a λ sweep)")
    p.add_argument("--json", action="store_true", help="print the table as JSON instead")


def _run_reproduce(args) -> int:
    from ddcs_core.reproduce import reproduction_table, to_markdown, to_text, transfer_comparison
    from ddcs_core.runs import Run

    tables = [reproduction_table(Run(path)) for path in args.run]
    if args.json:
        print(json.dumps(tables[0] if len(tables) == 1 else tables, indent=2))
    elif len(tables) == 1:
        print(to_text(tables[0]))
        print(to_markdown(tables[0]))
    else:
        print(transfer_comparison(tables))
    return 0


def _add_victim(sub) -> None:
    p = sub.add_parser("victim", help="victims/evaluators: check that a classifier spec loads and classifies")
    vsub = p.add_subparsers(dest="what", required=True)
    c = vsub.add_parser("check", help="load arch + weights, print what was loaded and classify random images")
    c.add_argument("--arch", required=True, help="resnet50, vgg16_bn, inception_v3, irse50, ir50-64, demo:resnet-s ...")
    c.add_argument("--weights", required=True, help="state dict: safetensors, or .pt/.pth (read with weights_only=True)")
    c.add_argument("--num-classes", type=int, required=True)
    c.add_argument("--preprocess", help="a preset name (imagenet, paper-faces-112 ...) or a JSON list of steps")
    c.add_argument("--options", help="builder arguments as JSON, e.g. '{\"transform_input\": true}'")
    c.add_argument("--key-prefix", help="keep only the file's keys under this prefix")
    c.add_argument("--resolution", type=int, default=256, help="generator resolution of the random images (default 256)")
    c.add_argument("--device", default="auto")


def _run_victim(args) -> int:
    import torch

    from ddcs_core.models.victims import ClassifierSpec, check_resolution, load_classifier

    def parsed(text, what):
        if text is None or not text.lstrip().startswith(("[", "{")):
            return text
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise DDCSInputError(f"--{what}: not valid JSON ({e})") from e

    d = {"arch": args.arch, "weights": args.weights, "num_classes": args.num_classes,
         "preprocess": parsed(args.preprocess, "preprocess"), "options": parsed(args.options, "options"),
         "key_prefix": args.key_prefix}
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    model = load_classifier(ClassifierSpec.from_dict(d, "victim check"), device)
    size = check_resolution(model, args.resolution)
    x = torch.rand(2, 3, args.resolution, args.resolution, generator=torch.Generator().manual_seed(0)) * 2 - 1
    t = time.perf_counter()
    with torch.no_grad():
        logits = model(x.to(device))
    seconds = time.perf_counter() - t
    print(json.dumps(model.info | {"input_size": list(size), "logits_shape": list(logits.shape),
                                   "forward_seconds": round(seconds, 4),
                                   "top1_on_random": logits.argmax(1).tolist()}, indent=2))
    return 0


COMMANDS = {
    "evaluate": (_add_evaluate, _run_evaluate),
    "lpips": (_add_lpips, _run_lpips),
    "example": (_add_example, _run_example),
    "demo": (_add_demo, _run_demo),
    "data": (_add_data, _run_data),
    "bench": (_add_bench, _run_bench),
    "run": (_add_run, _run_run),
    "sweep": (_add_sweep, _run_sweep),
    "reproduce": (_add_reproduce, _run_reproduce),
    "victim": (_add_victim, _run_victim),
    "generator": (add_generator, run_generator),
}
DISTRIBUTED_COMMANDS = ("run", "evaluate", "sweep")  # the ones that share their work over torchrun's ranks


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ddcs_core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add, _ in COMMANDS.values():
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    if os.environ.get("DDCS_DETERMINISTIC") == "1":  # oneDNN's convolutions may sum by memory layout
        import torch

        torch.backends.mkldnn.enabled = False  # so that a run is bit-identical to another on this machine
    from ddcs_core import distributed

    try:
        if distributed.launched():  # torchrun: one process per device; rank 0 alone writes and prints
            if args.command not in DISTRIBUTED_COMMANDS:
                raise DDCSInputError(f"`{args.command}` does not run under torchrun; "
                                     f"launch one of {', '.join(DISTRIBUTED_COMMANDS)} with it, or run it plainly")
            _, device = distributed.setup(getattr(args, "device", "auto"))
            if hasattr(args, "device"):
                args.device = device
            if not distributed.is_main():
                args.quiet = True
                sys.stdout = open(os.devnull, "w")
        return COMMANDS[args.command][1](args)
    except DDCSInputError as exc:  # the user's mistake: one line
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing half-written was left behind", file=sys.stderr)
        return 130
    except Exception:  # a bug: the traceback, so it can be reported
        logging.getLogger("ddcs_core").exception("internal error (a bug, not your input); please report it with "
                                                 "this traceback")
        return 1
    finally:
        distributed.teardown()


if __name__ == "__main__":
    sys.exit(main())
