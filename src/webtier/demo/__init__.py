"""The bundled demo shop: what ``webtier up`` serves by default."""

from webtier.demo.app import create_app

__all__ = ["create_app"]
