"""Canary rollouts, decided without I/O: the state machine, the replica split, the plan applied to the children, and the analysis verdict."""
