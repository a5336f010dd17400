"""Moving messages between the parent and a worker: small ones through the pipe, the
arrays of large ones through a shared-memory file.

Every adapter's gradient comes back to the parent (but one of the very same bits as an
earlier adapter's on the same case, which comes back as that adapter's id:
`workers.SentAnswers`) and every case's logits go out to each worker. A message is
pickled once (protocol 5), its arrays out of band (`_Pickler`), so each array's bytes are
copied twice only: written from the array into the socket (`os.writev`, with the pickle and
a frame, in one call) and read out of it straight into the receiver's new array
(`os.readv`). (`multiprocessing.Connection.send` pickles arrays in band: the sender copied
each byte into the pickle and the pipe, the receiver out of the pipe, into a buffer, and
into the array.) Frame: `_FRAME` (pickle length, number of arrays), each array's length,
the pickle, the arrays.

For a large message (`SHARED_MIN_BYTES`: a user's big batch, not a default run's cases,
which the pipe moves more cheaply) the arrays are written once into a file in a private
tmpfs folder; the receiver maps that file copy-on-write and unlinks it, so its arrays are
views of pages the sender wrote, with no copy on the receiving side (a third of the
parent's CPU per byte, a half of the sender's, measured with 16 MB answers).

What can go wrong, and what happens then:
- no tmpfs, or it is full (a container's 64 MB /dev/shm): `os.pwrite` fails with an
  error (never the SIGBUS a write into a mapping would raise), the file is removed, and
  the message goes through the pipe;
- the receiver dies before reading: its file stays in the folder, which the parent
  removes when its pool closes (`SharedFolder.remove`); a parent killed outright leaves
  its folder, which the next run of the same user removes (`SharedFolder.create`).
"""

from __future__ import annotations

import io
import itertools
import mmap
import os
import pickle
import shutil
import socket
import struct
import tempfile
from dataclasses import dataclass

import numpy as np

#: Messages whose arrays hold at least this many bytes go through shared memory. Below it
#: the pipe is cheaper: its buffers come from memory the process reuses
#: (`memory.reuse_freed_memory`), while a file's pages are allocated, mapped and faulted in
#: afresh each time. Measured (2-core EPYC, a worker answering numpy.naive on N x V
#: float32, parent / worker CPU per round trip): 1024 x 32 (128 KB each way) pipe 0.5-0.7 /
#: 0.5-0.6 ms, file 0.9 / 0.8; 2 MB pipe 2.2-2.5 / 1.9-2.1, file 3.6-3.9 / 3.3-3.4; 3 MB
#: even; 4 MB pipe 9.3-11.3 / 8.0-11.2, file 7.0-7.6 / 7.1. So a default run's cases and
#: answers (at most 1 MB) take the pipe, and a user's 4096 x 32000 batch the file.
SHARED_MIN_BYTES = 4 << 20

#: The socket buffer asked for each end of a worker's pipe (`widen`); Linux caps it at
#: net.core.wmem_max / rmem_max (4 MiB on these machines, 208 KiB on some).
PIPE_BUFFER = 4 << 20


def widen(*conns) -> None:
    """Ask for PIPE_BUFFER-sized socket buffers on `conns` (multiprocessing's pipe ends, a
    socket pair), so that a message of up to a few MB goes in one write and comes out in
    one read. With the default 208 KiB a 1 MB answer went through in five or more rounds,
    each waking the reader and the writer: the parent spent 1.3-1.5 ms of CPU receiving one,
    0.3-0.45 ms with 4 MiB (2-core EPYC). Where the ends are not sockets, or the kernel
    refuses, nothing changes."""
    for conn in conns:
        try:
            with socket.fromfd(conn.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as s:  # a copy of the fd
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, PIPE_BUFFER)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, PIPE_BUFFER)
        except OSError:
            continue


#: Where the folders are made: tmpfs, so a file is memory, not disk.
SHM_ROOT = "/dev/shm"
_PREFIX = "cestab-ipc-"
_ALIGN = 64  # each array starts on a cache line (numpy's own alignment is 16)
_names = itertools.count()  # file names, unique in this process (every channel's, every thread's)


@dataclass(frozen=True)
class _Shared:
    """What goes through the pipe for a message sent through shared memory."""

    path: str  # the file holding the out-of-band buffers
    head: bytes  # the pickle, without its buffers
    spans: tuple[tuple[int, int], ...]  # (offset, length) of each buffer in the file


class _Pickler(pickle.Pickler):
    """Protocol 5 with every contiguous array out of band: numpy keeps the arrays of a
    dtype of its own (bfloat16, ml_dtypes') in band, which would copy them into the pickle."""

    def reducer_override(self, obj):
        if type(obj) is np.ndarray and not obj.dtype.hasobject and obj.flags.c_contiguous and obj.nbytes:
            return _array, (pickle.PickleBuffer(obj.reshape(-1).view(np.uint8)), obj.dtype, obj.shape)
        return NotImplemented


def _array(buffer, dtype, shape) -> np.ndarray:
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)


