"""The one-rank stand-in for MPI answers the calls resim makes as MPI would for one rank;
a stopping rank's last line reaches whatever reads its output."""

import os
import threading
import time

import pytest

from resim.parallel import SerialComm, stop_requested, wait_until_read


class _Status:
    """What mpi4py's Status offers the probing calls."""

    source = tag = None

    def Get_source(self):
        return self.source

    def Set_source(self, source):
        self.source = source

    def Get_tag(self):
        return self.tag

    def Set_tag(self, tag):
        self.tag = tag


def test_a_single_rank_receives_what_it_sent_itself_by_tag_in_order():
    comm = SerialComm()
    assert not comm.iprobe()
    assert comm.isend("a", dest=0, tag=5).Test()
    comm.isend("b", dest=0, tag=7).wait()
    comm.isend("c", dest=0, tag=5)
    assert not comm.iprobe(tag=6)
    status = _Status()
    assert comm.iprobe(tag=7, status=status)
    assert (status.Get_source(), status.Get_tag()) == (0, 7)
    assert comm.recv(tag=5) == "a"
    assert comm.recv(source=-2, tag=-1, status=status) == "b"  # MPICH's ANY_SOURCE, ANY_TAG
    assert status.Get_tag() == 7
    assert comm.recv(source=0) == "c"
    assert not comm.iprobe()


def test_a_single_rank_refuses_what_would_hang_or_go_nowhere():
    comm = SerialComm()
    with pytest.raises(ValueError, match="no rank 1"):
        comm.isend("x", dest=1)
    with pytest.raises(RuntimeError, match="never sent"):
        comm.recv(tag=3)
    comm.isend("x", dest=0, tag=3)
    assert not comm.iprobe(source=1)
    assert not stop_requested(comm)  # a stop request needs another rank


def test_the_last_line_before_an_abort_waits_until_its_reader_has_taken_it():
    """mpiexec's proxy drops what is still in a rank's pipe when the job is aborted."""
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, b"error: stopped by SIGTERM\n")
        assert not wait_until_read([write_end], timeout=0.1)  # nobody reads: gives up
        taken = []
        reader = threading.Timer(0.3, lambda: taken.append(os.read(read_end, 100)))
        began = time.monotonic()
        reader.start()
        assert wait_until_read([write_end], timeout=10)
        assert time.monotonic() - began >= 0.3 and taken == [b"error: stopped by SIGTERM\n"]
        reader.join()
    finally:
        os.close(read_end)
        os.close(write_end)
