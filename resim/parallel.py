"""Ranks: MPI when launched by ``mpiexec``, a one-rank stand-in otherwise.

Work is split by hard-event index only — every realization of a hard event is made by
the rank that owns the event, and every random number comes from a derived seed — so the
split changes which rank makes an event, never what the event contains.
"""

from __future__ import annotations

import fcntl
import os
import stat
import struct
import sys
import termios
import time
from collections.abc import Callable
from typing import Any, Protocol

from .errors import ResimError

#: Environment variables an MPI launcher sets (MPICH/Hydra, Open MPI, Slurm PMI).
_LAUNCHER_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")
#: Those of them that say how many ranks the launcher started.
_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")
#: Those that say which rank a process is (readable without MPI).
_RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")


class MpiUnavailableError(ResimError, RuntimeError):
    """An MPI launcher started resim, but mpi4py cannot be imported (exit code 2)."""


class Request(Protocol):
    """A pending non-blocking send (mpi4py's ``Request``)."""

    def Test(self) -> bool: ...
    def wait(self) -> Any: ...


class Status(Protocol):
    """Where a probed message came from (mpi4py's ``Status``)."""

    def Get_source(self) -> int: ...
    def Set_source(self, source: int) -> None: ...
    def Get_tag(self) -> int: ...
    def Set_tag(self, tag: int) -> None: ...


class Comm(Protocol):
    """The calls of mpi4py's ``Intracomm`` that resim makes (``Ibarrier``, where an MPI
    has it, is looked up with ``getattr``)."""

    def Get_rank(self) -> int: ...
    def Get_size(self) -> int: ...
    def barrier(self) -> None: ...
    def bcast(self, obj: Any, root: int = 0) -> Any: ...
    def allgather(self, obj: Any) -> list[Any]: ...
    def gather(self, obj: Any, root: int = 0) -> list[Any] | None: ...
    def isend(self, obj: Any, dest: int, tag: int = 0) -> Request: ...
    def iprobe(self, source: int = ..., tag: int = ..., status: Any = None) -> bool: ...
    def recv(self, buf: Any = None, source: int = ..., tag: int = ...,
             status: Any = None) -> Any: ...
    def Abort(self, errorcode: int = 1) -> None: ...


class SerialComm:
    """The mpi4py communicator calls resim uses, for a single process.

    The only rank there is can send to itself: messages wait in a mailbox, in order,
    until received. A negative ``source`` or ``tag`` matches any (MPI's ``ANY_SOURCE`` and
    ``ANY_TAG`` are negative in every implementation).
    """

    def __init__(self) -> None:
        self._mailbox: list[tuple[int, Any]] = []  # (tag, object)

    def Get_rank(self) -> int:
        return 0

    def Get_size(self) -> int:
        return 1

    def barrier(self) -> None:
        pass

    def bcast(self, obj: Any, root: int = 0) -> Any:
        return obj

    def allgather(self, obj: Any) -> list[Any]:
        return [obj]

    def gather(self, obj: Any, root: int = 0) -> list[Any] | None:
        return [obj]

    def isend(self, obj: Any, dest: int, tag: int = 0) -> Request:
        if dest != 0:
            raise ValueError(f"no rank {dest} in a single process")
        self._mailbox.append((tag, obj))
        return _Sent()

    def iprobe(self, source: int = -1, tag: int = -1, status: Any = None) -> bool:
        return self._find(source, tag, status) is not None

    def recv(self, buf: Any = None, source: int = -1, tag: int = -1,
             status: Any = None) -> Any:
        found = self._find(source, tag, status)
        if found is None:  # MPI would wait forever: nobody else can send
            raise RuntimeError(f"a single process waits for a message (tag {tag}) "
                               "that it never sent")
        return self._mailbox.pop(found)[1]

    def _find(self, source: int, tag: int, status: Status | None) -> int | None:
        if source > 0:
            return None
        for i, (sent_tag, _) in enumerate(self._mailbox):
            if tag < 0 or tag == sent_tag:
                if status is not None:
                    status.Set_source(0)
                    status.Set_tag(sent_tag)
                return i
        return None

    def Abort(self, errorcode: int = 1) -> None:
        raise SystemExit(errorcode)


class _Sent:
    """A send within one process: complete as soon as it is made."""

    def Test(self) -> bool:
        return True

    def wait(self) -> Any:
        return None


def launched_by_mpi() -> bool:
    return any(os.environ.get(v) for v in _LAUNCHER_VARS)


