"""The operator console: admin home figures, the dashboard, snapshots, and their helpers.

Views, admin actions and commands stay thin; the figures come from ``cache_app.statistics``
and the durable counters, like the API's.
"""
