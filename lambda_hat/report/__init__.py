"""Reports of sweeps: `python -m lambda_hat.report DIR --out report/` (see __main__).

runs.py     the runs table with the report's derived columns (target, reference, error, work)
ranking.py  summary per estimator and target; the leaderboard (median error per budget, bootstrap)
traces.py   running λ̂ against work from a run's trace.parquet
figures.py  the matplotlib figures
page.py     report.md and the self-contained index.html
build.py    all of it into one folder
"""
