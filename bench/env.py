"""The benchmark's own world: a database `vireo_bench` on the server of DATABASE_URL, its own
Redis db, its own VAR_DIR (test-driver node files), all set in os.environ before Django starts.
"""

import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/vireo"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/5"


class BenchEnv:
    """Creates (and later drops) the bench database, Redis db and VAR_DIR; sets up Django."""

    def __init__(self) -> None:
        source = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
        parts = urlsplit(source)
        if not parts.scheme.startswith("postgres"):
            raise SystemExit(f"bench needs PostgreSQL; DATABASE_URL is {source!r}")
        # A helper's own prefix (VIREO_CHANNEL_PREFIX=vireo_x) gives its own bench database.
        prefix = os.environ.get("VIREO_CHANNEL_PREFIX", "vireo")
        default_db = "vireo_bench" if prefix == "vireo" else f"{prefix}_bench"
        self.db_name = os.environ.get("BENCH_DB_NAME", default_db)
        self.database_url = urlunsplit(parts._replace(path=f"/{self.db_name}"))
        self._server = parts
        redis = urlsplit(os.environ.get("REDIS_URL", DEFAULT_REDIS_URL))
        self.redis_url = os.environ.get("BENCH_REDIS_URL", urlunsplit(redis._replace(path="/6")))
        self.var_dir = Path(tempfile.mkdtemp(prefix="vireo-bench-"))
        self.django_ready = False

    # -- PostgreSQL -------------------------------------------------------------------------

    def _admin_conn(self):
        import psycopg

        p = self._server
        return psycopg.connect(
            host=p.hostname or "127.0.0.1",
            port=p.port or 5432,
            user=p.username or "postgres",
            password=p.password,
            dbname="postgres",
            autocommit=True,
        )

    def _drop_db(self) -> None:
        with self._admin_conn() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')

    def _create_db(self) -> None:
        self._drop_db()
        with self._admin_conn() as conn:
            conn.execute(f'CREATE DATABASE "{self.db_name}"')

    # -- the whole world --------------------------------------------------------------------

    def environ(self) -> dict[str, str]:
        """The environment of the bench process and of the daphne it starts."""
        return {
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "VIREO_VAR_DIR": str(self.var_dir),
            "VIREO_CHANNEL_PREFIX": "vireo-bench",
            # Production-like: DEBUG off (no template debug, no query log).
            "VIREO_DEBUG": os.environ.get("VIREO_DEBUG", "0"),
            "VIREO_SECRET_KEY": os.environ.get("VIREO_SECRET_KEY", secrets.token_urlsafe(50)),
            # Served over plain HTTP on loopback: no redirect to HTTPS, cookies sent over HTTP.
            "VIREO_SSL_REDIRECT": "0",
            "VIREO_SECURE_COOKIES": "0",
            "VIREO_ALLOWED_HOSTS": "127.0.0.1,localhost,testserver",
            "VIREO_LOG_LEVEL": os.environ.get("VIREO_LOG_LEVEL", "WARNING"),
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
            ),
        }

    def setup(self) -> None:
        os.environ.update(self.environ())
        if str(REPO) not in sys.path:
            sys.path.insert(0, str(REPO))
        os.chdir(REPO)
        self._create_db()
        import django

        django.setup()
        self.django_ready = True
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
        self.redis().flushdb()

    def redis(self):
        from redis import Redis

        return Redis.from_url(self.redis_url)

    def teardown(self) -> None:
        if self.django_ready:
            from django.db import connections

            import hypervisor

            hypervisor.disconnect_all()
            connections.close_all()
            try:
                self.redis().flushdb()
            except Exception as exc:
                print(f"(Redis db not flushed: {exc})")
        try:
            self._drop_db()
        except Exception as exc:
            print(f"(bench database {self.db_name} not dropped: {exc})")
        shutil.rmtree(self.var_dir, ignore_errors=True)
