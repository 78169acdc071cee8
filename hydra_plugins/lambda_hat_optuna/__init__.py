"""Hydra discovers sweepers only in the ``hydra_plugins`` namespace; this name makes lambda_hat's
resumable Optuna sweeper (lambda_hat/sweeps/optuna_sweeper.py) the ``_target_`` of
conf/hydra/sweeper/lambda_hat_optuna.yaml, found by Hydra's plugin scan like any plugin (no
registration callback). Importing it is cheap: Optuna loads when a search starts.
"""

from lambda_hat.sweeps import optuna_sweeper as _impl


class ResumableOptunaSweeper(_impl.ResumableOptunaSweeper):
    """The Optuna sweeper whose n_trials is the study's total (a re-run finishes the study)."""
