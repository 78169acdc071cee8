"""MLflow tracking of jobs and sweeps (mlflow is imported lazily, off the job's critical path: it takes seconds).

One module per job:

* ``store``: the tracking store: which URI (``resolve_tracking_uri``), a SQLite store created
  once however many jobs start together, the up-front check (``check_store``, ``TrackingError``),
  experiments;
* ``values``: what a run records: params from the config (``flatten_config``, ``split_long``),
  metrics and the λ̂ series, the source tags;
* ``tracked``: a job's run, logged by the job itself (``TrackedRun``), and ``mlflow_run``, the
  context the runner wraps a job in (it picks the tracked or the deferred kind);
* ``deferred``: a job's run written down in its folder and logged by the launcher, for stores
  that must have one writer (``DeferredRun``, ``log_deferred_run``).

The sweep's parent run is lambda_hat.sweeps.parent; tables read back from MLflow are
lambda_hat.sweeps.mlflow_table.
"""
