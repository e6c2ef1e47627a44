"""`Services`: the one object the token server's endpoints share (Redis, the pseudonym
hasher, admission, give-backs, the sales request store, ops, the mail to sales), and
`build_services`, which loads and checks everything start-up depends on."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from agents_catalog import Catalog, load_catalog
from ops.runtime import OpsRuntime
from policies import Policies, load_policies
from policies.admission import Admission
from policies.give_back import GiveBack
from policies.pseudonyms import VisitorHasher
from redisdb.connection import connect
from redisdb.pipelined import PipelinedRedis
from sales.mail import smtp_config
from sales.notifier import Notifier
from sales.policy import RequestRules, load_request_rules
from sales.store import RequestStore
from server.settings import Settings


@dataclass
class Services:
    settings: Settings
    # The process's one connection pool; every store below was built on it.
    redis: Redis
    policies: Policies
    catalog: Catalog
    hasher: VisitorHasher
    admission: Admission
    request_rules: RequestRules
    requests: RequestStore
    give_back: GiveBack
    pipelined: PipelinedRedis | None = None
    # Ops (ops/): showcase-aware catalogue, metrics, automatic defence; set by create_app.
    ops: OpsRuntime | None = None
    # The mail to sales (sales/notifier.py), when SMTP is configured; set by create_app.
    notifier: Notifier | None = None


def build_services(settings: Settings) -> Services:
    """Load and check everything start-up depends on; raise with a clear message if not."""
    settings.check_server_secrets()
    policies = load_policies(settings.policies_dir)
    request_rules = load_request_rules(settings.policies_dir)
    # Half-configured mail would lose notifications silently: refuse to start instead.
    smtp_config(settings, request_rules.notify.timeout_s)
    catalog = load_catalog(settings.catalog_dir)
    redis = connect(settings.redis_url, settings.redis_timeout_s)
    pipelined = (
        PipelinedRedis(settings.redis_url, settings.redis_timeout_s)
        if PipelinedRedis.supports(settings.redis_url)
        else None
    )
    admission = Admission(redis, policies, pipelined)
    return Services(
        settings=settings,
        redis=redis,
        policies=policies,
        catalog=catalog,
        hasher=VisitorHasher(redis, settings.visitor_hash_secret, policies.retention),
        admission=admission,
        request_rules=request_rules,
        requests=RequestStore(
            redis, policies.retention, request_rules, settings.visitor_hash_secret
        ),
        give_back=GiveBack(redis, admission, settings.visitor_hash_secret),
        pipelined=pipelined,
    )
