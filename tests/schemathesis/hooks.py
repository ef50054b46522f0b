"""Schemathesis hooks for tests/schemathesis.rs.

A generated `watch=true` turns a list into a stream that lasts until its timeout (30 minutes
by default), which the client would wait out as a read timeout: such requests get
`timeoutSeconds=1`, so the server ends them and the watch path is fuzzed too.
"""
import schemathesis


@schemathesis.hook
def map_query(ctx, query):
    if query is not None and str(query.get("watch", "")).lower() in ("true", "1"):
        query["timeoutSeconds"] = 1
    return query
