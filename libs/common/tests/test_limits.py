"""Connection limits (``remsim_common.limits``): the counts, and the cap a file
descriptor limit leaves room for."""

from __future__ import annotations

import resource

from remsim_common.limits import ConnectionLimits, connections_allowed, fd_limit


def test_the_fd_limit_is_the_soft_rlimit_nofile() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert fd_limit() == (None if soft == resource.RLIM_INFINITY else soft)


def test_the_connections_allowed_leave_the_reserve_free() -> None:
    assert connections_allowed(1024, reserve=64) == 960
    assert connections_allowed(1024, reserve=64, fds_per_connection=2) == 480  # the bankd
    assert connections_allowed(1024, reserve=64, share=0.5) == 480  # the server's RSPRO
    assert connections_allowed(65536, reserve=64, share=0.5) == 32736


def test_a_limit_below_the_reserve_still_allows_one_connection() -> None:
    assert connections_allowed(16, reserve=64) == 1


def test_the_total_counts_every_port() -> None:
    limits = ConnectionLimits(per_port=3, per_address=10, total=4)
    for port in (1, 1, 2, 2):
        assert limits.admit(port, "10.0.0.1") is None
    assert limits.admit(3, "10.0.0.2") == "total"  # a port and an address of its own
    limits.release(1, "10.0.0.1")
    assert limits.admit(3, "10.0.0.2") is None
    assert limits.held() == 4


def test_without_a_total_each_port_has_its_own_limit() -> None:
    limits = ConnectionLimits(per_port=2, per_address=10)
    for port in (1, 1, 2, 2):
        assert limits.admit(port, "10.0.0.1") is None
    assert limits.admit(1, "10.0.0.1") == "port"
    assert limits.held() == 4
