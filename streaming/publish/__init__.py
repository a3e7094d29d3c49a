"""Getting lists into Redis.

- ``writes``: the Redis writes of a version (lists, metadata, switch, expiry, catalog);
- ``executors``: a whole version's lists computed and written on the executors;
- ``publisher``: pending work, flushed once per micro-batch with retry and backoff.
"""
