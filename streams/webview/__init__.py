"""The twin's own live web view, served by the stream worker at ``/view/``.

Operators open it wherever the project runs (the demo prints its URL); production also has
the Grafana dashboards of ``dashboards/``. See ``streams/webview/README.md``.
"""

from streams.webview.routes import ViewSource, install

__all__ = ["ViewSource", "install"]
