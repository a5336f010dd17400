"""Fuzzing the `cestab` command line: hostile argument vectors, malformed `.npy`/`.npz`
headers and JSON structures (run.json, rows.jsonl lines, baselines, case files) for every
command, against the CLI's contract:

- the exit code is 0, 1 or 2, and an exit 2 is one line `cestab: error: ...`;
- nothing escapes `main` (never a traceback), no numpy RuntimeWarning leaks;
- every file the command wrote or changed is whole and readable (no leftover temporary
  file, JSON that parses strictly, tables and case files that load);
- no allocation beyond the memory bound (`--max-memory`; measured with tracemalloc, which
  numpy reports its array allocations to, even those the OS would overcommit lazily).

Why: issue 13 found about 20 distinct tracebacks and 9 silent mis-loads by hand; a fuzz
test makes that class of bug hard to reintroduce. The CLI runs in this process
(`harness.cli.main`), so the CI budget stays small: derandomized, a few hundred inputs in
all. The deep variant (`pytest -m deep tests/test_cli_fuzz.py`) is random and as long as
$CESTAB_FUZZ_EXAMPLES says (default 2000 per target); $CESTAB_FUZZ_LOG names a file that
receives the count of inputs tried per target.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import struct
import tempfile
import time
import tracemalloc
import warnings
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import harness
from harness.gate import baseline
from harness.store import casefile
from harness import cli
from harness.store import memory
from harness.inputs import regimes

#: The bound every fuzzed command runs under (the test sets it; `--max-memory` values the
#: fuzz draws are never larger).
BOUND = 256 * 2**20
#: What the test's own machinery (hypothesis, pandas, the file checks) may add to the peak.
SLACK = 64 * 2**20

DEEP = int(os.environ.get("CESTAB_FUZZ_EXAMPLES", "2000"))
TRIED: Counter = Counter()

CI = settings(max_examples=int(os.environ.get("CESTAB_FUZZ_CI_EXAMPLES", "15")), deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
DEEP_SETTINGS = settings(max_examples=DEEP, deadline=None, derandomize=False, database=None,
                         suppress_health_check=list(HealthCheck))


# ---------------------------------------------------------------- the contract


def _snapshot(root: Path) -> dict:
    out = {}
    for p in root.rglob("*"):
        try:
            st_ = p.lstat()
        except OSError:
            continue
        out[p] = (st_.st_mtime_ns, st_.st_size, st_.st_ino)
    return out


def _strict_json(text: str):
    def refuse(token):
        raise ValueError(f"bare {token}")

    return json.loads(text, parse_constant=refuse)


def _check_outputs(root: Path, before: dict) -> None:
    """Every file written or changed under `root` is whole and readable."""
    after = _snapshot(root)
    for path, sig in after.items():
        if before.get(path) == sig or path.is_dir() or path.is_symlink():
            continue
        name = path.name
        assert not (name.startswith(".") and name.endswith(".tmp")), f"left a temporary file {path}"
        if name.endswith(".json"):
            _strict_json(path.read_text(encoding="utf-8"))
        elif name.endswith(".parquet"):
            pd.read_parquet(path)
        elif name.endswith(".csv") and path.stat().st_size:
            pd.read_csv(path)
        elif name.endswith(".npz") and path.parent.name == "worst":
            casefile.load(path)
        elif name == "rows.jsonl":
            for line in path.read_text(encoding="utf-8").splitlines():
                json.loads(line)
        elif name.endswith(".xml"):
            import xml.etree.ElementTree as ET

            ET.parse(path)


def run_cli(argv, root: Path, target: str) -> tuple[int, str, str]:
    """`cestab argv` in this process, checked against the contract; (code, stdout, stderr)."""
    TRIED[target] += 1
    argv = [str(a) for a in argv]
    if os.environ.get("CESTAB_FUZZ_TRACE"):  # which input is running, for a hang's post-mortem
        with open(os.environ["CESTAB_FUZZ_TRACE"], "a") as f:
            f.write(json.dumps(argv) + "\n")
    before = _snapshot(root)
    out, err = io.StringIO(), io.StringIO()
    memory.set_limit(BOUND)
    t0 = time.perf_counter()
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        # in the input's own folder: a relative --out of a generated argv lands there, never in the checkout
        with contextlib.chdir(root), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            try:
                code = cli.main(argv)
            except SystemExit as exc:  # --help, and argparse's own exits
                code = exc.code if isinstance(exc.code, int) else 2
            except BaseException as exc:  # noqa: BLE001 - this is what the contract forbids
                import traceback

                raise AssertionError(f"traceback from cestab {argv}:\n{traceback.format_exc()}") from exc
        _, peak = tracemalloc.get_traced_memory()
        if os.environ.get("CESTAB_FUZZ_TRACE"):
            with open(os.environ["CESTAB_FUZZ_TRACE"], "a") as f:
                f.write(f"  -> {code} in {time.perf_counter() - t0:.1f} s, peak {peak / 2**20:.0f} MiB\n")
    finally:
        tracemalloc.stop()
        memory.set_limit(None)
    stdout, stderr = out.getvalue(), err.getvalue()
    assert code in (0, 1, 2), (argv, code, stderr)
    assert "Traceback" not in stderr, (argv, stderr)
    if code == 2 and not stdout.startswith("usage:"):
        assert stderr.startswith("cestab: error: ") and stderr.count("\n") == 1, (argv, stderr)
    leaked = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert not leaked, (argv, leaked)
    assert peak <= BOUND + SLACK, f"cestab {argv} allocated {peak / 2**20:.0f} MiB, bound {BOUND / 2**20:.0f} MiB"
    _check_outputs(root, before)
    return code, stdout, stderr


@pytest.fixture(scope="module", autouse=True)
def _report_counts(request):
    yield
    line = "cli fuzz inputs tried: " + ", ".join(f"{k} {v}" for k, v in sorted(TRIED.items())) + f" (total {sum(TRIED.values())})"
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter and TRIED:
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            reporter.write_line("\n" + line)
    log = os.environ.get("CESTAB_FUZZ_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{time.strftime('%H:%M:%S')} {line}\n")


@contextlib.contextmanager
def workdir():
    with tempfile.TemporaryDirectory(prefix="cestab-fuzz-") as d:
        yield Path(d)


# ---------------------------------------------------------------- shared material


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A small finished run folder (with a search finding) to copy and damage."""
    df = harness.run(adapters=["numpy.stable", "numpy.naive"], dtypes=["float32"], regimes_=["typical", "large_offset"],
                     shapes=[(4, 10)], label_kinds=["index"], corpus=False, isolate=False, budget=None,
                     out_dir=tmp_path_factory.mktemp("fuzz-run"))
    return Path(df.attrs["run_dir"])


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
    st.sampled_from([2**63, 2**64 - 100, -1, 0, 1e400, -1e400, 1e308, 0.5, 1e-320]),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=6),
    st.sampled_from(["abc", "", "numpy.stable", "typical", "float32", "index", "cpu", "cuda", "inf", "NaN", "quick"]),
)
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                           max_leaves=6)
#: Raw text of a JSON file: valid values, and texts that are not JSON at all.
json_texts = st.one_of(
    json_values.map(json.dumps),
    st.sampled_from(["", "{", "NaN", "Infinity", '{"a": NaN}', "[" * 5000, "\x00\xff", "{}" * 3, "null"]),
    st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
)


