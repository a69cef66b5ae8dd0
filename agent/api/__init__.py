"""The control API agentd serves on its Unix socket (HTTP/1.1 + JSON, agent/openapi.json).

    agent/api/router.py      ApiServer: the routes, the access check, one handler per request
    agent/api/server.py      the socket server: connections, caps, start/stop/reload
    agent/api/http.py        HTTP plumbing: reading under deadlines, JSON answers, streams
    agent/api/access.py      who may do what (peer credentials, the in-container guard)
    agent/api/limits.py      what one client may hold (connection caps, read deadlines)
    agent/api/query.py       query strings, JSON bodies, names in paths
    agent/api/views.py       the JSON shape of containers, stats and agent values
    agent/api/errors.py      error kinds and the one map from kind to HTTP status
    agent/api/backend.py     what the API needs of the daemon's objects (typed Protocols)
    agent/api/resource.py    a resource module's routes, query specs, optional backend
    agent/api/logstream.py   the one loop that sends log files as frames
    agent/api/<resource>.py  the handlers, one module per resource (router.RESOURCES)

Only the daemon (agent/daemon/) imports this package; agentctl talks to it
over the socket (agent/cli/client.py) and never imports it.
"""
