"""How many threads a role's model runs, and how its OpenMP threads wait.

torch runs its operators on an OpenMP pool as wide as the machine, and by default idle
OpenMP threads spin before they sleep. Two such processes on one machine -- ``vigil run``
scoring cameras while ``vigil train`` fits a new scene -- then take turns burning each
other's cores: measured on this project's 2-core machine, training slowed 12-30x while a
camera was scored beside it (``bench/cpu_share.py``). :func:`configure_openmp` makes
idle threads spin only briefly before they sleep (``GOMP_SPINCOUNT=200``, libgomp's
default is 300000) and sizes the pool from the CPUs this process may run on (its
affinity: ``taskset``, a container's cpuset), not the machine's core count. Measured
(README, "Sharing the CPU"): a short spin keeps a process's speed alone, while
``OMP_WAIT_POLICY=PASSIVE`` (no spin at all) fixes the collapse too but cost 10-25 % alone.
It must run before torch is imported (OpenMP reads its environment once); ``vigil``'s
entry point calls it first. A value the user set in the environment wins (an
``OMP_WAIT_POLICY`` of the user's leaves the spin count to it).
"""

from __future__ import annotations

import os

__all__ = ["SPIN_COUNT", "available_cpus", "configure_openmp"]

#: Busy-wait iterations of an idle libgomp thread before it sleeps.
SPIN_COUNT = 200


def available_cpus() -> int:
    """CPUs this process may run on (its affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def configure_openmp(threads: int | None = None, environ: dict[str, str] | None = None) -> dict[str, str]:
    """Set OpenMP's wait policy and pool size for this process, unless already set.

    Args:
        threads: the pool size (None: :func:`available_cpus`).
        environ: the environment to change (default ``os.environ``).

    Returns:
        The values now in force.

    >>> configure_openmp(2, {})
    {'GOMP_SPINCOUNT': '200', 'OMP_NUM_THREADS': '2'}
    >>> configure_openmp(2, {"OMP_WAIT_POLICY": "ACTIVE"})
    {'OMP_WAIT_POLICY': 'ACTIVE', 'OMP_NUM_THREADS': '2'}
    """
    env = os.environ if environ is None else environ
    if "OMP_WAIT_POLICY" not in env:
        env.setdefault("GOMP_SPINCOUNT", str(SPIN_COUNT))
    env.setdefault("OMP_NUM_THREADS", str(threads or available_cpus()))
    return {k: env[k] for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS") if k in env}
