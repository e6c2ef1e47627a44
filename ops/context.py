"""Everything an ops action needs, built once from the settings (CLI) or from the token
server's services (API, page, webhook), so both run the same code on the same objects."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from agents_catalog import Catalog, load_catalog
from agents_catalog.showcase import Showcase
from policies import Policies, load_policies
from policies.admission import Admission
from policies.ops_rules import Costs, OpsPolicy, load_costs, load_ops_policy
from policies.pseudonyms import VisitorHasher
from redisdb.connection import connect
from sales.policy import RequestRules, load_request_rules
from sales.store import RequestStore
from server.settings import Settings


@dataclass
class OpsContext:
    settings: Settings
    redis: Redis
    policies: Policies
    rules: OpsPolicy
    costs: Costs
    catalog: Catalog
    hasher: VisitorHasher
    admission: Admission
    showcase: Showcase
    request_rules: RequestRules
    requests: RequestStore


def build_context(
    settings: Settings,
    *,
    redis: Redis | None = None,
    policies: Policies | None = None,
    catalog: Catalog | None = None,
    hasher: VisitorHasher | None = None,
    admission: Admission | None = None,
    requests: RequestStore | None = None,
) -> OpsContext:
    policies = policies or load_policies(settings.policies_dir)
    rules = load_ops_policy(policies, settings.policies_dir)
    catalog = catalog or load_catalog(settings.catalog_dir)
    # The CLI is not on the hot path: give Redis more time than the token endpoint does.
    redis = redis or connect(settings.redis_url, max(settings.redis_timeout_s, 5.0))
    request_rules = load_request_rules(settings.policies_dir)
    return OpsContext(
        settings=settings,
        redis=redis,
        policies=policies,
        rules=rules,
        costs=load_costs(settings.policies_dir),
        catalog=catalog,
        hasher=hasher or VisitorHasher(redis, settings.visitor_hash_secret, policies.retention),
        admission=admission or Admission(redis, policies),
        showcase=Showcase(
            redis, catalog, ttl_s=rules.showcase_ttl_s, cache_s=rules.showcase.cache_s
        ),
        request_rules=request_rules,
        requests=requests
        or RequestStore(redis, policies.retention, request_rules, settings.visitor_hash_secret),
    )
