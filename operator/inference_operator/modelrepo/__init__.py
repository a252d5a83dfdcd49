"""The model repository: what the fetch-model init container runs (sources, layout) and the config.pbtxt it and the renderer write."""
