"""The operator process: kopf wiring, the cache, the runner, the reconcile pass and its writes, the API client, leader election, metrics. Runs in the operator pod only."""
