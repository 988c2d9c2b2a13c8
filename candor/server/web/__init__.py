"""The web chat page at /ui: static files shipped in the package, and the browser redirect from /."""

from candor.server.web.redirect import BrowserRedirect, prefers_html
from candor.server.web.routes import router

__all__ = ["BrowserRedirect", "prefers_html", "router"]
