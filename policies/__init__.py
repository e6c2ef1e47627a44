"""The privacy and abuse promises as data (retention.yaml, limits.yaml) and the code that
enforces them: visitor pseudonyms, client address, admission, release."""

from policies.model import Policies, PolicyError, load_policies

__all__ = ["Policies", "PolicyError", "load_policies"]
