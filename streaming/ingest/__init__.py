"""Ingest: what each micro-batch reads, checks and keeps.

- ``validation``: parse and check the Kafka records, set bad ones aside with a reason;
- ``store``: the ratings store (Parquet), rejects and commit records;
- ``history``: every user's ratings in the driver, duplicate checks;
- ``topics``: the job's view of Kafka beyond the stream (end offsets, the catalog).
"""