def hostile(valid, heavy_if=()):
    """`valid` or a hostile JSON value, never one of `heavy_if` (values that would select a
    whole default run, e.g. null regimes: legitimate work, too long for a fuzz input)."""
    return st.one_of(st.just(valid), st.just(valid), json_values.filter(lambda v: v not in heavy_if))


NARROW = {"adapters": ["numpy.stable"], "plugins": [], "dtypes": ["float32"], "regimes": ["typical"], "shapes": [[2, 3]],
          "label_kinds": ["index"], "seed": 0, "device": "cpu", "isolate": False, "timeout": 30.0, "budget": None,
          "corpus": False}
_HEAVY = {"dtypes": (None, []), "regimes": (None, []), "shapes": (None, []), "label_kinds": (None, []), "adapters": (None,),
          "budget": ("quick", "standard", "deep"), "corpus": (True,), "isolate": (True,)}


@st.composite
def mutated(draw, valid: dict, heavy: dict | None = None, deletable=()):
    """`valid` with none, one or a few fields replaced by hostile JSON values (or deleted,
    for `deletable` ones): a structure wrong in one place, as hand edits and old versions
    make them, which reaches the code behind the first check more often than noise."""
    heavy = heavy or {}
    out = dict(valid)
    for key in draw(st.lists(st.sampled_from(sorted(valid)), max_size=draw(st.sampled_from([0, 0, 1, 1, 2, 4])), unique=True)):
        if key in deletable and draw(st.integers(0, 3)) == 0:
            del out[key]
        else:
            out[key] = draw(json_values.filter(lambda v, k=key: v not in heavy.get(k, ())))
    return out


