"""`cestab probe` on a user's own files: the error table, and one-line errors for bad files."""

import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

from harness.errors import UsageError
from harness.inputs.probe import batch


def probe(*args):
    return subprocess.run([sys.executable, "-m", "harness.cli", "probe", *args], capture_output=True, text=True)


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, (2, 3, 20)).astype(np.float32)
    z[0, 0, 5] = 200.0  # exp overflows float32: the naive formula breaks here
    t = rng.integers(0, 20, (2, 3))
    np.save(tmp_path / "z.npy", z)
    np.save(tmp_path / "t.npy", t)
    return tmp_path


def test_probe_prints_one_row_per_adapter_with_findings(files):
    p = probe("--logits", str(files / "z.npy"), "--labels", str(files / "t.npy"),
              "--adapters", "numpy.stable,numpy.naive,torch.cross_entropy")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("6 rows x 20 classes, float32")
    lines = {l.split()[0]: l for l in p.stdout.splitlines()[2:]}
    assert lines["numpy.stable"].split()[1] == "ok" and lines["torch.cross_entropy"].split()[1] == "ok"
    assert lines["numpy.naive"].split()[1] == "nonfinite"
    assert "WARNING" not in p.stdout + p.stderr  # framework chatter stays out of the terminal


def test_batch_flattens_3d_and_maps_minus_100_to_ignored(tmp_path):
    z = np.zeros((2, 2, 4), np.float16)
    t = np.array([[1, -100], [3, 0]])
    np.savez(tmp_path / "b.npz", logits=z, labels=t)
    case = batch(tmp_path / "b.npz", tmp_path / "b.npz")
    assert case.shape == (4, 4) and case.dtype == "float16"
    assert case.ignored.tolist() == [False, True, False, False] and case.target.tolist() == [1, 0, 3, 0]


def test_bfloat16_bits_and_dtype_override(tmp_path):
    z = np.array([[1.0, 2.0, 3.0]], dtype=ml_dtypes.bfloat16)
    np.save(tmp_path / "z.npy", z)  # numpy stores bfloat16 as 2 raw bytes
    np.save(tmp_path / "t.npy", np.array([2]))
    case = batch(tmp_path / "z.npy", tmp_path / "t.npy")
    assert case.dtype == "bfloat16" and (case.logits.astype(np.float64) == [[1, 2, 3]]).all()
    np.save(tmp_path / "z32.npy", np.array([[0.1, 0.2, 0.3]], np.float32))
    rounded = batch(tmp_path / "z32.npy", tmp_path / "t.npy", dtype="float16")
    assert rounded.logits.dtype == np.float16 and rounded.logits[0, 0] == np.float16(0.1)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: (d / "z.npy").write_text("not numpy"), "not a readable .npy/.npz file"),
        (lambda d: np.save(d / "z.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True), "pickled objects"),
        (lambda d: np.save(d / "z.npy", np.zeros((3, 4), np.float32)), "labels shape (2,) does not match logits (3, 4)"),
        (lambda d: np.save(d / "z.npy", np.zeros((2, 1), np.float32)), "V >= 2"),
        (lambda d: np.save(d / "z.npy", np.zeros((2, 4), np.int32)), "logits must be float16, bfloat16, float32 or float64"),
    ],
)
def test_bad_files_are_one_line_errors_with_exit_2(tmp_path, make, message):
    np.save(tmp_path / "t.npy", np.array([0, 1]))
    make(tmp_path)
    p = probe("--logits", str(tmp_path / "z.npy"), "--labels", str(tmp_path / "t.npy"))
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert message in p.stderr


def test_labels_out_of_range_and_missing_files(tmp_path):
    np.save(tmp_path / "z.npy", np.zeros((2, 4), np.float32))
    np.save(tmp_path / "t.npy", np.array([0, 7]))
    with pytest.raises(UsageError, match=r"label 7 at row 1 is out of range \[0, 4\)"):
        batch(tmp_path / "z.npy", tmp_path / "t.npy")
    np.save(tmp_path / "neg.npy", np.array([-3, 0]))
    with pytest.raises(UsageError, match="label -3 at row 0"):
        batch(tmp_path / "z.npy", tmp_path / "neg.npy")
    with pytest.raises(UsageError, match="does not exist"):
        batch(tmp_path / "nope.npy", tmp_path / "t.npy")
