"""One-line session adapters for other frameworks, over the same stores and rules as the ASGI middleware.

==================================  =====================================================
``webtier.contrib.wsgi``            any WSGI app: ``SessionMiddleware(app, store=...)``
``webtier.contrib.flask``           ``init_app(app, store=...)`` (a Flask ``SessionInterface``)
``webtier.contrib.django``          ``SESSION_ENGINE = "webtier.contrib.django"``
``webtier.contrib.fastapi``         ``SessionDep``, a FastAPI dependency (with ``webtier.SessionMiddleware``)
==================================  =====================================================

Each module imports its framework only when imported itself, so webtier never needs a
framework it is not used with.
"""