def options_strategy(keys=tuple(NARROW)):
    return mutated({k: NARROW[k] for k in keys}, _HEAVY, deletable=("plugins", "seed", "device", "timeout", "budget"))


# ---------------------------------------------------------------- 1. argument vectors


PATH_TOKENS = ["{run}", "{dir}", "{missing}", "{npy}", "{bad_npy}", "{npz}", "{case}", "{text}", "{baseline}", "{out}"]
VALUES = ["0", "-1", "1", "2.5", "1e10", "inf", "-inf", "nan", str(2**63), str(2**63 - 1), "1_000", "", " ", "abc", "0x10",
          "4x10", "2x3", "2x2x3", "0x10", "4x1", "10by10", "99999999999x99999999999", "4096x32000", "100000x100000",
          "numpy.stable", "numpy.naive", "numpy.stable,numpy.naive", "nope", ",", "float32", "float8", "bfloat16,float16",
          "typical", "calm", "index", "soft", "hard", "cpu", "tpu", "cuda", "none", "bogus", "1M", "64M", "256M", "1e400M",
          "-5M", "no_such_module:fn", ":f", "os:getcwd", "math:pi", "a b:c", "x=y", "=", "numpy.naive=numpy.stable",
          "typical/float32/4x10/index/s0", "typical/float32/4x1/index/s0", "corpus/nope/float32", "\x00", "é", "-" * 3,
          *PATH_TOKENS]
OPTIONS = {
    "run": ["--adapters", "--dtypes", "--regimes", "--label-kinds", "--shapes", "--seed", "--adapter", "--device", "--timeout",
            "--out", "--budget", "--resume", "--max-memory", "--jobs"],
    "repro": ["--adapters", "--adapter", "--timeout", "--max-memory"],
    "probe": ["--logits", "--labels", "--dtype", "--adapters", "--adapter", "--timeout", "--max-memory"],
    "check": ["--baseline", "--rtol", "--slack", "--junit", "--adapter", "--compare-as", "--out", "--timeout", "--max-memory"],
    "report": ["--out"],
    "bench": ["--adapters", "--dtypes", "--shapes", "--device", "--seed", "--repeats", "--min-time", "--max-time",
              "--time-budget", "--timeout", "--out", "--run-dir", "--max-memory"],
    "list": [],
}
FLAGS = {"run": ["--no-corpus", "--quiet"], "check": ["--quick", "--strict", "--update-baseline", "--quiet"],
         "bench": ["--quiet"], "probe": [], "repro": [], "report": [], "list": []}
