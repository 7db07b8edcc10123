"""The soak benchmark's judgement (bench/soak.py ``judge``): a leaking series of samples is
not flat, a flat one is. The benchmark itself runs the real system (``make bench``, CI)."""

from __future__ import annotations

from collections.abc import Callable

from bench.soak import Limits, Sample, judge, warmup_of

LIMITS = Limits(growth_kib=2048, slope_kib_per_min=256, slope_window=300)
DURATION, INTERVAL = 600, 5
WARMUP = warmup_of(DURATION)


def series(
    rss_kib: Callable[[float], float],
    fds: int = 15,
    fds_at_end: int | None = None,
    busy_fds: int = 16,
    duration: int = DURATION,
) -> list[Sample]:
    """Samples every INTERVAL seconds (FDs raised by in-flight garbage connections in every
    other one) and the two quiet points (just after the warm-up, at the end), RSS as a
    function of time (seconds)."""
    samples = [
        Sample(t, round(rss_kib(t)), fds + busy_fds * (t // INTERVAL % 2))
        for t in range(INTERVAL, duration + 1, INTERVAL)
    ]
    end_fds = fds if fds_at_end is None else fds_at_end
    start, end = warmup_of(duration) + 2, duration + 1
    samples.append(Sample(start, round(rss_kib(start)), fds, quiet=True))
    samples.append(Sample(end, round(rss_kib(end)), end_fds, quiet=True))
    return sorted(samples, key=lambda s: s.t)


def jitter(t: float) -> float:
    """±100 KiB of allocator noise."""
    return 100 * ((t * 7919) % 13 - 6) / 6


def test_a_flat_process_is_flat_despite_jitter_and_busy_fds() -> None:
    verdict = judge("server", series(lambda t: 80_000 + jitter(t)), WARMUP, LIMITS)
    assert verdict.flat, verdict.problems
    assert verdict.fds_start == verdict.fds_end == 15
    assert verdict.fds_max == 31  # the garbage connections in flight are seen, not judged


def test_growth_during_the_warm_up_is_not_judged() -> None:
    def warming(t: float) -> float:
        return 60_000 + 20_000 * min(t, WARMUP) / WARMUP + jitter(t)

    assert judge("server", series(warming), WARMUP, LIMITS).flat


def test_a_slow_rss_leak_is_not_flat() -> None:
    # 1 MiB per minute: e.g. 100 APDUs/s leaking 175 bytes each
    verdict = judge("bankd", series(lambda t: 70_000 + 1024 * t / 60 + jitter(t)), WARMUP, LIMITS)
    assert not verdict.flat
    assert any("RSS slope 1024 KiB/min" in p for p in verdict.problems), verdict.problems
    assert any("RSS grew" in p for p in verdict.problems), verdict.problems


def test_a_short_run_judges_the_growth_not_the_slope() -> None:
    # one minute (CI): 600 KiB/min, as a server still filling its caches, is flat; 4 MiB/min not
    def warming(t: float) -> float:
        return 80_000 + 600 * t / 60

    def leaking(t: float) -> float:
        return 80_000 + 4096 * t / 60

    assert judge("server", series(warming, duration=60), warmup_of(60), LIMITS).flat
    verdict = judge("server", series(leaking, duration=60), warmup_of(60), LIMITS)
    assert [p.split(" (")[0] for p in verdict.problems] == ["RSS grew 3003 KiB"]  # in 44 s


def test_one_late_jump_in_rss_is_not_flat() -> None:
    # 8 MiB at once near the end: small slope over ten minutes, large growth
    def jump(t: float) -> float:
        return 70_000 + (8192 if t > DURATION - 30 else 0)

    verdict = judge("bankd", series(jump), WARMUP, LIMITS)
    assert not verdict.flat
    assert any("RSS grew 8192 KiB" in p for p in verdict.problems), verdict.problems


def test_one_leaked_fd_is_not_flat() -> None:
    verdict = judge("server", series(lambda t: 80_000, fds_at_end=16), WARMUP, LIMITS)
    assert verdict.problems == ("FDs 15 → 16 between the quiet points",)


def test_without_quiet_points_a_process_cannot_be_judged() -> None:
    samples = [s for s in series(lambda t: 80_000) if not s.quiet]
    assert not judge("server", samples, WARMUP, LIMITS).flat


def test_the_warm_up_is_a_fifth_of_the_run_and_at_least_15_s() -> None:
    assert warmup_of(600) == 120
    assert warmup_of(60) == 15
