"""`cestab`: the command line, a thin layer over the Python API.

A user mistake (unknown adapter, dtype or regime, bad option value, unwritable output)
prints one line, `cestab: error: ...`, and exits with code 2; no traceback.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys

from harness.adapters import registry
from harness.inputs import regimes as regime_table
from harness.numerics.cases import LABEL_KINDS
from harness.numerics.dtypes import DTYPE_NAMES
from harness.errors import UsageError
from harness.store import memory
from harness.store.validate import MAX_JOBS, MAX_SEED, MAX_TIMEOUT

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not usage + message
        raise UsageError(message)


def _csv(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("empty list")
    return items


def _shapes(text: str, dims=(2,)) -> list[tuple[int, ...]]:
    """ROWSxCLASSES items (or, where `dims` allows 3, ROWSxTIMExCLASSES)."""
    out = []
    for item in _csv(text):
        try:
            shape = tuple(int(x) for x in item.lower().split("x"))
        except ValueError:
            shape = ()
        if len(shape) not in dims:
            forms = "ROWSxCLASSES, e.g. 64x32000" + (", or ROWSxTIMExCLASSES, e.g. 4x128x32000" if 3 in dims else "")
            raise argparse.ArgumentTypeError(f"bad shape {item!r}: write {forms}")
        out.append(shape)
    return out


def _regime_shapes(text: str) -> list[tuple[int, ...]]:
    return _shapes(text, dims=(2, 3))


def _number(parse, valid, what: str):
    """An argparse type: `parse(text)`, accepted when finite and `valid(value)`, else one
    clear line. Checked here, at parse time: a seed >= 2**63 or a timeout of inf used to be
    accepted, the whole run computed, and the results (or the first worker call) fail."""

    def convert(text: str):
        try:
            value = parse(text)
        except (ValueError, OverflowError):
            value = None
        if value is None or not math.isfinite(value) or not valid(value):
            raise argparse.ArgumentTypeError(f"{what}, got {text!r}")
        return value

    return convert


_seed = _number(int, lambda v: 0 <= v <= MAX_SEED, "seed must be a non-negative integer below 2**63")
_cases = _number(int, lambda v: v >= 1, "ray chunk must be a positive number of cases")
_positive = _number(float, lambda v: 0 < v <= MAX_TIMEOUT, f"timeout must be positive seconds, at most {MAX_TIMEOUT:g}")
_jobs = _number(int, lambda v: 1 <= v <= MAX_JOBS, f"jobs must be a positive integer, at most {MAX_JOBS}")


def _regimes(text: str) -> list[str]:
    """Regime names, or "none" (an empty list: no regime cases)."""
    return [] if text.strip() == "none" else _csv(text)


_non_negative = _number(float, lambda v: v >= 0, "must be a non-negative number")


def _max_memory(text: str) -> int:
    try:
        return memory.parse(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_max_memory(parser) -> None:
    parser.add_argument("--max-memory", type=_max_memory, metavar="SIZE",
                        help=f"refuse work needing more memory than this, e.g. 8G (default: "
                             f"${memory.ENV}, else {int(memory.DEFAULT_FRACTION * 100)}%% of this machine's)")


#: The `run` options `--resume` takes; every other one is refused (see `cmd_run`).
RESUME_OPTIONS = {"resume", "quiet", "max_memory", "help", "executor", "ray_address", "jobs"}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cestab", description="Accuracy and speed of softmax cross-entropy implementations.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run the comparison suite and write a run folder")
    run.add_argument("--adapters", type=_csv, help="comma-separated adapter ids (default: all available)")
    run.add_argument("--dtypes", type=_csv, help=f"comma-separated, from {', '.join(DTYPE_NAMES)} (default: all)")
    run.add_argument("--regimes", type=_regimes, help=f"comma-separated, from {', '.join(regime_table.REGIMES)} (default: all;"
                     " none: no regime cases, e.g. the search alone)")
    run.add_argument("--label-kinds", type=_csv, help=f"comma-separated, from {', '.join(LABEL_KINDS)} (default: all)")
    run.add_argument("--shapes", type=_regime_shapes, help="comma-separated ROWSxCLASSES or ROWSxTIMExCLASSES (default: %s)" % ",".join(f"{n}x{v}" for n, v in regime_table.DEFAULT_SHAPES))
    run.add_argument("--seed", type=_seed, default=0, help="seed of every case (default 0)")
    run.add_argument(
        "--adapter",
        dest="plugins",
        action="append",
        default=[],
        metavar="MODULE:FUNCTION[@FRAMEWORK]",
        help="also run your own implementation: an Adapter, or loss(logits, labels) -> per-row loss (repeatable)",
    )
    run.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    run.add_argument("--timeout", type=_positive, default=120.0, help="seconds one adapter may take on one case (default 120)")
    run.add_argument("--out", default="runs", help="parent folder of the run folder (default: runs)")
    run.add_argument("--budget", choices=("none", "quick", "standard", "deep"), default="quick",
                     help="worst-case search per adapter x dtype (default quick; none to skip)")
    run.add_argument("--no-corpus", dest="corpus", action="store_false",
                     help="leave out the corpus of public bug reports (harness/inputs/corpus.json)")
    run.add_argument("--resume", metavar="RUN_DIR",
                     help="finish an interrupted run folder with its own options (run.json); "
                          "takes no other option but --quiet, --max-memory, --jobs and where it runs "
                          "(--executor, --ray-address)")
    run.add_argument("--executor", choices=("local", "ray"),
                     help="where the work runs: local worker processes (default), or units on a Ray cluster "
                          "(pip install 'cestab[ray]'; README: Running on a cluster)")
    run.add_argument("--ray-address", metavar="ADDR",
                     help="with --executor ray: join the cluster at HOST:PORT, or auto (the one on this machine); "
                          "default: start a local Ray instance for this run")
    run.add_argument("--ray-chunk", type=_cases, metavar="N",
                     help="with --executor ray: cases per unit of work (default: from the cluster's CPUs)")
    run.add_argument("--jobs", type=_jobs, help="framework workers running at the same time (default: the number of "
                     "cores; local executor only)")
    run.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    _add_max_memory(run)

    repro = sub.add_parser("repro", help="replay a case (a search's .npz, or any case id of a results table)")
    repro.add_argument("path", help="RUN_DIR/worst/....npz, or a case id such as typical/float16/16x1000/index/s0")
    repro.add_argument("--adapters", type=_csv, help="comma-separated adapter ids (default: the one it was found with)")
    repro.add_argument("--adapter", dest="plugins", action="append", default=[], metavar="MODULE:FUNCTION[@FRAMEWORK]",
                       help="also load your own implementation, as in cestab run (repeatable)")
    repro.add_argument("--timeout", type=_positive, default=120.0, help="seconds one adapter may take (default 120)")
    _add_max_memory(repro)

    probe = sub.add_parser("probe", help="run every adapter on your own batch (.npy/.npz) and print the errors")
    probe.add_argument("--logits", required=True, help="(N, V) or (N, T, V) logits, .npy or .npz")
    probe.add_argument("--labels", required=True, help="integer classes (-100: ignored) or dense label rows")
    probe.add_argument("--dtype", help="tested dtype (default: the logits file's own)")
    probe.add_argument("--adapters", type=_csv, help="comma-separated adapter ids (default: all available)")
    probe.add_argument("--adapter", dest="plugins", action="append", default=[], metavar="MODULE:FUNCTION[@FRAMEWORK]",
                       help="also run your own implementation, as in cestab run (repeatable): is my kernel wrong here?")
    probe.add_argument("--timeout", type=_positive, default=120.0, help="seconds one adapter may take (default 120)")
    _add_max_memory(probe)

    check = sub.add_parser("check", help="CI gate: compare a run with a baseline; exit 1 on a regression")
    check.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="a finished run folder (or --quick)")
    check.add_argument("--baseline", required=True, metavar="FILE", help="the baseline JSON (e.g. reports/baseline.json)")
    check.add_argument("--quick", action="store_true", help="make a fresh deterministic run of the baseline's options")
    check.add_argument("--rtol", type=_non_negative, default=0.5, help="allowed relative growth of the largest ulps (default 0.5)")
    check.add_argument("--slack", type=_non_negative, default=2.0, help="allowed absolute growth, in ulps (default 2)")
    check.add_argument("--strict", action="store_true", help="a group missing from the run is a regression")
    check.add_argument("--junit", metavar="PATH", help="also write a JUnit XML report")
    check.add_argument("--update-baseline", action="store_true", help="rewrite the baseline from this run (atomically)")
    check.add_argument("--adapter", dest="plugins", action="append", default=[], metavar="MODULE:FUNCTION[@FRAMEWORK]",
                       help="with --quick: also run your own implementation (repeatable)")
    check.add_argument("--compare-as", action="append", default=[], metavar="RUN_ADAPTER=BASELINE_ADAPTER",
                       help="judge one adapter's rows against another's baseline (repeatable)")
    check.add_argument("--out", default="runs", help="with --quick: parent of the run folder (default: runs)")
    check.add_argument("--timeout", type=_positive, default=120.0, help="with --quick: seconds per adapter and case (default 120)")
    check.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_max_memory(check)

    sub.add_parser("list", help="list adapters, and the frameworks that are unavailable")

    report = sub.add_parser("report", help="write the stability report (Markdown, HTML, figures) from run folders")
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders (results.parquet, run.json)")
    report.add_argument("--out", default="reports", help="output folder (default: reports)")
    _bench_parser(sub)
    return parser


def cmd_run(args) -> int:
    """`--resume` finishes a run with the options it was started with (run.json), so every
    option that would change them is refused with one line rather than silently ignored
    (an interrupted run resumed with other adapters or another timeout would be a table of
    mixed provenance); only --quiet, --max-memory, --jobs and where the work runs (--executor, --ray-address),
    which change no result, are taken."""
    from harness.run.runner import run
    from harness.run.summary import format_summary, format_timing, summarize

    if args.resume is not None:
        given = sorted(k for k in getattr(args, "_given", ()) if k not in RESUME_OPTIONS)
        if given:
            names = ", ".join("--" + k.replace("_", "-") for k in given)
            raise UsageError(f"--resume finishes a run with its own options (its run.json); leave out {names}")
    df = run(
        adapters=args.adapters,
        dtypes=args.dtypes,
        regimes_=args.regimes,
        shapes=args.shapes,
        label_kinds=args.label_kinds,
        seed=args.seed,
        device=args.device,
        out_dir=args.out,
        progress=not args.quiet,
        command=shlex.join(["cestab", *sys.argv[1:]]),
        plugins=tuple(args.plugins),
        timeout=args.timeout,
        resume=args.resume,
        budget=None if args.budget == "none" else args.budget,
        corpus=args.corpus,
        executor=args.executor,
        ray_address=args.ray_address,
        ray_chunk=args.ray_chunk,
        jobs=args.jobs,
    )
    if not args.quiet:
        print(format_summary(summarize(df)))
        print(format_timing(df.attrs["timing"]))
    if args.corpus:
        from harness.inputs.expectations import changed

        for line in changed(df):
            print(line)
    print(f"results: {df.attrs['run_dir']}")
    return 0


def cmd_list(args) -> int:
    gpu = registry.gpu_present()
    rows = []
    for adapter in sorted(registry.all_adapters().values(), key=lambda a: a.id):
        devices = [d if d == "cpu" or gpu else f"{d}(no GPU)" for d in adapter.devices]
        rows.append(
            (adapter.id, f"{adapter.framework} {registry.framework_version(adapter.framework)}", ",".join(adapter.dtypes),
             ",".join(adapter.label_kinds) + ("+ignore" if adapter.supports_ignore else ""), ",".join(devices))
        )
    for framework, reason in registry.unavailable().items():
        rows.append((f"{framework}.*", "unavailable", reason, "", ""))
    header = ("adapter", "framework", "dtypes", "labels", "devices")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    return 0


def cmd_probe(args) -> int:
    from harness.inputs.probe import batch
    from harness.run.runner import run

    notes: list[str] = []
    case = batch(args.logits, args.labels, args.dtype, notes=notes)
    df = run(adapters=args.adapters, cases=[case], timeout=args.timeout, plugins=tuple(args.plugins))
    for note in notes:
        print(f"note: {note}")
    _print_errors(case, df)
    return 0


def cmd_repro(args) -> int:
    from harness.inputs import replay
    from harness.run.runner import run

    case, info = replay.load(args.path)
    adapters = args.adapters or ([info["adapter"]] if "adapter" in info else None)
    df = run(adapters=adapters, cases=[case], timeout=args.timeout, plugins=tuple(args.plugins))
    if "adapter" in info:
        print(f"found with {info['adapter']}: {info.get('status')} (score {float(info.get('score', float('nan'))):.3g}) {info.get('message', '')}")
    _print_errors(case, df)
    return 0


def _print_errors(case, df) -> None:
    """The table of one case's rows. A column may be all NA (no adapter produced metrics:
    all unsupported, error, crash or timeout): that is a table to show, not a crash."""
    import pandas as pd

    n, v = case.shape
    undefined = pd.to_numeric(df["n_rows_undefined"], errors="coerce").max()
    print(f"{n} rows x {v} classes, {case.dtype}; {0 if pd.isna(undefined) else int(undefined)} rows with no finite truth")
    table = df.set_index("adapter")[["status", "out_dtype", "loss_ulps", "grad_ulps", "loss_att_ratio", "grad_att_ratio",
                                     "loss_tol_ratio", "grad_tol_ratio", "message"]]
    with pd.option_context("display.width", 200, "display.max_colwidth", 90, "display.float_format", "{:.3g}".format):
        print(table.sort_index().to_string())


def cmd_report(args) -> int:
    from harness.report.write import write_report

    written = write_report(args.run_dirs, args.out, command=shlex.join(["cestab", *sys.argv[1:]]))
    print(f"report: {written['stability.md']} and {written['stability.html']}")
    return 0


COMMANDS = {"run": cmd_run, "probe": cmd_probe, "repro": cmd_repro, "list": cmd_list, "report": cmd_report}


def cmd_check(args) -> int:
    from harness.gate import check
    from harness.gate import checkreport
    from harness.store import validate

    if args.junit:  # before the run: an unwritable report path found after it loses the run's verdict
        validate.writable(args.junit, "JUnit report", make_parents=True)

    gate = check.gate(
        args.baseline,
        run_dir=args.run_dir,
        quick=args.quick,
        rtol=args.rtol,
        slack=args.slack,
        strict=args.strict,
        plugins=tuple(args.plugins),
        aliases=check.parse_aliases(args.compare_as),
        update=args.update_baseline,
        out_dir=args.out,
        timeout=args.timeout,
        progress=not args.quiet,
        command=shlex.join(["cestab", *sys.argv[1:]]),
    )
    print(checkreport.format_table(gate))
    if args.junit:
        checkreport.write_junit(args.junit, gate)
    checkreport.append_step_summary(gate)
    if gate.run_dir:
        print(f"results: {gate.run_dir}")
    return gate.exit_code


COMMANDS["check"] = cmd_check


def _bench_parser(sub) -> None:
    bench = sub.add_parser("bench", help="time forward and forward+backward per adapter x dtype x shape (bench.parquet); "
                           "always on this machine, never on a Ray cluster (timings on shared nodes mean nothing)")
    bench.add_argument("--adapters", type=_csv, help="comma-separated adapter ids (default: all available)")
    bench.add_argument("--dtypes", type=_csv, help="comma-separated dtypes (default: float32 on cpu; float32,bfloat16 on cuda)")
    bench.add_argument("--shapes", type=_shapes, help="comma-separated ROWSxCLASSES (default: 256x32000,4096x32000 on cpu; "
                       "8192x128256, and 16384x256000 in bfloat16, on cuda)")
    bench.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    bench.add_argument("--seed", type=_seed, default=0, help="seed of the batches (default 0)")
    bench.add_argument("--adapter", dest="plugins", action="append", default=[], metavar="MODULE:FUNCTION[@FRAMEWORK]",
                       help="also time your own implementation (repeatable)")
    bench.add_argument("--repeats", type=_count, help="at least this many timed calls per pass (default 3 cpu, 10 cuda)")
    bench.add_argument("--min-time", type=_seconds, help="and at least this many seconds per pass (default 0.3)")
    bench.add_argument("--max-time", type=_seconds, help="stop a pass's timed calls after this many seconds (default 3 cpu, 2 cuda)")
    bench.add_argument("--time-budget", type=_seconds, help="seconds for the whole bench; what is left is marked skipped")
    bench.add_argument("--timeout", type=_positive, default=600.0, help="seconds one adapter may take on one batch (default 600)")
    where = bench.add_mutually_exclusive_group()
    where.add_argument("--out", default="runs", help="parent folder of a new run folder (default: runs)")
    where.add_argument("--run-dir", help="an existing run folder: add bench.parquet/bench.csv beside its results")
    bench.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    _add_max_memory(bench)


_count = _number(int, lambda v: v >= 1, "repeats must be a positive integer")
_seconds = _number(float, lambda v: v > 0, "time must be positive seconds")


def cmd_bench(args) -> int:
    from dataclasses import replace

    from harness.bench.measure import DEFAULT_TIMING
    from harness.bench.runner import bench
    from harness.bench.table import format_compare

    timing = DEFAULT_TIMING.get(args.device)
    if timing is not None:
        overrides = {"min_repeats": args.repeats, "min_time": args.min_time, "max_time": args.max_time}
        timing = replace(timing, **{k: v for k, v in overrides.items() if v is not None})
    df = bench(
        adapters=args.adapters,
        dtypes=args.dtypes,
        shapes=args.shapes,
        device=args.device,
        out_dir=None if args.run_dir else args.out,
        run_dir=args.run_dir,
        seed=args.seed,
        timing=timing,
        time_budget=args.time_budget,
        timeout=args.timeout,
        plugins=tuple(args.plugins),
        progress=not args.quiet,
        command=shlex.join(["cestab", *sys.argv[1:]]),
    )
    if not args.quiet:
        print(format_compare(df))
    print(f"bench: {df.attrs['run_dir']}")
    return 0


COMMANDS["bench"] = cmd_bench


def main(argv=None) -> int:
    limit_before = memory._limit
    try:
        argv = sys.argv[1:] if argv is None else list(argv)
        if any("\x00" in str(a) for a in argv):  # no shell passes one; os calls on such a path raise ValueError
            raise UsageError("an argument contains a NUL byte")
        parser = build_parser()
        args = parser.parse_args(argv)
        args._given = _given_options(parser, argv)
        memory.reuse_freed_memory()
        if getattr(args, "max_memory", None) is not None:
            memory.set_limit(args.max_memory)
        return COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"cestab: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("cestab: interrupted", file=sys.stderr)
        return 130
    finally:  # an in-process caller (tests, a notebook) keeps its own limit
        memory.set_limit(limit_before)


def _given_options(parser, argv) -> set[str]:
    """The dests of the options written on the command line (not left at their defaults):
    the subcommand's arguments parsed again into a namespace whose defaults are suppressed."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    command = next((i for i, t in enumerate(argv) if t in sub.choices), None)
    if command is None:
        return set()
    subparser = sub.choices[argv[command]]
    saved = [(a, a.default) for a in subparser._actions]
    try:
        for action, _ in saved:
            action.default = argparse.SUPPRESS
        given, _ = subparser.parse_known_args(argv[command + 1:])
    finally:
        for action, default in saved:
            action.default = default
    return set(vars(given))


if __name__ == "__main__":
    sys.exit(main())
