"""One router per area of the API; ``portal.app.create_app`` mounts them."""
