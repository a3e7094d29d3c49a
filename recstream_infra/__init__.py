"""The top layer, which may import every other package.

The local services (Kafka, Redis) and their testcontainers alternative, JVM artifact
resolution, the demo, and the configuration-table generator.
"""
