"""Hydra finds launchers only in the ``hydra_plugins`` namespace (it refuses a ``_target_``
elsewhere); these names make lambda_hat's launchers (lambda_hat/sweeps/launchers.py) selectable
with ``hydra/launcher=local_parallel|slurm_cpu|slurm_gpu``. They need the ``sweep`` extra
(hydra-submitit-launcher, submitit); without it there is nothing to register.
"""

try:
    from lambda_hat.sweeps import launchers as _impl
except ImportError:  # hydra-submitit-launcher not installed
    pass
else:

    class LocalParallelLauncher(_impl.LocalParallelLauncher):
        """One clean local process per job, at most hydra.launcher.max_parallel at once."""

    class SlurmLauncher(_impl.SlurmLauncher):
        """A SLURM job array (CPU or GPU jobs)."""
