"""The black-box suite's target (issue 14): every test here drives the public HTTP contract and
runs twice, against `mercato run` (one process, SQLite) and against the dev cluster (two
replicas of every service behind nginx, a worker, PostgreSQL, RabbitMQ, Redis).

A target is started once per session and torn down before the next one starts (pytest groups the
tests of a session-scoped parameter), so the two never share the machine's two cores.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from mercato.devcluster import ClusterConfig, DevCluster
from tests import services
from tests.contract.api import ADMIN_PASSWORD
from tests.running import Processes, mercato, start_partner

# What both targets run with. Every client of the suite is 127.0.0.1, so the per-address free
# failures are raised (the logins retried while identity learns of a new user would otherwise
# lock that one address out midway); the per-account throttle keeps its default and is tested.
COMMON_ENV = {
    "MERCATO_ADMIN_PASSWORD": ADMIN_PASSWORD,
    "MERCATO_IDENTITY_IP_FREE_FAILURES": "100000",
    # Likewise the per-address registration limit: the whole suite registers from one address.
    "MERCATO_ACCOUNTS_REGISTER_PER_MINUTE": "100000",
    # A lock-out outlasts the few requests that check it on every replica (the default 1 s
    # would make those checks a race with the clock).
    "MERCATO_IDENTITY_LOGIN_BASE_DELAY_SECONDS": "60",
    # The same for accounts' throttle of wrong `current_password`s (tested per account).
    "MERCATO_ACCOUNTS_PASSWORD_BASE_DELAY_SECONDS": "60",
    "MERCATO_EVENT_RETRY_DELAYS": "0.2,1,2",
    # Scheduled ticks would only add noise; the suite runs jobs on demand.
    "MERCATO_JOB_EXPORT_PRODUCTS_INITIAL_DELAY": "3600",
    "MERCATO_JOB_SYNC_EXTERNAL_PRODUCTS_INITIAL_DELAY": "3600",
    "MERCATO_JOB_SYNC_EXTERNAL_ORDERS_INITIAL_DELAY": "3600",
    "MERCATO_LOG_JSON": "true",
}
PARTNER_ENV = {
    "MERCATO_EXTERNAL_CLIENT_ID": "partner-client",
    "MERCATO_EXTERNAL_CLIENT_SECRET": "partner-secret",
}


@dataclass
class Target:
    """Where the suite sends its requests, and the processes behind that address."""

    name: str
    base_url: str
    log_dir: Path
    cluster: DevCluster | None = None
    # Embedded: the one process that serves every path.
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def client(self, base_url: str | None = None) -> httpx.Client:
        """A client of the gateway (or of one replica's direct URL)."""
        return httpx.Client(base_url=base_url or self.base_url, timeout=30)

    def replicas(self, service: str) -> list[str]:
        """Direct base URLs of the processes that serve `service` (embedded: the one process),
        so a test can change state on one and read it from another."""
        if self.cluster is None:
            return [self.base_url]
        return self.cluster.replica_urls(service)

    def other_replica(self, service: str) -> tuple[str, str]:
        """Two replicas of `service`: where to change state, where to check it (embedded: the
        same process twice, which is all there is)."""
        urls = self.replicas(service)
        return urls[0], urls[-1]

    def logs(self) -> str:
        """Everything every process of the target has written so far."""
        return "\n".join(
            path.read_text(errors="replace") for path in sorted(self.log_dir.glob("*.log"))
        )


def _embedded(workdir: Path) -> Iterator[Target]:
    embedded = Processes(workdir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MERCATO_")}
    env.update(COMMON_ENV)
    try:
        partner = start_partner(embedded, env)
        env.update(
            {
                **PARTNER_ENV,
                "MERCATO_EXTERNAL_BASE_URL": partner,
                "MERCATO_EXTERNAL_TOKEN_URL": f"{partner}/oauth/token",
            }
        )
        args = mercato("run", "--data-dir", str(workdir / "data"))
        url = embedded.spawn("mercato", args, env, "/ready")
        target = Target("embedded", url, workdir)
        target.process = embedded.processes[-1]
        yield target
    finally:
        embedded.close()


def _cluster(workdir: Path) -> Iterator[Target]:
    services.require_dev_cluster()
    tag = uuid.uuid4().hex[:8]
    database, vhost = f"mercato_contract_{tag}", f"mercato-contract-{tag}"
    made = DevCluster(
        ClusterConfig(
            workdir=workdir,
            database_url=services.create_pg_database(database),
            broker_url=services.create_vhost(vhost),
            redis_url=services.REDIS_URL,
            port=0,
            replicas=2,
            partner_port=0,
            env={**COMMON_ENV, "MERCATO_REDIS_PREFIX": f"mercato-contract:{tag}"},
        )
    )
    try:
        # Generous: starting a dozen Python processes on a busy 2-core runner takes minutes.
        made.start(timeout=420)
        yield Target("cluster", made.base_url, made.logs, cluster=made)
    finally:
        made.stop()
        services.delete_vhost(vhost)
        services.drop_pg_database(database)


@pytest.fixture(scope="session", params=["embedded", "cluster"])
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    """The running installation under test: `mercato run`, then the dev cluster."""
    workdir = tmp_path_factory.mktemp(request.param)
    start = _embedded if request.param == "embedded" else _cluster
    yield from start(workdir)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the suite, so `make test` runs it in a pass of its own (one target at a time)."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.contract)