def _dumps(obj, buffers: list) -> bytes:
    out = io.BytesIO()
    _Pickler(out, protocol=5, buffer_callback=buffers.append).dump(obj)
    return out.getvalue()


class SharedFolder:
    """A private folder (mode 0700) in tmpfs for one pool's messages."""

    @staticmethod
    def create(root: str = SHM_ROOT) -> str | None:
        """A new folder, or None where there is no writable tmpfs (the pipe alone then).
        Folders left by this user's runs that are dead are removed first."""
        if not os.path.isdir(root) or not os.access(root, os.W_OK | os.X_OK):
            return None
        _remove_stale(root)
        try:
            return tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=root)
        except OSError:
            return None

    @staticmethod
    def remove(folder: str | None) -> None:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def _remove_stale(root: str) -> None:
    """Remove the folders of this user's processes that no longer exist."""
    try:
        entries = list(os.scandir(root))
    except OSError:
        return
    for entry in entries:
        if not entry.name.startswith(_PREFIX):
            continue
        pid = entry.name[len(_PREFIX):].split("-", 1)[0]
        try:
            if entry.stat(follow_symlinks=False).st_uid != os.getuid() or not pid.isdigit():
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(entry.path, ignore_errors=True)
        except OSError:
            continue


#: A frame's start: the pickle's length and the number of out-of-band arrays (each one's
#: length follows, "<Q").
_FRAME = struct.Struct("<QQ")
_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 16  # pieces per writev / readv call


def _write_all(fd: int, pieces: list) -> None:
    """Write `pieces` (bytes-like) to `fd` in order, in as few calls as the kernel allows."""
    _move(os.writev, fd, pieces)


def _read_all(fd: int, pieces: list) -> None:
    """Fill `pieces` (writable buffers) from `fd` in order; EOFError if it closes first."""
    _move(os.readv, fd, pieces)


def _move(call, fd: int, pieces: list) -> None:
    """`call` (os.writev or os.readv) until every byte of `pieces` has moved, each call
    taking up to _IOV_MAX of what is left (a call may move part of it)."""
    views = [v for v in (memoryview(p).cast("B") for p in pieces) if v.nbytes]
    while views:
        done = call(fd, views[:_IOV_MAX])
        if done == 0:
            raise EOFError
        while views and done >= views[0].nbytes:
            done -= views.pop(0).nbytes
        if done:
            views[0] = views[0][done:]


class Channel:
    """One end of a worker's pipe (a `multiprocessing` connection, for its file descriptor
    and its `poll`): `send` and `recv` whole Python objects, each array copied once on
    each side, large arrays through `folder` (None: the pipe). Both ends must be Channels."""

    def __init__(self, conn, folder: str | None):
        self.conn = conn
        self.folder = folder

    def send(self, obj) -> None:
        buffers: list[pickle.PickleBuffer] = []
        head = _dumps(obj, buffers)
        raw = [b.raw() for b in buffers]
        if self.folder is not None and sum(r.nbytes for r in raw) >= SHARED_MIN_BYTES:
            shared = self._write(head, raw)
            if shared is not None:
                head, raw = _dumps(shared, []), []
        lengths = struct.pack(f"<{len(raw)}Q", *(r.nbytes for r in raw))
        _write_all(self.conn.fileno(), [_FRAME.pack(len(head), len(raw)) + lengths, head, *raw])

    def _write(self, head: bytes, raw: list[memoryview]) -> _Shared | None:
        path = os.path.join(self.folder, f"{os.getpid()}-{next(_names)}")
        spans = []
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError:
            return None
        try:
            offset = 0
            for r in raw:
                offset = -(-offset // _ALIGN) * _ALIGN
                done = 0
                while done < r.nbytes:
                    done += os.pwrite(fd, r[done:], offset + done)
                spans.append((offset, r.nbytes))
                offset += r.nbytes
        except OSError:  # full: the pipe takes it
            os.close(fd)
            os.unlink(path)
            return None
        os.close(fd)
        return _Shared(path, head, tuple(spans))

    def recv(self):
        fd = self.conn.fileno()
        frame = bytearray(_FRAME.size)
        _read_all(fd, [frame])
        head_length, n = _FRAME.unpack(frame)
        lengths, head = bytearray(8 * n), bytearray(head_length)
        _read_all(fd, [lengths, head])
        arrays = [np.empty(length, np.uint8) for length in struct.unpack(f"<{n}Q", lengths)]
        _read_all(fd, arrays)
        message = pickle.loads(head, buffers=arrays)
        if not isinstance(message, _Shared):
            return message
        fd = os.open(message.path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            # Copy-on-write: the arrays are writable, and a write stays in this process.
            mapped = mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE | getattr(mmap, "MAP_POPULATE", 0),
                               prot=mmap.PROT_READ | mmap.PROT_WRITE) if size else b""
        finally:
            os.close(fd)
            os.unlink(message.path)  # the mapping keeps the pages while an array uses them
        view = memoryview(mapped)
        return pickle.loads(message.head, buffers=[view[o : o + n] for o, n in message.spans])
