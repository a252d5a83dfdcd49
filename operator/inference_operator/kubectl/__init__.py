"""kubectl inference: the plugin, its controls, the rollout overview, the user's own API client and the dashboard. Runs on a person's machine, never in the operator pod."""
