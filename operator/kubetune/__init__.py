"""kubetune: self-service LLM fine-tuning and serving on Kubernetes."""

__version__ = "0.1.0"
