"""Status, computed without I/O from the InferenceService and what was observed: conditions, pods, startup times."""
