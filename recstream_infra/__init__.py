"""Foundations shared by every recstream package: the strict settings base, JVM
artifact resolution, the local services and their testcontainers alternative."""
