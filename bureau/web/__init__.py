"""The web console: server-rendered pages (Jinja2), SVG charts, a live feed over Server-Sent Events.

Everything it shows comes from this package: no CDN, no web font, no remote script; it works
on a bureau network with no internet.
"""
