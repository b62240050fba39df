"""Template tags of the operator console (the admin index's status block)."""

from __future__ import annotations

from typing import Any

from django import template
from django.urls import reverse

from cache_app.console.charts import dollars
from cache_app.console.home import home_summary

register = template.Library()


@register.inclusion_tag("admin/console/home_summary.html", takes_context=True)
def console_home(context: template.Context) -> dict[str, Any]:
    """The caches' state at a glance, above the admin index's model list."""
    user = context["request"].user
    return {
        "summary": home_summary(),
        "dashboard_url": (
            reverse("admin:cache_app_statssnapshot_dashboard")
            if user.has_perm("cache_app.view_statssnapshot")
            else None
        ),
        "statistics_url": (
            reverse("admin:cache_app_masterplan_statistics_all") if user.has_perm("cache_app.view_masterplan") else None
        ),
    }


@register.filter
def usd(value: float) -> str:
    """Dollars with cents, or four decimals for amounts under a cent (simulated calls cost fractions of one)."""
    return dollars(float(value or 0))
