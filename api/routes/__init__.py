"""The API's routers, one module per resource (plus the web pages)."""
