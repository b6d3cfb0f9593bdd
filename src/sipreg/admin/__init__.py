"""The admin listener: metrics, health, the JSON API, binding events, the status page."""
