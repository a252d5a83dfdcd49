"""inference-operator: InferenceService custom resources served by NVIDIA Triton on Kubernetes."""

__version__ = "0.1.0"
