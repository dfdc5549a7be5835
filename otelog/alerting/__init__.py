"""Rule-based alerting: rules (`rules.py`), their evaluation (`evaluate.py`), the counts
they evaluate over (`counts.py`, `batch_filter.py`), the scheduler and persistence
(`engine.py`) and webhooks (`notify.py`).

`alerting` reads through `query` and `store` and never imports `api` or `receiver`: the
server hands the engine the store and registers its listener on the writer.
"""
