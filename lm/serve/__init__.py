"""`lm serve`: suggestions and generation over HTTP, and a page that shows them as you type.

    from lm.serve import create_app
    app = create_app(model, tokenizer)      # a FastAPI app; run it with any ASGI server

The web stack is imported on first use, so `lm.serve.settings` (which the CLI reads for its
flags) costs other commands nothing.
"""
from .settings import ServeSettings

__all__ = ["ServeSettings", "create_app", "listen", "load_app", "run"]


def __getattr__(name: str):
    if name == "create_app":
        from .app import create_app

        return create_app
    if name in ("listen", "load_app", "run"):
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module 'lm.serve' has no attribute {name!r}")