#: Prefixes that keep a fuzzed command's real work small: later tokens may override them
#: (argparse: the last one wins), but only from the small or refused values above.
PREFIX = {
    "run": ["--adapters", "numpy.stable", "--dtypes", "float32", "--regimes", "typical", "--label-kinds", "index",
            "--shapes", "2x3", "--budget", "none", "--no-corpus", "--quiet", "--timeout", "30", "--out", "{out}"],
    "bench": ["--adapters", "numpy.stable", "--shapes", "2x3", "--repeats", "1", "--min-time", "0.001", "--max-time", "0.01",
              "--time-budget", "5", "--timeout", "30", "--quiet", "--out", "{out}"],
    "probe": ["--adapters", "numpy.stable", "--timeout", "30"],
    "repro": ["--adapters", "numpy.stable", "--timeout", "30"],
    "check": ["--out", "{out}", "--quiet", "--timeout", "30"],
    "report": ["--out", "{out}/report"],
    "list": [],
}


def _token_lists(command):
    opts, flags = OPTIONS[command], FLAGS[command]
    pair = st.tuples(st.sampled_from(opts), st.sampled_from(VALUES)).map(list) if opts else st.nothing()
    single = st.sampled_from(flags + ["--help", "--frobnicate", "-x"] + VALUES[:12] + PATH_TOKENS).map(lambda t: [t])
    return st.lists(st.one_of(pair, pair, single), max_size=6).map(lambda ls: [t for part in ls for t in part])


argvs = st.sampled_from(sorted(OPTIONS)).flatmap(
    lambda c: _token_lists(c).map(lambda tokens: [c, *PREFIX[c], *tokens])
) | st.lists(st.sampled_from(VALUES + ["list", "--help", "report"]), max_size=4)  # no bare `run`: a whole default run


def _materials(root: Path, finished: Path) -> dict:
    """The files a path token stands for: good ones, bad ones, folders, missing paths."""
    run = root / "run"
    shutil.copytree(finished, run)
    np.save(root / "z.npy", np.random.default_rng(0).normal(0, 3, (3, 10)).astype(np.float32))
    np.save(root / "t.npy", np.array([1, 2, 3]))
    (root / "bad.npy").write_bytes(b"\x93NUMPY\x01\x00\x10\x00{'descr': 'x'}  \n")
    np.savez(root / "b.npz", logits=np.zeros((2, 3), np.float32), labels=np.array([0, 1]))
    casefile.save(regimes.make_case("typical", "float32", (2, 3), "index", 0), root / "case.npz",
                  {"adapter": "numpy.stable", "score": 1.0, "status": "ok", "message": ""})
    (root / "text.txt").write_text("hello")
    (root / "dir").mkdir()
    return {"{run}": run, "{dir}": root / "dir", "{missing}": root / "nope", "{npy}": root / "z.npy", "{bad_npy}": root / "bad.npy",
            "{npz}": root / "b.npz", "{case}": root / "case.npz", "{text}": root / "text.txt",
            "{baseline}": root / "baseline.json", "{out}": root / "out"}


def _fill(argv, paths) -> list[str]:
    out = []
    for token in argv:
        for key, value in paths.items():
            token = token.replace(key, str(value))
        out.append(token)
    return out


def _light(argv: list[str]) -> list[str]:
    """`check --quick --update-baseline` without a readable baseline makes a new one of the
    whole default quick run (every adapter and regime): legitimate work, minutes long, so
    not a fuzz input."""
    if "check" in argv and "--quick" in argv:
        argv = [t for t in argv if t != "--update-baseline"]
    return argv


def _argv_fuzz(finished_run, argv):
    argv = _light(argv)
    with workdir() as root:
        paths = _materials(root, finished_run)
        run_cli(_fill(argv, paths), root, "argv")


@CI
@given(argv=argvs)
def test_fuzz_argument_vectors(finished_run, argv):
    _argv_fuzz(finished_run, argv)


# ---------------------------------------------------------------- 2. malformed .npy / .npz


DESCRS = ["<f4", "<f8", "<f2", "|V2", "|V3", "<u8", "<i8", "|b1", "|O", "<U3", "bogus", "<f16", "[('a', '<f4')]", "<c8", ">f4"]
SHAPES = [(3, 10), (10,), (), (0, 10), (3, 1), (2, 3, 10), (10**12,), (10**6, 10**6), (-1, 3), (2.5,), "abc", (3, 10, 0),
          (2**62, 2**62)]


