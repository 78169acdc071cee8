"""Variational estimators of λ: fit q ≈ the localized tempered posterior, then average L_n over q.

``base`` holds the protocol every algorithm implements (:class:`~lambda_hat.vi.base.VIFamily`),
``fit`` the driver shared by all of them (optimiser, scan over steps, chains vmapped, the final
full-data estimate into a :class:`~lambda_hat.trace.Trace`), and one module per algorithm
(``mfa``, ``flow``), registered in :mod:`lambda_hat.registry` (``VI_ALGORITHMS``).
"""
