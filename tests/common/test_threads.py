"""OpenMP's wait and pool size: a short spin, a pool from the CPU affinity, the user's values kept."""

from __future__ import annotations

import os
import subprocess
import sys

from common.threads import available_cpus, configure_openmp


def test_defaults_follow_the_affinity_and_spin_briefly() -> None:
    env: dict[str, str] = {}
    assert configure_openmp(environ=env) == {"GOMP_SPINCOUNT": "200",
                                             "OMP_NUM_THREADS": str(len(os.sched_getaffinity(0)))}
    assert available_cpus() == len(os.sched_getaffinity(0))


def test_the_users_values_win() -> None:
    env = {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "7"}
    assert configure_openmp(3, env) == {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "7"}
    assert configure_openmp(3, {"GOMP_SPINCOUNT": "0"})["GOMP_SPINCOUNT"] == "0"


def test_vigil_configures_openmp_before_torch_sizes_its_pool(tmp_path) -> None:
    # A process pinned to one CPU: vigil's torch pool has one thread, and spins briefly.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "MKL_", "OPENBLAS_"))}
    code = ("import os, sys; from vigil.cli import main; main(['scenes', '--registry', sys.argv[1]]); "
            "import torch; print(os.environ['GOMP_SPINCOUNT'], torch.get_num_threads())")
    out = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", code, str(tmp_path)], env=env,
                         capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split()[-2:] == ["200", "1"]
