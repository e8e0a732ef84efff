"""kubetune's model server: one base model plus hot-swappable LoRA adapters behind an OpenAI-compatible API.

Layers (each importable alone): `protocol` (wire models), `engine` (model, adapters, batching worker),
`serving` (request -> engine -> response logic, no web framework), `routes` + `app` (FastAPI), `__main__`.
"""
