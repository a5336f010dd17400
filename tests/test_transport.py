"""Messages between the parent and a worker (`harness.adapters.transport`): large arrays
through a shared-memory file, bit for bit, the file gone once read; the pipe where the
file cannot be written; a dead run's folder removed."""

import multiprocessing as mp
import os
import subprocess
import sys
import textwrap
import threading

import ml_dtypes
import numpy as np
import pytest

from harness.adapters import transport
from harness.adapters.contract import Output
from harness.adapters.workers import Attempt


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "ipc"
    path.mkdir(mode=0o700)
    return str(path)


def _pair(folder):
    a, b = mp.Pipe()
    return transport.Channel(a, folder), transport.Channel(b, folder)


def _through_pipe(sender, receiver, message):
    """Send from a thread (a pipe holds ~200 KB; the receiver must read as it is written)."""
    thread = threading.Thread(target=sender.send, args=(message,))
    thread.start()
    got = receiver.recv()
    thread.join()
    return got


def _answer(rng, dtype, shape):
    grad = rng.standard_normal(shape).astype(dtype)
    grad.flat[::7] = -0.0  # signs of zeros must survive
    if np.issubdtype(np.dtype(dtype), np.floating) or dtype == ml_dtypes.bfloat16:
        grad.flat[3] = np.nan
    return Attempt("ran", Output(grad[:, 0].copy(), grad), seconds=0.5, cpu_seconds=0.25)


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, np.float32, np.float64])
def test_a_large_answer_crosses_through_one_shared_file_bit_for_bit_and_the_file_is_gone_after(folder, dtype):
    sender, receiver = _pair(folder)
    rows = transport.SHARED_MIN_BYTES // (300 * np.dtype(dtype).itemsize) + 1  # just over the threshold
    sent = _answer(np.random.default_rng(0), dtype, (rows, 300))
    sender.send(("attempt", "x.y", sent))
    files = os.listdir(folder)
    assert len(files) == 1 and os.path.getsize(os.path.join(folder, files[0])) >= sent.output.grad.nbytes
    kind, adapter_id, got = receiver.recv()
    assert os.listdir(folder) == []
    assert (kind, adapter_id, got.status, got.seconds, got.cpu_seconds) == ("attempt", "x.y", "ran", 0.5, 0.25)
    for a, b in ((sent.output.grad, got.output.grad), (sent.output.loss, got.output.loss)):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()


