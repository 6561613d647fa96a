"""Django settings for the tests: configured once per process, with webtier as the session engine."""

from __future__ import annotations

import django
from django.conf import settings

BASE_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "django.contrib.sessions"]


def configure(store_url: str = "memory://") -> None:
    """Configure Django (once); tests point ``WEBTIER_SESSION_STORE`` elsewhere with ``override_settings``."""
    if settings.configured:
        return
    settings.configure(
        SECRET_KEY="webtier-tests-not-secret",
        INSTALLED_APPS=BASE_APPS,
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        SESSION_ENGINE="webtier.contrib.django",
        WEBTIER_SESSION_STORE=store_url,
        USE_TZ=True,
        LOGGING_CONFIG=None,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    )
    django.setup()
