"""httpx's top-level calls (``get``, ``post``, ``stream``...) for the tests, through one client.

``httpx.get`` builds a client, and with it an SSL context, on every call: 20 to 50 ms each, which over
the suite's thousands of calls (health polls included) came to minutes. This client is built once. It
keeps no idle connections, so each call opens its own, as ``httpx.get`` does: a daemon killed and
started again on the same port never meets a stale connection.
"""

from __future__ import annotations

import httpx

# A call that names no timeout may wait 60 s, not httpx's 5: a request on a machine busy with other work
# (a build, another test run) can take longer than 5 s without anything being wrong (seen in a full run).
_client = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0), trust_env=False, timeout=60)

get = _client.get
post = _client.post
put = _client.put
delete = _client.delete
patch = _client.patch
head = _client.head
options = _client.options
request = _client.request
stream = _client.stream