@st.composite
def npy_files(draw, valid_shape=(3, 10), kind="f"):
    """Bytes of an .npy file: a valid array, a damaged one, or a header written by hand."""
    mode = draw(st.sampled_from(["valid", "valid", "truncate", "flip", "header"]))
    if mode in ("valid", "truncate", "flip"):
        dtype = draw(st.sampled_from(["float32", "float64", "float16", "int64", "uint64", "int8", "bool"] if kind == "f"
                                     else ["int64", "uint64", "int32", "float32", "float64", "bool"]))
        shape = draw(st.sampled_from([valid_shape, valid_shape, valid_shape[:1], valid_shape[-1:], (1, *valid_shape[1:]),
                                      (3, 10), (2, 2), ()]))
        values = draw(st.sampled_from([0, 1, 1, 2, -100, 1e6, 2**64 - 100, float("nan"), float("inf"), 3, 0.1]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = np.full(shape, values).astype(dtype) if shape else np.array(values).astype(dtype)
        buf = io.BytesIO()
        np.save(buf, arr)
        data = buf.getvalue()
        if mode == "truncate":
            data = data[: draw(st.integers(0, len(data)))]
        elif mode == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data = data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1:]
        return data
    descr = draw(st.sampled_from(DESCRS))
    shape = draw(st.sampled_from(SHAPES))
    header = "{'descr': %r, 'fortran_order': %s, 'shape': %r, }" % (descr, draw(st.sampled_from(["False", "True", "'x'"])), shape)
    if draw(st.booleans()):
        header = draw(st.text(max_size=60))
    raw = header.encode("utf-8", "replace")
    raw += b" " * ((64 - (10 + len(raw) + 1) % 64) % 64) + b"\n"
    version = draw(st.sampled_from([b"\x01\x00", b"\x02\x00", b"\x03\x00", b"\x09\x00"]))
    length = struct.pack("<H", len(raw)) if version == b"\x01\x00" else struct.pack("<I", len(raw))
    return b"\x93NUMPY" + version + length + raw + draw(st.binary(max_size=64))


@st.composite
def array_files(draw, what, kind, shape):
    """(suffix, bytes): an .npy file, an .npz holding it (maybe under another name, maybe
    with a second member), or a damaged zip."""
    npy = draw(npy_files(valid_shape=shape, kind=kind))
    form = draw(st.sampled_from(["npy", "npy", "npz", "npz2", "zipjunk"]))
    if form == "npy":
        return ".npy", npy
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))) as z:
        z.writestr(draw(st.sampled_from([f"{what}.npy", "arr_0.npy", "x.npy", "x.txt"])), npy)
        if form == "npz2":
            z.writestr("other.npy", npy)
    data = buf.getvalue()
    if form == "zipjunk":
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + draw(st.binary(min_size=1, max_size=8)) + data[i + 8:]
    return ".npz", data


@CI
@given(logits=array_files("logits", "f", (3, 10)), labels=array_files("labels", "i", (3,)),
       dtype=st.sampled_from([None, None, "float16", "bfloat16", "float32", "float64", "int8"]))
def test_fuzz_probe_files(logits, labels, dtype):
    with workdir() as root:
        (root / f"z{logits[0]}").write_bytes(logits[1])
        (root / f"t{labels[0]}").write_bytes(labels[1])
        argv = ["probe", "--logits", root / f"z{logits[0]}", "--labels", root / f"t{labels[0]}", "--adapters", "numpy.stable",
                "--timeout", "30"] + (["--dtype", dtype] if dtype else [])
        run_cli(argv, root, "probe files")


# ---------------------------------------------------------------- 3. JSON structures