def launcher_rank() -> int:
    """This process's rank as its MPI launcher set it (0 without one): for speaking once
    when MPI itself cannot be used."""
    given = next((os.environ[v] for v in _RANK_VARS if os.environ.get(v)), "0")
    return int(given) if given.isdigit() else 0


def world() -> Comm:
    """``MPI.COMM_WORLD`` under an MPI launcher, else a serial stand-in (no MPI import)."""
    if not launched_by_mpi():
        return SerialComm()
    try:
        from mpi4py import MPI
    except ImportError as err:  # each rank would make, and write, the whole run alone
        given = next(v for v in _LAUNCHER_VARS if os.environ.get(v))
        raise MpiUnavailableError(
            f"started by an MPI launcher ({given} is set) but mpi4py cannot be imported "
            f"({err}): pip install 'resim[mpi]' in this environment, or run without "
            "mpiexec/srun") from None
    return MPI.COMM_WORLD


def wait_for_all(comm: Comm, poll: float = 0.01, stop: Any = None) -> None:
    """A barrier that sleeps while it waits (and stops if another rank failed, or, with a
    ``stop`` that has ``requested()`` and ``stop()``, when that is requested).

    MPICH's blocking calls spin: a rank that finishes its share early would burn a core
    in ``barrier()`` while slower ranks still work, and take CPU from them when ranks
    share cores (``mpiexec -n 3`` on two) or from the rest of a shared node. Waiting in
    a non-blocking barrier with short sleeps costs nothing measurable.
    """
    ibarrier = getattr(comm, "Ibarrier", None)
    if ibarrier is None:
        comm.barrier()
        return
    request = ibarrier()
    while not request.Test():
        if stop is not None and stop.requested():
            stop.stop()
        if stop_requested(comm):
            raise AnotherRankFailedError
        time.sleep(poll)


def on_rank0(comm: Comm, work: Callable[[], Any]) -> Any:
    """``work()`` on rank 0, its result (or the exception it raised) on every rank."""
    result: Any = None
    if comm.Get_rank() == 0:
        try:
            result = work()
        except Exception as err:
            result = _Raised(err)
    result = comm.bcast(result)
    if isinstance(result, _Raised):
        raise result.error
    return result


class _Raised:
    def __init__(self, error: Exception):
        self.error = error


def launch_problem(comm: Comm) -> str | None:
    """Why these processes would overwrite each other's output, or None.

    Two ways to start N processes that each believe they are the only rank: ``srun``
    without MPI set up (a cluster whose default is ``--mpi=none``: no PMI in the
    environment), and a launcher of one MPI starting processes whose mpi4py loaded
    another (each then initialises alone, as a world of one).
    """
    if not launched_by_mpi():
        tasks = int(os.environ.get("SLURM_STEP_NUM_TASKS") or 1)
        if tasks > 1:
            return (f"srun started {tasks} tasks without MPI (no PMI in their environment), "
                    "so each would make the whole run into the same output: use "
                    "`srun --mpi=pmi2 resim generate ...` or `mpiexec -n N resim generate ...`")
        return None
    for var in _SIZE_VARS:
        expected = os.environ.get(var, "")
        if expected.isdigit() and int(expected) != comm.Get_size():
            from mpi4py import MPI

            library = MPI.Get_library_version().splitlines()[0].strip()
            return (f"the launcher started {expected} ranks ({var}) but MPI sees "
                    f"{comm.Get_size()}: mpiexec and mpi4py use different MPI libraries "
                    f"(mpi4py loaded {library}); use the mpiexec of the same installation "
                    "or point MPI4PY_LIBMPI at the launcher's library (docs/cluster.md)")
    return None


