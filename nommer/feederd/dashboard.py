"""The dashboard's static files (``GET /ui/...``): ``nommer/feederd/ui/``.

The page is plain ES modules, a style sheet and the vendored players
(``ui/vendor/``: hls.js, dash.js); nothing is built. It is served as files
from that directory and holds no secret, so it needs no API key: the page
asks for one (kept in the tab's ``sessionStorage``) and sends it with each
API call, which checks it as usual. On loopback with no key created the API
serves anonymous callers, so the page works with no key there.

What :func:`ui_resource` adds to ``twisted.web.static.File``:

- no directory listing: a directory without ``index.html`` (``/ui/vendor/``)
  is a 404, as is any path that does not exist;
- Content-Types from one table (``CONTENT_TYPES``, with ``charset=utf-8`` on
  text), not from the host's ``/etc/mime.types``: an ES module served as
  anything but JavaScript does not run;
- ``Cache-Control``: ``no-cache`` (revalidate each time; ``Last-Modified``
  answers 304) for the page's own files, which are not fingerprinted, and
  ``public, max-age=86400`` for the vendored players, which change only with
  ``make vendor-js``;
- ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``,
  ``X-Frame-Options: DENY`` and a Content-Security-Policy (``CSP``): scripts
  and styles from this origin only, no inline script, no framing (the
  cancel buttons cannot be click-jacked); media, manifests and segments from
  any http(s) origin, because the "media base URL" of the job page (where
  outputs are served from) is the operator's choice.

``GET /ui`` (no slash) redirects to ``/ui/`` (the router's strict slashes).
"""

import os

from twisted.web import resource, static

#: The directory served at /ui/.
UI_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ui")

#: File name extension -> Content-Type. Anything else: application/octet-stream.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
    ".LICENSE": "text/plain; charset=utf-8",
}

#: Cache-Control of the vendored players (under ui/vendor/) and of every other file.
VENDOR_CACHE = b"public, max-age=86400"
PAGE_CACHE = b"no-cache"

#: The page's Content-Security-Policy. hls.js starts its transmuxing worker from a blob: URL
#: and both players feed the <video> through a MediaSource (blob:).
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self' http: https:; media-src 'self' blob: http: https:; worker-src 'self' blob:; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")

HEADERS = {
    b"X-Content-Type-Options": b"nosniff",
    b"Referrer-Policy": b"no-referrer",
    b"X-Frame-Options": b"DENY",
    b"Content-Security-Policy": CSP.encode(),
}


class _NotFound(resource.Resource):
    """A plain 404 (no listing, no path echoed)."""

    isLeaf = True

    def render(self, request):
        request.setResponseCode(404)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"Cache-Control", PAGE_CACHE)
        return b"not found\n"


class UiFiles(static.File):
    """``static.File`` over the dashboard's directory (see the module
    docstring); its children are ``UiFiles`` too (``createSimilarFile``)."""

    contentTypes = {ext.lower(): ctype for ext, ctype in CONTENT_TYPES.items()}
    defaultType = "application/octet-stream"
    childNotFound = _NotFound()
    forbidden = _NotFound()

    def directoryListing(self):
        return _NotFound()

    def render_GET(self, request):
        for name, value in HEADERS.items():
            request.setHeader(name, value)
        vendored = os.sep + "vendor" + os.sep in self.path
        request.setHeader(b"Cache-Control", VENDOR_CACHE if vendored else PAGE_CACHE)
        return super().render_GET(request)

    render_HEAD = render_GET


def ui_resource(directory=UI_DIR):
    """The resource serving ``directory`` (default: the dashboard's) as the
    module docstring says. Raises nothing; a missing directory serves 404s."""
    return UiFiles(directory, defaultType=UiFiles.defaultType)