@st.composite
def run_jsons(draw):
    meta = {"run_id": "r", "state": "running", "command": "cestab run", "schema_version": 1, "options": draw(options_strategy())}
    for key in draw(st.lists(st.sampled_from(["run_id", "state", "command", "options", "versions", "adapters",
                                              "environment", "timing", "schema_version", "started"]), max_size=2)):
        meta[key] = draw(json_values)
    if draw(st.integers(0, 5)) == 0:
        return draw(json_texts)
    return json.dumps(meta)


@st.composite
def journals(draw, rows):
    lines = [json.dumps(r) for r in rows[: draw(st.integers(0, len(rows)))]]
    for _ in range(draw(st.integers(0, 2))):
        lines.insert(draw(st.integers(0, len(lines))), draw(json_texts).replace("\n", " "))
    text = "\n".join(lines) + ("\n" if lines and draw(st.booleans()) else "")
    return text + draw(st.sampled_from(["", '{"case_id": "typ', "\n"]))


@CI
@given(data=st.data())
def test_fuzz_resume_run_json_and_journal(finished_run, data):
    with workdir() as root:
        run = root / "run"
        shutil.copytree(finished_run, run)
        rows = pd.read_parquet(run / "results.parquet").head(3)
        rows = rows.astype(object).where(rows.notna(), None).to_dict("records")
        (run / "results.parquet").unlink()
        (run / "run.json").write_text(data.draw(run_jsons()))
        (run / "rows.jsonl").write_text(data.draw(journals(rows)))
        run_cli(["run", "--resume", run, *data.draw(st.sampled_from([[], ["--quiet"], ["--max-memory", "64M"]]))], root, "resume")


GROUP = {"adapter": "numpy.stable", "dtype": "float32", "regime": "typical", "framework": "numpy", "cases": 1,
         "worst_status": "ok", "statuses": {"ok": 1}, "loss_ulps": 1.0, "grad_ulps": 2.0, "loss_tol": 0.1, "grad_tol": 0.2, "loss_att": 0.5, "grad_att": 0.5,
         "nonfinite": 0, "failed": 0}


@st.composite
def baselines(draw):
    if draw(st.integers(0, 6)) == 0:
        return draw(json_texts)
    groups = draw(st.lists(mutated(GROUP, deletable=tuple(GROUP)), max_size=3))
    base = {"format": draw(hostile("cestab-baseline")), "format_version": draw(hostile(2)), "schema_version": draw(hostile(1)),
            "options": draw(options_strategy(("adapters", "dtypes", "regimes", "shapes", "label_kinds", "seed", "corpus"))),
            "versions": draw(hostile({"numpy": "1"})), "machine": draw(hostile({})), "groups": draw(hostile(groups))}
    text = json.dumps(base)
    return text.replace('"loss_ulps": 1.0', '"loss_ulps": 1e400') if draw(st.integers(0, 8)) == 0 else text


@CI
@given(data=st.data())
def test_fuzz_check_baseline_and_run_folder(finished_run, data):
    with workdir() as root:
        run = root / "run"
        shutil.copytree(finished_run, run)
        if data.draw(st.booleans()):
            (run / "run.json").write_text(data.draw(run_jsons()))
        (root / "baseline.json").write_text(data.draw(baselines()))
        mode = data.draw(st.sampled_from([[run], [run], ["--quick", "--quiet"]]))
        extra = data.draw(st.lists(st.sampled_from([["--update-baseline"], ["--strict"], ["--junit", root / "j.xml"],
                                                     ["--compare-as", "numpy.naive=numpy.stable"]]), max_size=2))
        if "--quick" in mode:  # see _light
            extra = [e for e in extra if e != ["--update-baseline"]]
        code, _, _ = run_cli(["check", *mode, "--baseline", root / "baseline.json", "--out", root / "out", "--timeout", "30",
                              *[t for e in extra for t in e]], root, "check")
        if code == 0 and ["--update-baseline"] in extra:  # rewritten: a baseline cestab reads back
            baseline.load(root / "baseline.json")


