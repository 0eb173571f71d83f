"""Notifications: the ``Notifier`` port the bots and the webhook implement."""