def test_received_arrays_are_writable_and_a_write_stays_in_the_receiver(folder):
    sender, receiver = _pair(folder)
    sent = np.arange(transport.SHARED_MIN_BYTES // 8, dtype=np.float64)
    sender.send(sent)
    got = receiver.recv()
    got[0] = 42.0
    assert got[0] == 42.0 and sent[0] == 0.0
    assert got.flags.aligned and got.ctypes.data % 64 == 0


def test_small_and_non_contiguous_messages_go_through_the_pipe(folder):
    sender, receiver = _pair(folder)
    small = np.ones(8, np.float32)
    under = np.ones(transport.SHARED_MIN_BYTES // 4 - 1, np.float32)  # one element under the threshold
    strided = np.arange(transport.SHARED_MIN_BYTES // 4, dtype=np.float64)[::2]  # in band: no out-of-band buffer
    for message in (("ready", 1.5), small, under, strided):
        got = _through_pipe(sender, receiver, message)
        assert os.listdir(folder) == []
        if isinstance(message, np.ndarray):
            assert np.array_equal(got, message)
        else:
            assert got == message


def test_without_a_folder_everything_goes_through_the_pipe():
    sender, receiver = _pair(None)
    big = np.arange(transport.SHARED_MIN_BYTES // 4 + 1, dtype=np.float32)
    assert np.array_equal(_through_pipe(sender, receiver, big), big)


def test_a_file_that_cannot_be_written_sends_the_message_through_the_pipe_and_leaves_nothing(folder):
    # A file size limit makes pwrite fail (EFBIG) as a full tmpfs would (ENOSPC): a real
    # error from the kernel, in a process of its own.
    script = textwrap.dedent(f"""
        import multiprocessing as mp, os, resource, signal, socket, threading
        import numpy as np
        from harness.adapters import transport
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        a, b = mp.Pipe()
        big = np.arange(transport.SHARED_MIN_BYTES // 8, dtype=np.float64)
        sending = threading.Thread(target=transport.Channel(a, {folder!r}).send, args=(big,))
        sending.start()
        with socket.fromfd(b.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as peek:
            frame = peek.recv(transport._FRAME.size, socket.MSG_PEEK | socket.MSG_WAITALL)
        arrays = transport._FRAME.unpack(frame)[1]  # 1: the array itself, in the pipe; 0: a note of a shared file
        got = transport.Channel(b, None).recv()
        sending.join()
        print(type(got).__name__, bool(np.array_equal(got, big)), arrays, os.listdir({folder!r}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ndarray", "True", "1", "[]"]


def test_a_dead_runs_folder_is_removed_and_a_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f"cestab-ipc-{dead_pid}-abc"
    stale.mkdir()
    (stale / "1-0").write_bytes(b"x" * 10)
    live = tmp_path / f"cestab-ipc-{os.getpid()}-def"
    live.mkdir()
    other = tmp_path / "someone-else"
    other.mkdir()
    made = transport.SharedFolder.create(str(tmp_path))
    assert made is not None and os.path.isdir(made) and (os.stat(made).st_mode & 0o777) == 0o700
    assert not stale.exists() and live.exists() and other.exists()
    transport.SharedFolder.remove(made)
    assert not os.path.exists(made)


def _wmem_max() -> int:
    try:
        with open("/proc/sys/net/core/wmem_max") as f:
            return int(f.read())
    except OSError:
        return 0


@pytest.mark.skipif(_wmem_max() < 2 << 20, reason="the kernel caps socket buffers below a 1 MB message here")
def test_a_widened_pipe_takes_a_whole_megabyte_message_before_anyone_reads_it():
    """`transport.widen`: a default run's largest answers (1 MB) go into the pipe in one
    write, so the worker does not wait for the parent to drain it piece by piece. A plain
    pipe (208 KiB buffers) blocks the same write until someone reads."""
    message = b"x" * (1 << 20)
    for widened in (False, True):
        a, b = mp.Pipe()
        if widened:
            transport.widen(a, b)
        writer = threading.Thread(target=a.send_bytes, args=(message,), daemon=True)
        writer.start()
        writer.join(timeout=2)
        assert writer.is_alive() is not widened  # without widening, still writing
        assert b.recv_bytes() == message  # and the message intact either way
        writer.join(timeout=5)
        a.close()
        b.close()


def test_a_message_of_more_arrays_than_one_system_call_takes_crosses_the_pipe_bit_for_bit_and_writable():
    """Through the pipe each array is written from its own memory and read into a new one
    (`os.writev` / `os.readv`, at most SC_IOV_MAX pieces a call): 3000 arrays of four dtypes
    must come back bit for bit, in order, writable; and a closed sender is an EOFError, the
    end a worker waits for."""
    sender, receiver = _pair(None)
    rng = np.random.default_rng(1)
    dtypes = [np.float16, ml_dtypes.bfloat16, np.float32, np.float64]
    sent = [rng.standard_normal(int(rng.integers(1, 300))).astype(dtypes[k % 4]) for k in range(3000)]
    assert len(sent) > transport._IOV_MAX
    got = _through_pipe(sender, receiver, ("case", sent, {"n": len(sent)}))
    assert got[0] == "case" and got[2] == {"n": 3000} and len(got[1]) == 3000
    for a, b in zip(sent, got[1]):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    got[1][0][0] = 7
    assert got[1][0][0] == 7 and sent[0][0] != 7
    sender.conn.close()
    with pytest.raises(EOFError):
        receiver.recv()
