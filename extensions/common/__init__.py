"""The service kit: what every hubml hub service is made of, so the trust rules live in one place.

- :mod:`.errors`: :class:`APIError`, the one way a service refuses a request (HTTP status, a
  message that says what was wrong and what is allowed, optional extra fields).
- :mod:`.handlers`: :class:`ServiceHandler`, the authenticated JSON handler. It awaits the hub's
  answer about the request's token or OAuth cookie (``HubAuth.get_user(..., sync=False)``, never
  blocking the loop), requires the service's access scope, denies by default, and leaves XSRF to
  JupyterHub's own check (a token in a header, or the ``_xsrf`` token for cookie requests).
- :mod:`.hub`: :class:`HubAPI`, an async client of the hub's REST API with the service's token.
- :mod:`.app`: the service application (route table, OAuth callback, health) and its process
  (port from ``JUPYTERHUB_SERVICE_URL``, bind address, signals).
- :mod:`.profiles`: the catalog rule every service applies to a requested profile.
- :mod:`.urls`: public URLs of the hub, services and users' servers (one origin each).
- :mod:`.netcheck`: which outbound URLs (webhooks) a service may call.

Nothing here imports mlflow, gradio, pandas or papermill.
"""
