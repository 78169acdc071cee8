"""Hydra finds launchers only in the ``hydra_plugins`` namespace (it refuses a ``_target_``
elsewhere); these names make lambda_hat's launchers (lambda_hat/sweeps/launchers.py) selectable
with ``hydra/launcher=local_parallel|slurm_cpu|slurm_gpu`` (they need the ``sweep`` extra,
hydra-submitit-launcher and submitit; without it they are not registered) and
``hydra/launcher=batched`` (lambda_hat/sweeps/batched.py: Hydra alone).
"""

from lambda_hat.sweeps import batched as _batched


class BatchedLauncher(_batched.BatchedLauncher):
    """The jobs that share one program run as one batch (grid points x chains), the rest one by one."""


try:
    from lambda_hat.sweeps import launchers as _impl
except ImportError:  # hydra-submitit-launcher not installed
    pass
else:

    class LocalParallelLauncher(_impl.LocalParallelLauncher):
        """One clean local process per job, at most hydra.launcher.max_parallel at once."""

    class SlurmLauncher(_impl.SlurmLauncher):
        """A SLURM job array (CPU or GPU jobs)."""
