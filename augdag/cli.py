"""`augdag` command: run the pipeline, run one stage, compare strategies, show a sample's lineage, replay a sample,
export a stage's samples, serve the flows from a local Prefect server."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from augdag.env import set_offline, tune_malloc

set_offline()
tune_malloc()  # before any thread: see augdag.env.tune_malloc

from augdag.errors import AugdagError  # noqa: E402


def _print_lineage(rows: list[dict]) -> None:
    for depth, r in enumerate(rows):
        ops = r["op_params"].get("ops") if isinstance(r["op_params"], dict) else None
        print(f"{'  ' * depth}{r['sample_id']}  [{r['stage']}/{r['branch']}] label={r['label']} "
              f"hash={r['content_hash'][:12]}" + (f" device={r['device']}" if r.get("device") else ""))
        if r.get("text") is not None:
            print(f"{'  ' * depth}    text: {r['text']}")
        changes = r["op_params"].get("changes") if isinstance(r["op_params"], dict) else None
        if changes and r.get("text") is not None:  # text: [op, old, new] or back-translation/paraphrase dicts
            for c in changes:
                op, old, new = (c["op"], c["old"], c["new"]) if isinstance(c, dict) else c
                print(f"{'  ' * depth}    {op}: {old!r} -> {new!r}")
        elif ops:
            for op in ops:
                print(f"{'  ' * depth}    {op['op']}: " + ", ".join(f"{k}={v}" for k, v in op.items() if k != "op"))
        if not r["parent_ids"]:
            print(f"{'  ' * depth}    source: {r['source']}")


def _verify(root: Path, args) -> int:
    from augdag import verify

    samples = verify.stored_samples(root)
    here = verify.workspace(root)
    outs = {} if args.samples_only else verify.recompute(root, args.stages or None)
    bad = (sum(s["mismatches"] for s in samples.values()) + sum(not s["same"] for s in outs.values())
           + sum(len(v) for v in here.values()))
    if args.json:
        print(json.dumps({"ok": not bad, "samples": samples, "workspace": here, "recompute": outs}, indent=2))
        return 1 if bad else 0
    for stage, lines in here.items():
        print(f"{stage}: differs from dvc.lock here: " + "; ".join(lines))
    for stage, s in samples.items():
        print(f"{stage}: {s['checked']} stored samples, " + (f"{s['mismatches']} differ from their recorded hash"
                                                              if s["mismatches"] else "all match their hashes"))
        for m in s["first"]:
            print(f"  {m['sample_id']} ({m['where']}): stored {m['stored'][:16]}, recorded {m['recorded'][:16]}")
    for stage, s in outs.items():
        print(f"{stage}: recomputed in a scratch copy, " + ("outputs equal dvc.lock" if s["same"]
                                                              else "outputs differ from dvc.lock"))
        for path, d in s["outs"].items():
            print(f"  {path}: locked {d['locked']}, now {d['now']}" + (f"; {d['detail']}" if d["detail"] else ""))
    print("verify: " + ("OK" if not bad else f"{bad} problem(s)"))
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="augdag", description=__doc__)
    ap.add_argument("-C", "--root", default=".", help="project folder holding dvc.yaml and params.yaml")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the whole DAG through the Prefect flow")
    r.add_argument("--dataset", help="folder of images, one subfolder per class (sets ingest.source)")
    r.add_argument("--set", dest="set_params", action="append", default=[], metavar="KEY=VALUE",
                   help="override a param in params.yaml, e.g. --set finetune.steps=100 (repeatable)")
    r.add_argument("--set-file", dest="set_files", action="append", default=[], metavar="FILE",
                   help="a partial params file (e.g. configs/gpu-224.yaml) written into params.yaml before --set")
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--force", action="store_true", help="rerun stages even when DVC says they are up to date")
    c = sub.add_parser("compare", help="compare augmentation strategies over seeds (Prefect flow augdag-compare)")
    c.add_argument("--strategies", nargs="+", default=None, metavar="NAME",
                   help="strategies to compare (default: none traditional mix generative all all_nogate "
                        "trivial_augment_wide; more in augdag/compare.py)")
    c.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    c.add_argument("--out", default="data/compare",
                   help="output folder, relative to the project (default data/compare)")
    c.add_argument("--baseline", default="none", help="strategy the paired differences are taken against")
    c.add_argument("--force", action="store_true",
                   help="rerun every run even when a record with its params hash exists")
    t = sub.add_parser("tune", help="search augmentation strategies for this project's data on validation accuracy "
                                    "(Optuna; Prefect flow augdag-tune); docs/tune.md")
    t.add_argument("--trials", type=int, default=20, help="trials to run (default 20)")
    t.add_argument("--folds", type=int, default=3,
                   help="fine-tunes per trial, each on its own seeded draw of train and validation (default 3)")
    t.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="stop starting trials after this many seconds")
    t.add_argument("--seed", type=int, default=0, help="the sampler's seed (default 0)")
    t.add_argument("--out", default="data/tune", help="output folder, relative to the project (default data/tune)")
    t.add_argument("--apply", action="store_true", help="write the winner into params.yaml (as --set does)")
    v = sub.add_parser("server", help="start a local Prefect server and serve the pipeline and compare flows as "
                                      "deployments, launched from its UI (Ctrl-C stops both)")
    v.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; any other needs --expose)")
    v.add_argument("--port", type=int, default=4200)
    v.add_argument("--expose", action="store_true",
                   help="allow a non-loopback --host: anyone who reaches the port can run code and read data "
                        "on this machine (the server has no authentication)")
    s = sub.add_parser("stage", help="run one stage (what dvc.yaml's cmds call)")
    s.add_argument("name")
    s.add_argument("--workers", type=int, default=1)
    x = sub.add_parser("export", help="write a stage's samples as an ImageFolder tree, a Hugging Face dataset or "
                                      "WebDataset shards (texts: CSV, JSON Lines or Hugging Face); docs/export.md")
    x.add_argument("stage", help="a stage with samples: ingest, traditional, mix, generative, merge")
    x.add_argument("--format", dest="fmt", required=True, metavar="FORMAT",
                   help="imagefolder, hf or webdataset for images; csv, jsonl or hf for texts")
    x.add_argument("--out", required=True, metavar="DIR",
                   help="folder to write (relative to the current folder), written whole or not at all")
    x.add_argument("--overwrite", action="store_true", help="replace DIR when it holds a previous export")
    x.add_argument("--maxcount", type=int, default=10000, metavar="N", help="webdataset: samples per tar shard")
    w = sub.add_parser("verify", help="check every stored sample against its hash, and recompute stages in a "
                                      "scratch copy to compare their outputs with dvc.lock")
    w.add_argument("stages", nargs="*", metavar="STAGE", help="stages to recompute (default: the whole pipeline)")
    w.add_argument("--samples-only", action="store_true", help="only check the stored samples (no recompute)")
    w.add_argument("--json", action="store_true", help="print JSON")
    for name, text in (("lineage", "print a sample's chain back to the raw file"),
                       ("replay", "regenerate a sample and check its content hash")):
        q = sub.add_parser(name, help=text)
        q.add_argument("sample_id")
        q.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args(argv)
    root = Path(args.root).resolve()
    from augdag import numerics

    numerics.pin_from_params(root)  # before torch, numpy or numba loads
    from augdag import cancel

    try:
        with cancel.sigint_stops_work():  # `augdag server` installs its own handler
            return _dispatch(args, root)
    except KeyboardInterrupt:
        print("augdag: stopped by Ctrl-C; nothing half-written is left: each output is the previous one or a "
              "complete new one (a stage's, recorded in dvc.lock)", file=sys.stderr)
        return 130
    except AugdagError as err:
        print(f"augdag: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        from augdag.storage import _out_of_space

        if not _out_of_space(err):
            raise
        where = f"{err.filename}: " if err.filename else ""
        print(f"augdag: error: {where}cannot write: {err.strerror or err} (disk full?). Outputs are replaced "
              "only once complete, so the previous ones are kept.", file=sys.stderr)
        return 2


def _dispatch(args, root: Path) -> int:
    from augdag import runlock
    from augdag.params import load_params
    from augdag.prefect_server import temporary_server

    if args.cmd == "run":
        from augdag.params import set_file_overrides

        overrides = [o for f in args.set_files for o in set_file_overrides(f)] + list(args.set_params)
        if args.dataset:
            overrides.append(f"ingest.source={Path(args.dataset).resolve()}")
        from augdag.api import run_flow

        # refused before Prefect is imported or started when another command holds the project
        run_flow(root, overrides, workers=args.workers, force=args.force)
        metrics = root / "data" / "evaluate" / "metrics.json"
        print(f"report:  {root / 'data' / 'report' / 'report.html'}")
        print(f"metrics: {metrics}")
        if metrics.exists():
            m = json.loads(metrics.read_text())
            print(f"test accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f}")
        return 0
    if args.cmd == "compare":
        from augdag.compare import COMPARISON, check_strategies, load_base, resolve
        from augdag.flows.compare import run_compare

        base = load_base(root)  # a typo or a bad param fails here, before Prefect starts
        for name in check_strategies(args.strategies or COMPARISON):
            resolve(base, name, args.seeds[0])
        with temporary_server() as server:
            server.ready()
            res = run_compare(str(root), strategies=args.strategies, seeds=args.seeds, out=args.out,
                              baseline=args.baseline, force=args.force)
        print(res["markdown"], end="")
        print(f"comparison: {Path(res['out']) / 'comparison.html'} ({res['ran']} runs ran, {res['cached']} cached)")
        return 0
    if args.cmd == "tune":
        from augdag.compare import load_base

        load_base(root)  # a missing or malformed params.yaml fails before Prefect starts
        with runlock.hold(root, "augdag tune"), temporary_server() as server:
            from augdag.flows.tune import tune_flow

            server.ready()
            res = tune_flow(root=str(root), trials=args.trials, folds=args.folds, out=args.out, seed=args.seed,
                            timeout=args.timeout, apply=args.apply)
        best = res["best"]
        print(f"tune: {res['trials']} trials ({res['pruned']} pruned) in {res['seconds']:.0f} s; best mean "
              f"validation accuracy {best['val_accuracy_mean']:.4f} (trial {best['trial']}) with:")
        for s in best["set"]:
            print(f"  --set {s}")
        print("written into params.yaml" if args.apply else "(add --apply to write it into params.yaml)")
        return 0
    if args.cmd == "server":
        from augdag.env import export_malloc_settings
        from augdag.flows.serve import check_host, serve_all

        check_host(args.host, args.expose)  # refused before anything starts
        export_malloc_settings()  # the served flow runs are child processes
        load_params(root / "params.yaml")  # a bad params.yaml fails here, not at the first launch
        serve_all(root, host=args.host, port=args.port, expose=args.expose)
        return 0
    if args.cmd == "stage":
        from concurrent.futures import ThreadPoolExecutor

        from augdag.tasks import run_stage

        with runlock.hold(root, f"augdag stage {args.name}"):
            params = load_params(root / "params.yaml")
            with ThreadPoolExecutor(max_workers=args.workers) as pool:
                summary = run_stage(args.name, params, root, mapper=pool.map, chunk_size=params.runner.chunk_size)
        print(json.dumps(summary, sort_keys=True))
        return 0
    if args.cmd == "export":
        from augdag.export import export

        print(json.dumps(export(root, args.stage, args.fmt, args.out, overwrite=args.overwrite,
                                maxcount=args.maxcount), sort_keys=True))
        return 0
    from augdag import tasks

    if args.cmd == "lineage":
        rows = tasks.chain(root, args.sample_id)
        print(json.dumps(rows, indent=2)) if args.json else _print_lineage(rows)
        return 0
    if args.cmd == "verify":
        return _verify(root, args)
    if args.cmd == "replay":
        params = load_params(root / "params.yaml")
        res = tasks.replay(root, args.sample_id, params)
        if args.json:
            print(json.dumps(res, indent=2))
        else:
            print(f"{res['sample_id']}: {'OK, content hash reproduced' if res['match'] else 'MISMATCH'} "
                  f"({res['replayed_hash'][:16]})")
            stored = res.get("stored_hash", res["recorded_hash"])
            if stored != res["recorded_hash"]:
                print(f"  stored {stored[:16]} differs from recorded {res['recorded_hash'][:16]}: the stored sample "
                      "was changed after it was written")
            if res["replayed_hash"] != res["recorded_hash"]:
                print(f"  regenerated {res['replayed_hash'][:16]} differs from recorded {res['recorded_hash'][:16]}: "
                      "its stage now makes other bytes from the same record")
            if res.get("params_redrawn_match") is False:
                print("note: params.yaml has changed since; re-drawing from the seed gives other op params")
        return 0 if res["match"] else 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
