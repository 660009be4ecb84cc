"""HTTP routes of the product: REST, health, the dashboard page."""

from ._dashboard import Dashboard as Dashboard
from ._health import Health as Health
from ._rest import RestApi as RestApi

__all__ = ["Dashboard", "Health", "RestApi"]