@st.composite
def case_files(draw):
    case = regimes.make_case("typical", "float32", (2, 3), draw(st.sampled_from(["index", "soft"])), 0)
    info = {"case_id": case.case_id, "regime": case.regime, "dtype": case.dtype, "label_kind": case.label_kind,
            "smoothing": 0.0, "seed": 0, "source": "search", "note": "", "batch_shape": [],
            "adapter": "numpy.stable", "score": 1.0, "status": "ok", "message": ""}
    info = draw(mutated(info, {"adapter": (None,)}, deletable=tuple(info)))
    arrays = {"logits_bits": case.logits.view(np.uint32), "target": case.target,
              "info": np.array(json.dumps(info)) if draw(st.integers(0, 8)) else np.array(draw(json_texts))}
    if case.soft_labels is not None:
        arrays["soft_labels"] = case.soft_labels
    swap = draw(st.sampled_from([None, None, "logits_bits", "target", "info", "soft_labels", "ignored"]))
    if swap:
        arrays[swap] = draw(st.sampled_from([np.zeros((2, 6), np.uint16), np.zeros((2, 3), np.uint64), np.zeros(4, np.uint32),
                                             np.array([1.5, 2.0]), np.array([2**64 - 1, 0], np.uint64), np.array(["a", "b"]),
                                             np.zeros((2,), bool), np.zeros((2, 3)), np.array(5)]))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    data = buf.getvalue()
    if draw(st.integers(0, 6)) == 0:
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + draw(st.binary(min_size=1, max_size=6)) + data[i + 6:]
    return data


@CI
@given(data=st.data())
def test_fuzz_repro_case_files(data):
    with workdir() as root:
        (root / "case.npz").write_bytes(data.draw(case_files()))
        adapters = data.draw(st.sampled_from([[], ["--adapters", "numpy.stable"]]))
        run_cli(["repro", root / "case.npz", "--timeout", "30", *adapters], root, "repro")


@CI
@given(data=st.data())
def test_fuzz_report_run_folders(finished_run, data):
    with workdir() as root:
        run = root / "run"
        shutil.copytree(finished_run, run)
        damage = data.draw(st.sampled_from(["run.json", "run.json", "results.parquet", "none"]))
        if damage == "run.json":
            (run / "run.json").write_text(data.draw(run_jsons()))
        elif damage == "results.parquet":
            raw = (run / "results.parquet").read_bytes()
            cut = data.draw(st.integers(0, len(raw)))
            (run / "results.parquet").write_bytes(raw[:cut])
        run_cli(["report", run, "--out", root / "report"], root, "report")


# ---------------------------------------------------------------- the deep variant


@pytest.mark.deep
@pytest.mark.parametrize("target", ["argv", "probe", "resume", "check", "repro", "report"])
def test_fuzz_deep(target, finished_run, request):
    """The same targets, random and long: `pytest -m deep tests/test_cli_fuzz.py`."""
    if "deep" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("deep CLI fuzz: select it with pytest -m deep tests/test_cli_fuzz.py")
    inner = {
        "argv": given(argv=argvs)(lambda argv: _argv_fuzz(finished_run, argv)),
        "probe": given(logits=array_files("logits", "f", (3, 10)), labels=array_files("labels", "i", (3,)),
                       dtype=st.sampled_from([None, None, "float16", "bfloat16", "float32", "float64", "int8"]))(
            test_fuzz_probe_files.hypothesis.inner_test),
        "resume": given(data=st.data())(lambda data: test_fuzz_resume_run_json_and_journal.hypothesis.inner_test(finished_run, data)),
        "check": given(data=st.data())(lambda data: test_fuzz_check_baseline_and_run_folder.hypothesis.inner_test(finished_run, data)),
        "repro": given(data=st.data())(test_fuzz_repro_case_files.hypothesis.inner_test),
        "report": given(data=st.data())(lambda data: test_fuzz_report_run_folders.hypothesis.inner_test(finished_run, data)),
    }[target]
    DEEP_SETTINGS(inner)()
