"""A tiny Django project whose own test runner checks `DjangoIdempotencyStore` on PostgreSQL.

tests/e2e/test_django_runner.py starts a PostgreSQL server and runs
``python -m django test tests.django_project.exactly_once`` with
``DJANGO_SETTINGS_MODULE=tests.django_project.settings`` and the server's DSN in
``CARECYCLE_DJANGO_DSN``.
"""