def split_ranges(ranges: list[tuple[int, int]], size: int) -> list[list[tuple[int, int]]]:
    """Split event ranges into ``size`` contiguous shares of (nearly) equal length.

    Rank r gets positions [r*T/size, (r+1)*T/size) of the ranges laid end to end, so
    each rank's events are contiguous wherever the ranges are.
    """
    total = sum(b - a for a, b in ranges)
    bounds = [total * r // size for r in range(size + 1)]
    shares: list[list[tuple[int, int]]] = [[] for _ in range(size)]
    pos = 0
    for a, b in ranges:
        for r in range(size):
            lo = max(a, a + bounds[r] - pos)
            hi = min(b, a + bounds[r + 1] - pos)
            if lo < hi:
                shares[r].append((lo, hi))
        pos += b - a
    return shares


# --------------------------------------------------------------------- stopping together

#: Message tags of the stop protocol (progress reports use others, see resim.generate).
STOP_TAG, STOPPED_TAG = 81, 82

#: How long a failing rank waits for the others to reach a safe point before it aborts
#: the job: blocks are sized to take ~5 s, but the first (256 realizations, before any
#: rate is measured) takes about a minute with Vincia.
STOP_GRACE_SECONDS = 120.0


class AnotherRankFailedError(Exception):
    """Another rank failed and asked this one to stop."""


def stop_requested(comm: Comm) -> bool:
    """Has another rank asked every rank to stop? (Never for a single process.)"""
    iprobe = getattr(comm, "iprobe", None)
    return iprobe is not None and comm.Get_size() > 1 and iprobe(tag=STOP_TAG)


def stop_all(comm: Comm, grace: float = STOP_GRACE_SECONDS, poll: float = 0.05,
             report: Callable[[], None] | None = None, code: int = 1) -> None:
    """Called by a failing (or signalled) rank: ask every other rank to stop at its next
    safe point (after committing the blocks it has finished, never in the middle of a
    write), wait until all have said they stopped or ``grace`` seconds have passed, then
    abort the job with exit code ``code``.

    ``MPI_Abort`` alone would kill the others wherever they are, possibly in the middle of
    a commit, which costs them the commit (see ``resim.store.validate``). Answers other
    stopping ranks' requests meanwhile, so ranks stopping at once (all ranks get a
    scheduler's SIGTERM) stop each other. ``report`` is called once the others have
    stopped, by the lowest-ranked of the ranks that asked for the stop only, before the
    abort: so one line says what every rank saved.
    """
    size, rank = comm.Get_size(), comm.Get_rank()
    if size > 1:
        from mpi4py import MPI

        requests = [comm.isend(rank, dest=r, tag=STOP_TAG) for r in range(size) if r != rank]
        stopped: set[int] = set()
        asking = {rank}
        status = MPI.Status()
        deadline = time.monotonic() + grace
        while len(stopped) < size - 1 and time.monotonic() < deadline:
            if _answer_stop(comm, status):
                asking.add(status.Get_source())
                stopped.add(status.Get_source())
            elif comm.iprobe(source=MPI.ANY_SOURCE, tag=STOPPED_TAG, status=status):
                stopped.add(comm.recv(source=status.Get_source(), tag=STOPPED_TAG))
            else:
                time.sleep(poll)
        while _answer_stop(comm, status):  # requests sent before their senders' answers
            asking.add(status.Get_source())
        if report is not None and min(asking) != rank:
            # Another rank reports and aborts; keep answering until it does.
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                if not _answer_stop(comm, status):
                    time.sleep(poll)
        del requests  # the abort ends them
    if report is not None:
        report()
    _hand_over_output()
    comm.Abort(code)
    os._exit(code)  # MPI_Abort has returned here, now and then, in MPICH 5


def _hand_over_output() -> None:
    """Flush stdout and stderr and wait until whatever reads them has taken every byte:
    under mpiexec that is a pipe to Hydra's proxy, which drops what is still in the pipe
    when the job is aborted, so the stop's one line was lost now and then."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    wait_until_read([fd for fd in (1, 2) if _is_pipe(fd)])


def wait_until_read(pipes: list[int], timeout: float = 5.0, poll: float = 0.01) -> bool:
    """Wait until the readers of the pipes ``pipes`` (write ends) have read everything
    written to them, at most ``timeout`` seconds; whether they have."""
    deadline = time.monotonic() + timeout
    while True:
        pipes = [fd for fd in pipes if _unread_bytes(fd) > 0]
        if not pipes:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)


def _is_pipe(fd: int) -> bool:
    try:
        return stat.S_ISFIFO(os.fstat(fd).st_mode)
    except OSError:
        return False


def _unread_bytes(fd: int) -> int:
    """Bytes written to the pipe ``fd`` that its reader has not read yet (FIONREAD); 0
    where the system cannot say."""
    try:
        return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0])
    except OSError:
        return 0


def _answer_stop(comm: Comm, status: Any) -> bool:
    """Answer one pending stop request, if there is one (its sender is in ``status``)."""
    from mpi4py import MPI

    if not comm.iprobe(source=MPI.ANY_SOURCE, tag=STOP_TAG, status=status):
        return False
    comm.recv(source=status.Get_source(), tag=STOP_TAG)
    comm.isend(comm.Get_rank(), dest=status.Get_source(), tag=STOPPED_TAG)
    return True


def stand_by(comm: Comm) -> None:
    """Called by a rank that stopped on request: tell every rank that asks, and wait for
    the abort."""
    from mpi4py import MPI

    status = MPI.Status()
    while True:  # MPI_Abort from a stopping rank ends this process
        if not _answer_stop(comm, status):
            time.sleep(0.05)
