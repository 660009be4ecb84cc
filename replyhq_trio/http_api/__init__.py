"""HTTP routes of the product: REST, health."""

from ._health import Health as Health
from ._rest import RestApi as RestApi

__all__ = ["Health", "RestApi"]
